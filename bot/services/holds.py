"""The risk hold: after a high or critical result, routine check-ins wait for a clinician.

A patient is on hold while one of their high or critical escalations is open, that is,
raised and not yet claimed or resolved. The hold is read from the escalations themselves,
never stored apart, so it cannot outlive or miss the item that caused it: claiming the item
(or resolving it, which claims it) lifts the hold; releasing a claim puts it back.

Every check-in waits except a hand-over (PHQ-9 item 9 to the C-SSRS), which is the safety
follow-up of the result itself; crisis replies and a clinician's own texts are not
check-ins and always go out. A clinician who wants a check-in sent to a held patient claims
the item first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from db.enums import SEVERITY_RANK, EscalationStatus, Severity
from db.models import Checkin, Escalation

_HOLD_RANK = SEVERITY_RANK[Severity.HIGH]


def holding(patient_id: Any) -> ColumnElement[bool]:
    """The condition on escalations that holds ``patient_id`` (a column or a value)."""
    return and_(
        Escalation.patient_id == patient_id,
        Escalation.status == EscalationStatus.OPEN,
        Escalation.severity_rank <= _HOLD_RANK,
    )


def routine(checkin: Checkin) -> bool:
    """Whether the hold applies to this check-in: all but hand-overs."""
    return checkin.previous_id is None


@dataclass(frozen=True, slots=True)
class Hold:
    """Why a patient is on hold: the oldest open item that holds them."""

    escalation_id: int
    severity: Severity
    since: datetime


async def holds(
    session: AsyncSession | AsyncConnection, patient_ids: Iterable[int]
) -> dict[int, Hold]:
    """The holds on these patients, by patient id (patients not on hold are absent)."""
    ids = sorted(set(patient_ids))
    if not ids:
        return {}
    rows = (
        await session.execute(
            select(
                Escalation.patient_id,
                Escalation.id,
                Escalation.severity,
                Escalation.created_at,
            )
            .where(holding(Escalation.patient_id), Escalation.patient_id.in_(ids))
            .order_by(Escalation.severity_rank, Escalation.created_at, Escalation.id)
        )
    ).all()
    out: dict[int, Hold] = {}
    for patient_id, escalation_id, severity, created_at in rows:
        if patient_id is not None and patient_id not in out:
            out[patient_id] = Hold(escalation_id, Severity(severity), created_at)
    return out


async def hold_of(session: AsyncSession | AsyncConnection, patient_id: int) -> Hold | None:
    return (await holds(session, [patient_id])).get(patient_id)
