"""The escalation queue: listing, claiming, releasing, resolving."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    DateTime,
    Integer,
    Select,
    String,
    bindparam,
    func,
    select,
    tuple_,
    type_coerce,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import utc_from_iso
from db.enums import SEVERITY_RANK, Disposition, EscalationStatus, Severity
from db.models import Escalation, User


class QueueError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


# The API's escalation fields, in this order, as plain values: enum columns as their
# strings and timestamps without the UTC decorator (``serialize.escalation_rows`` formats
# them), so 200 rows cost no per-value type processing.
QUEUE_ROW_FIELDS = (
    "id",
    "patient_id",
    "checkin_id",
    "severity",
    "reason",
    "summary",
    "status",
    "created_at",
    "sla_due_at",
    "claimed_by",
    "claimed_by_email",
    "claimed_at",
    "resolved_at",
    "resolved_by",
    "disposition",
    "note",
    "page_count",
)


QUEUE_LIMIT = 200
QUEUE_MAX_LIMIT = 500


@dataclass(frozen=True, slots=True)
class QueueCursor:
    """Where a page of the queue ended: its last item's place in the queue order (severity
    rank, created, id), so the next page starts right after it whatever was added since."""

    rank: int
    created_at: datetime
    id: int

    def token(self) -> str:
        return f"{self.rank}~{self.created_at.astimezone(UTC).isoformat()}~{self.id}"

    @classmethod
    def parse(cls, token: str) -> QueueCursor:
        """The cursor of a ``next`` token; ``ValueError`` with the reason if it is not one."""
        parts = token.split("~")
        if len(parts) != 3 or not all(p.isascii() and p for p in parts):
            raise ValueError("not a cursor from this API's next field")
        rank, at, id_ = parts
        if rank not in {"0", "1", "2", "3"} or not id_.isdigit() or len(id_) > 18:
            raise ValueError("not a cursor from this API's next field")
        return cls(int(rank), utc_from_iso(at), int(id_))

    @classmethod
    def after_row(cls, row: Any) -> QueueCursor:
        """The cursor after a row of ``QUEUE_ROW_FIELDS`` (severity as text, naive = UTC)."""
        created: datetime = row.created_at
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        return cls(SEVERITY_RANK[Severity(row.severity)], created, row.id)


@cache
def _queue_rows_statement(
    statuses: tuple[EscalationStatus, ...], by_severity: bool, by_patient: bool, paged: bool
) -> Select[Any]:
    """Built once per filter shape; the values are bound at execution."""
    text_, at = String(), DateTime(timezone=True)
    e = Escalation
    columns: list[Any] = [
        e.id,
        e.patient_id,
        e.checkin_id,
        type_coerce(e.severity, text_).label("severity"),
        e.reason,
        e.summary,
        type_coerce(e.status, text_).label("status"),
        type_coerce(e.created_at, at).label("created_at"),
        type_coerce(e.sla_due_at, at).label("sla_due_at"),
        e.claimed_by,
        User.email.label("claimed_by_email"),
        type_coerce(e.claimed_at, at).label("claimed_at"),
        type_coerce(e.resolved_at, at).label("resolved_at"),
        e.resolved_by,
        type_coerce(e.disposition, text_).label("disposition"),
        e.note,
        e.page_count,
    ]
    query: Select[Any] = (
        select(*columns)
        .outerjoin(User, User.id == e.claimed_by)
        # the statuses written into the SQL, not bound: the planner then sees that the default
        # (open, claimed) is the predicate of ``ix_escalations_open_queue`` and reads the queue
        # in its order from that small index, with no sort (also for a generic plan)
        .where(
            e.status.in_(
                bindparam("statuses", list(statuses), expanding=True, literal_execute=True)
            )
        )
        .order_by(e.severity_rank, e.created_at, e.id)
        .limit(bindparam("limit", type_=Integer()))
    )
    if by_severity:
        query = query.where(e.severity == bindparam("severity"))
    if by_patient:
        query = query.where(e.patient_id == bindparam("patient_id"))
    if paged:
        query = query.where(
            tuple_(e.severity_rank, e.created_at, e.id)
            > tuple_(
                bindparam("after_rank", type_=Integer()),
                bindparam("after_at", type_=e.created_at.type),
                bindparam("after_id", type_=Integer()),
            )
        )
    return query


def queue_rows_query(
    *,
    statuses: Sequence[EscalationStatus] = (EscalationStatus.OPEN, EscalationStatus.CLAIMED),
    severity: Severity | None = None,
    patient_id: int | None = None,
    limit: int = QUEUE_LIMIT,
    after: QueueCursor | None = None,
) -> tuple[Select[Any], dict[str, object]]:
    """``queue_query`` as plain rows (``QUEUE_ROW_FIELDS``), with the claimer's email joined
    in: the statement (cached per filter shape) and its parameters; ``after`` starts after a
    previous page's last item."""
    key = tuple(dict.fromkeys(statuses))  # order kept, duplicates dropped
    query = _queue_rows_statement(
        key, severity is not None, patient_id is not None, after is not None
    )
    params: dict[str, object] = {"limit": limit}
    if severity is not None:
        params["severity"] = severity
    if patient_id is not None:
        params["patient_id"] = patient_id
    if after is not None:
        params.update(after_rank=after.rank, after_at=after.created_at, after_id=after.id)
    return query, params


def queue_query(
    *,
    statuses: Sequence[EscalationStatus] = (EscalationStatus.OPEN, EscalationStatus.CLAIMED),
    severity: Severity | None = None,
    patient_id: int | None = None,
    patient_ids: Sequence[int] | None = None,
    claimed_by: int | None = None,
    limit: int = 200,
) -> Select[Escalation]:
    """Most severe first, then oldest first: the nurse at 7 a.m. sees the worst one on top.
    Resolved items alone come newest resolution first (what was just done)."""
    query = select(Escalation).where(Escalation.status.in_(list(statuses))).limit(limit)
    if list(statuses) == [EscalationStatus.RESOLVED]:
        query = query.order_by(Escalation.resolved_at.desc(), Escalation.id.desc())
    else:
        query = query.order_by(Escalation.severity_rank, Escalation.created_at, Escalation.id)
    if severity is not None:
        query = query.where(Escalation.severity == severity)
    if patient_id is not None:
        query = query.where(Escalation.patient_id == patient_id)
    if patient_ids is not None:
        query = query.where(Escalation.patient_id.in_(list(patient_ids)))
    if claimed_by is not None:
        query = query.where(Escalation.claimed_by == claimed_by)
    return query


async def open_counts(session: AsyncSession, user_id: int) -> tuple[dict[str, int], int]:
    """Open and claimed items per severity, and how many the user holds."""
    rows = (
        await session.execute(
            select(Escalation.severity, func.count())
            .where(Escalation.status.in_((EscalationStatus.OPEN, EscalationStatus.CLAIMED)))
            .group_by(Escalation.severity)
        )
    ).all()
    mine = await session.scalar(
        select(func.count())
        .select_from(Escalation)
        .where(Escalation.status == EscalationStatus.CLAIMED, Escalation.claimed_by == user_id)
    )
    return {str(severity): count for severity, count in rows}, int(mine or 0)


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


async def assign(
    *,
    session: AsyncSession,
    escalation_id: int,
    to_user_id: int,
    by_user_id: int,
    is_admin: bool,
    now: datetime,
    take_over: bool = False,
) -> Escalation:
    """Hand an escalation to another clinician (a shift change, a specialist).

    The clinician holding the claim or an admin may hand it on (an open item is claimed
    first, so nobody's alert stops paging behind their back); anyone may take it over
    (``take_over``: ``to_user_id`` is the caller), which the audit trail records as such.
    The item stays claimed, so a hold stays lifted."""
    current = await session.get(Escalation, escalation_id, with_for_update=True)
    if current is None:
        raise QueueError(404, "not_found", "escalation not found")
    if current.status is EscalationStatus.RESOLVED:
        raise QueueError(409, "resolved", "this escalation is already resolved")
    holder = current.status is EscalationStatus.CLAIMED and current.claimed_by == by_user_id
    if not (holder or is_admin or take_over):
        raise QueueError(
            403,
            "forbidden",
            "only the clinician holding it (or an admin) can hand it on; claim it first",
        )
    target = await session.get(User, to_user_id)
    if target is None or not target.active:
        raise QueueError(
            422,
            "invalid",
            "user_id: no active clinician with this id",
            [{"field": "user_id", "message": "no active clinician with this id"}],
        )
    current.status = EscalationStatus.CLAIMED
    current.claimed_by = to_user_id
    current.claimed_at = now
    return current
