"""Read models for the clinician pages: a check-in's transcript, a patient's timeline and trends."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    String,
    bindparam,
    func,
    literal,
    or_,
    select,
    tuple_,
    type_coerce,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from bot.clock import utc_from_iso
from db.models import (
    Answer,
    Checkin,
    Escalation,
    Message,
    Patient,
    Score,
    Treatment,
    User,
    of_sender,
)
from db.types import UTCDateTime

# items per page of a patient's timeline; older pages follow a ``TimelineCursor``
TIMELINE_LIMIT = 100
TIMELINE_KINDS = frozenset({"checkin", "message", "escalation", "treatment"})
TREND_LIMIT = 104

Reader = AsyncSession | AsyncConnection


@dataclass(slots=True)
class EscalationView:
    escalation: Escalation
    patient: Patient | None
    checkin: Checkin | None
    messages: list[Message]
    answers: list[Answer]
    scores: list[Score]
    trends: dict[str, list[tuple[datetime, float]]]
    claimed_by: User | None
    resolved_by: User | None
    trigger: Message | None
    # the on-call pages sent for it, with whom each went to, oldest first
    pages: list[tuple[Message, User | None]]


_TRENDS = (
    select(Score.instrument, Score.created_at, Score.total)
    .where(Score.patient_id == bindparam("patient_id"), Score.instrument.in_(("phq9", "gad7")))
    .order_by(Score.created_at.desc())
    .limit(TREND_LIMIT * 2)
)


async def trends(*, session: Reader, patient_id: int) -> dict[str, list[tuple[datetime, float]]]:
    rows = (await session.execute(_TRENDS, {"patient_id": patient_id})).all()
    out: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
    for name, at, total in reversed(rows):
        out[name].append((at, total))
    return dict(out)


async def escalation_view(*, session: AsyncSession, escalation_id: int) -> EscalationView | None:
    escalation = await session.get(Escalation, escalation_id)
    if escalation is None:
        return None
    patient = await session.get(Patient, escalation.patient_id) if escalation.patient_id else None
    checkin = await session.get(Checkin, escalation.checkin_id) if escalation.checkin_id else None
    trigger = await session.get(Message, escalation.message_id) if escalation.message_id else None
    messages: list[Message] = []
    answers: list[Answer] = []
    scores: list[Score] = []
    if checkin is not None:
        messages = list(
            (
                await session.scalars(
                    select(Message)
                    .where(Message.checkin_id == checkin.id)
                    .order_by(Message.created_at, Message.id)
                )
            ).all()
        )
        answers = list(
            (
                await session.scalars(
                    select(Answer).where(Answer.checkin_id == checkin.id).order_by(Answer.id)
                )
            ).all()
        )
        scores = list(
            (await session.scalars(select(Score).where(Score.checkin_id == checkin.id))).all()
        )
    elif trigger is not None:
        # outside a check-in: the texts around the one that raised it
        messages = list(
            (
                await session.scalars(
                    select(Message)
                    .where(
                        of_sender(trigger.patient_id, trigger.phone),
                        Message.created_at <= trigger.created_at,
                    )
                    .order_by(Message.created_at.desc(), Message.id.desc())
                    .limit(10)
                )
            ).all()
        )[::-1]
    pages: list[tuple[Message, User | None]] = [
        (m, u)
        for m, u in (
            await session.execute(
                select(Message, User)
                .outerjoin(User, User.id == Message.user_id)
                .where(Message.escalation_id == escalation.id)
                .order_by(Message.created_at, Message.id)
            )
        ).all()
    ]
    claimed_by = await session.get(User, escalation.claimed_by) if escalation.claimed_by else None
    resolved_by = (
        await session.get(User, escalation.resolved_by) if escalation.resolved_by else None
    )
    return EscalationView(
        escalation=escalation,
        patient=patient,
        checkin=checkin,
        messages=messages,
        answers=answers,
        scores=scores,
        trends=await trends(session=session, patient_id=patient.id) if patient else {},
        claimed_by=claimed_by,
        resolved_by=resolved_by,
        trigger=trigger,
        pages=pages,
    )


@dataclass(slots=True)
class TimelineItem:
    at: datetime
    kind: str
    title: str
    detail: str = ""
    link: str = ""
    css: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TimelineCursor:
    """Where a page of the timeline ended: its last item's time, kind and id. The timeline is
    ordered by all three (newest first), so items sharing a timestamp (a reply and the next
    question written in one transaction) are neither repeated nor skipped between pages."""

    at: datetime
    kind: str
    id: int

    def params(self) -> dict[str, object]:
        return {"before_at": self.at, "before_kind": self.kind, "before_id": self.id}

    def token(self) -> str:
        """For a link: ``2026-11-28T07:00:00.000001+00:00~message~42``."""
        return f"{self.at.astimezone(UTC).isoformat()}~{self.kind}~{self.id}"

    @classmethod
    def parse(cls, token: str) -> TimelineCursor:
        """The cursor of ``token``; ``ValueError`` with the reason if it is not one."""
        parts = token.split("~")
        if len(parts) != 3:
            raise ValueError("expected time~kind~id")
        at_text, kind, id_text = parts
        if kind not in TIMELINE_KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        if not (id_text.isascii() and id_text.isdigit()) or len(id_text) > 18:
            raise ValueError("the id must be a whole number")
        return cls(utc_from_iso(at_text), kind, int(id_text))


def _timeline_query(patient_id: Any, limit: int, *, older: bool) -> Select[Any]:
    """One statement: the newest ``limit`` of each kind, then the newest ``limit`` of all
    (older than the cursor's item when ``older``).

    Only the columns the page shows, as plain values (no ORM objects): the four kinds share
    columns, so enum and status columns are read as plain strings.
    """
    text_ = String()
    at = UTCDateTime()

    def branch(kind: str, model: Any, at_col: Any, order_col: Any, *columns: Any) -> Select[Any]:
        id_col = model.id
        at_expr = type_coerce(at_col, at)
        query = select(
            literal(kind, text_).label("kind"),
            at_expr.label("at"),
            id_col.label("id"),
            *(
                (literal(None, text_) if c is None else type_coerce(c, text_)).label(name)
                for name, c in zip("abcd", columns, strict=True)
            ),
        ).where(model.patient_id == patient_id)
        if older:
            before_at = bindparam("before_at", type_=at)
            conditions: list[ColumnElement[bool]] = [
                tuple_(at_col, literal(kind, text_), id_col)
                < tuple_(before_at, bindparam("before_kind", type_=text_), bindparam("before_id"))
            ]
            if order_col is at_col:  # a range on the index, not only a filter
                conditions.append(at_col <= before_at)
            query = query.where(*conditions)
        return query.order_by(order_col.desc(), id_col.desc()).limit(limit)

    branches = [
        branch(
            "checkin",
            Checkin,
            func.coalesce(Checkin.completed_at, Checkin.started_at, Checkin.due_at),
            Checkin.due_at,
            Checkin.flow_key,
            Checkin.status,
            Checkin.outcome,
            None,
        ),
        branch(
            "message",
            Message,
            Message.created_at,
            Message.created_at,
            Message.direction,
            Message.body,
            Message.status,
            None,
        ),
        branch(
            "escalation",
            Escalation,
            Escalation.created_at,
            Escalation.created_at,
            Escalation.severity,
            Escalation.summary,
            Escalation.status,
            Escalation.reason,
        ),
        branch(
            "treatment",
            Treatment,
            Treatment.administered_at,
            Treatment.administered_at,
            Treatment.kind,
            None,
            None,
            None,
        ),
    ]
    # each branch as a subquery: SQLite allows no ORDER BY/LIMIT on a compound's members
    parts = [select(b.subquery().c) for b in branches]  # type: ignore[call-overload]
    everything = union_all(*parts).subquery()
    c = everything.c
    return select(everything).order_by(c.at.desc(), c.kind.desc(), c.id.desc()).limit(limit)


# built once: the statements are the same for every patient (only the bound values change);
# one more row than a page, to know whether an older page exists
_PATIENT_ID = bindparam("patient_id", type_=Integer())
_TIMELINE = _timeline_query(_PATIENT_ID, TIMELINE_LIMIT + 1, older=False)
_TIMELINE_OLDER = _timeline_query(_PATIENT_ID, TIMELINE_LIMIT + 1, older=True)


@dataclass(frozen=True, slots=True)
class TimelinePage:
    rows: Sequence[Any]
    older: TimelineCursor | None  # where the next (older) page starts, if there is one


async def timeline_page(
    *, session: Reader, patient_id: int, before: TimelineCursor | None = None
) -> TimelinePage:
    """A page of the timeline as plain rows ``(kind, at, id, a, b, c, d)`` (see
    ``_timeline_query``), newest first, for a page that formats them itself."""
    params: dict[str, object] = {"patient_id": patient_id}
    if before is not None:
        params.update(before.params())
    query = _TIMELINE if before is None else _TIMELINE_OLDER
    rows: Sequence[Any] = (await session.execute(query, params)).all()
    if len(rows) <= TIMELINE_LIMIT:
        return TimelinePage(rows, None)
    last = rows[TIMELINE_LIMIT - 1]
    return TimelinePage(rows[:TIMELINE_LIMIT], TimelineCursor(last.at, last.kind, last.id))


async def timeline_rows(*, session: Reader, patient_id: int) -> Sequence[Any]:
    """The newest page of the timeline as plain rows."""
    return (await timeline_page(session=session, patient_id=patient_id)).rows


async def timeline(*, session: Reader, patient_id: int) -> list[TimelineItem]:
    """Check-ins, messages, escalations and treatments, newest first, bounded."""
    items: list[TimelineItem] = []
    rows = await timeline_rows(session=session, patient_id=patient_id)
    for kind, at, id_, a, b, c, d in rows:
        if kind == "checkin":
            items.append(
                TimelineItem(
                    at, "checkin", f"Check-in {a}", b + (f" ({c})" if c else ""), css=f"status-{b}"
                )
            )
        elif kind == "message":
            items.append(
                TimelineItem(
                    at,
                    f"message-{a}",
                    "Patient" if a == "in" else "Sent",
                    b,
                    css=f"msg-{a}",
                    extra={"status": c},
                )
            )
        elif kind == "escalation":
            items.append(
                TimelineItem(
                    at,
                    "escalation",
                    f"{a.capitalize()} escalation",
                    b,
                    link=f"/escalations/{id_}",
                    css=f"sev-{a}",
                    extra={"status": c, "reason": d},
                )
            )
        else:
            items.append(TimelineItem(at, "treatment", f"Treatment: {a}", css="treatment"))
    return items


async def search_patients(*, session: AsyncSession, q: str, limit: int = 200) -> list[Patient]:
    query = select(Patient).order_by(Patient.first_name, Patient.id).limit(limit)
    q = q.strip()[:80]
    if q:
        like = f"%{q}%"
        query = query.where(
            or_(Patient.first_name.ilike(like), Patient.phone.like(like), Patient.external_ref == q)
        )
    return list((await session.scalars(query)).all())
