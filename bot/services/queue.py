"""The escalation queue: listing, claiming, releasing, resolving."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.enums import Disposition, EscalationStatus, Severity
from db.models import Escalation, User


class QueueError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def queue_rows_query(
    *,
    statuses: Sequence[EscalationStatus] = (EscalationStatus.OPEN, EscalationStatus.CLAIMED),
    severity: Severity | None = None,
    patient_id: int | None = None,
    limit: int = 200,
) -> Select[Any]:
    """``queue_query`` as plain rows (no ORM objects), with the claimer's email joined in."""
    query = (
        select(*Escalation.__table__.c, User.email.label("claimed_by_email"))
        .outerjoin(User, User.id == Escalation.claimed_by)
        .where(Escalation.status.in_(list(statuses)))
        .order_by(Escalation.severity_rank, Escalation.created_at, Escalation.id)
        .limit(limit)
    )
    if severity is not None:
        query = query.where(Escalation.severity == severity)
    if patient_id is not None:
        query = query.where(Escalation.patient_id == patient_id)
    return query


def queue_query(
    *,
    statuses: Sequence[EscalationStatus] = (EscalationStatus.OPEN, EscalationStatus.CLAIMED),
    severity: Severity | None = None,
    patient_id: int | None = None,
    limit: int = 200,
) -> Select[Escalation]:
    """Most severe first, then oldest first: the nurse at 7 a.m. sees the worst one on top."""
    query = (
        select(Escalation)
        .where(Escalation.status.in_(list(statuses)))
        .order_by(Escalation.severity_rank, Escalation.created_at, Escalation.id)
        .limit(limit)
    )
    if severity is not None:
        query = query.where(Escalation.severity == severity)
    if patient_id is not None:
        query = query.where(Escalation.patient_id == patient_id)
    return query


async def claim(
    *, session: AsyncSession, escalation_id: int, user_id: int, now: datetime
) -> Escalation:
    """One statement decides who wins a race: the row must still be open."""
    result = await session.execute(
        update(Escalation)
        .where(Escalation.id == escalation_id, Escalation.status == EscalationStatus.OPEN)
        .values(status=EscalationStatus.CLAIMED, claimed_by=user_id, claimed_at=now)
        .returning(Escalation.id)
    )
    if result.first() is None:
        current = await session.get(Escalation, escalation_id)
        if current is None:
            raise QueueError(404, "not_found", "escalation not found")
        if current.status is EscalationStatus.CLAIMED and current.claimed_by == user_id:
            return current
        if current.status is EscalationStatus.CLAIMED:
            raise QueueError(
                409, "already_claimed", "another clinician has claimed this escalation"
            )
        raise QueueError(409, "resolved", "this escalation is already resolved")
    found = await session.get(Escalation, escalation_id, populate_existing=True)
    assert found is not None
    return found


async def release(
    *, session: AsyncSession, escalation_id: int, user_id: int, is_admin: bool
) -> Escalation:
    current = await session.get(Escalation, escalation_id, with_for_update=True)
    if current is None:
        raise QueueError(404, "not_found", "escalation not found")
    if current.status is not EscalationStatus.CLAIMED:
        raise QueueError(409, "not_claimed", "this escalation is not claimed")
    if current.claimed_by != user_id and not is_admin:
        raise QueueError(
            403, "forbidden", "only the clinician who claimed it (or an admin) can release it"
        )
    current.status = EscalationStatus.OPEN
    current.claimed_by = None
    current.claimed_at = None
    return current


async def resolve(
    *,
    session: AsyncSession,
    escalation_id: int,
    user_id: int,
    is_admin: bool,
    disposition: Disposition,
    note: str,
    now: datetime,
) -> Escalation:
    current = await session.get(Escalation, escalation_id, with_for_update=True)
    if current is None:
        raise QueueError(404, "not_found", "escalation not found")
    if current.status is EscalationStatus.RESOLVED:
        raise QueueError(409, "resolved", "this escalation is already resolved")
    if (
        current.status is EscalationStatus.CLAIMED
        and current.claimed_by != user_id
        and not is_admin
    ):
        raise QueueError(409, "already_claimed", "another clinician has claimed this escalation")
    if current.claimed_by is None:
        current.claimed_by = user_id
        current.claimed_at = now
    current.status = EscalationStatus.RESOLVED
    current.resolved_by = user_id
    current.resolved_at = now
    current.disposition = disposition
    current.note = note
    return current
