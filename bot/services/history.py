"""Read models for the clinician pages: a check-in's transcript, a patient's timeline and trends."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Integer,
    Select,
    String,
    bindparam,
    func,
    literal,
    or_,
    select,
    type_coerce,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from db.models import Answer, Checkin, Escalation, Message, Patient, Score, Treatment, User
from db.types import UTCDateTime

TIMELINE_LIMIT = 300
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
                    .where(Message.phone == trigger.phone, Message.created_at <= trigger.created_at)
                    .order_by(Message.created_at.desc(), Message.id.desc())
                    .limit(10)
                )
            ).all()
        )[::-1]
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


def _timeline_query(patient_id: Any, limit: int) -> Select[Any]:
    """One statement: the newest ``limit`` of each kind, then the newest ``limit`` of all.

    Only the columns the page shows, as plain values (no ORM objects): the four kinds share
    columns, so enum and status columns are read as plain strings.
    """
    text_ = String()
    at = UTCDateTime()
    branches = [
        select(
            literal("checkin", text_).label("kind"),
            type_coerce(
                func.coalesce(Checkin.completed_at, Checkin.started_at, Checkin.due_at), at
            ).label("at"),
            Checkin.id.label("id"),
            type_coerce(Checkin.flow_key, text_).label("a"),
            type_coerce(Checkin.status, text_).label("b"),
            type_coerce(Checkin.outcome, text_).label("c"),
            literal(None, text_).label("d"),
        )
        .where(Checkin.patient_id == patient_id)
        .order_by(Checkin.due_at.desc())
        .limit(limit),
        select(
            literal("message", text_),
            type_coerce(Message.created_at, at),
            Message.id,
            type_coerce(Message.direction, text_),
            type_coerce(Message.body, text_),
            type_coerce(Message.status, text_),
            literal(None, text_),
        )
        .where(Message.patient_id == patient_id)
        .order_by(Message.created_at.desc())
        .limit(limit),
        select(
            literal("escalation", text_),
            type_coerce(Escalation.created_at, at),
            Escalation.id,
            type_coerce(Escalation.severity, text_),
            type_coerce(Escalation.summary, text_),
            type_coerce(Escalation.status, text_),
            type_coerce(Escalation.reason, text_),
        )
        .where(Escalation.patient_id == patient_id)
        .order_by(Escalation.created_at.desc())
        .limit(limit),
        select(
            literal("treatment", text_),
            type_coerce(Treatment.administered_at, at),
            Treatment.id,
            type_coerce(Treatment.kind, text_),
            literal(None, text_),
            literal(None, text_),
            literal(None, text_),
        )
        .where(Treatment.patient_id == patient_id)
        .order_by(Treatment.administered_at.desc())
        .limit(limit),
    ]
    # each branch as a subquery: SQLite allows no ORDER BY/LIMIT on a compound's members
    parts = [select(b.subquery().c) for b in branches]  # type: ignore[call-overload]
    everything = union_all(*parts).subquery()
    return select(everything).order_by(everything.c.at.desc()).limit(limit)


# built once: the statement is the same for every patient (only the bound id changes)
_TIMELINE = _timeline_query(bindparam("patient_id", type_=Integer()), TIMELINE_LIMIT)


async def timeline_rows(*, session: Reader, patient_id: int) -> Sequence[Any]:
    """The timeline as plain rows ``(kind, at, id, a, b, c, d)`` (see ``_timeline_query``),
    for a page that formats them itself (the patient page renders 300 of them)."""
    rows: Sequence[Any] = (await session.execute(_TIMELINE, {"patient_id": patient_id})).all()
    return rows


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
