"""Raising escalations: the one place that decides SLA due times."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.enums import SEVERITY_RANK, EscalationStatus, Severity
from db.models import Escalation

# How long an escalation may wait unclaimed before it is paged again (issue: on-call SLA).
SLA = {
    Severity.CRITICAL: timedelta(minutes=15),
    Severity.HIGH: timedelta(hours=4),
    Severity.MODERATE: timedelta(hours=24),
    Severity.LOW: timedelta(hours=72),
}


# Severities that page the on-call the moment they are raised.
PAGE_AT_ONCE = frozenset({Severity.CRITICAL})


def escalation_row(
    *,
    severity: Severity,
    reason: str,
    summary: str,
    now: datetime,
    patient_id: int | None,
    checkin_id: int | None = None,
    message_id: int | None = None,
) -> dict[str, Any]:
    """The column values of a new escalation (bulk inserts use these directly)."""
    return {
        "patient_id": patient_id,
        "checkin_id": checkin_id,
        "message_id": message_id,
        "severity": severity,
        "severity_rank": SEVERITY_RANK[severity],
        "reason": reason,
        "summary": summary[:2000],
        "status": EscalationStatus.OPEN,
        "sla_due_at": now + SLA[severity],
        "page_count": 0,
        "created_at": now,
    }


def raise_escalations(session: AsyncSession, rows: list[dict[str, Any]]) -> list[Escalation]:
    """The one writer of escalations: rows from ``escalation_row``, added to the caller's
    transaction."""
    escalations = [Escalation(**row) for row in rows]
    session.add_all(escalations)
    return escalations


def raise_escalation(
    *,
    session: AsyncSession,
    severity: Severity,
    reason: str,
    summary: str,
    now: datetime,
    patient_id: int | None,
    checkin_id: int | None = None,
    message_id: int | None = None,
) -> Escalation:
    row = escalation_row(
        severity=severity,
        reason=reason,
        summary=summary,
        now=now,
        patient_id=patient_id,
        checkin_id=checkin_id,
        message_id=message_id,
    )
    return raise_escalations(session, [row])[0]


def pages_at_once(severity: Severity) -> bool:
    """Whether a new escalation pages the on-call as soon as it is committed; the others are
    paged when their SLA passes unclaimed (``bot.services.paging``)."""
    return severity in PAGE_AT_ONCE


async def open_escalation_exists(*, session: AsyncSession, patient_id: int, reason: str) -> bool:
    """Used to keep one open low-priority item per patient and reason, not one per text."""
    found = await session.scalar(
        select(Escalation.id)
        .where(
            Escalation.patient_id == patient_id,
            Escalation.reason == reason,
            Escalation.status != EscalationStatus.RESOLVED,
        )
        .limit(1)
    )
    return found is not None
