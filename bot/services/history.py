"""Read models for the clinician pages: a check-in's transcript, a patient's timeline and trends."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Answer, Checkin, Escalation, Message, Patient, Score, Treatment, User

TIMELINE_LIMIT = 300
TREND_LIMIT = 104


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


async def trends(
    *, session: AsyncSession, patient_id: int
) -> dict[str, list[tuple[datetime, float]]]:
    rows = (
        await session.execute(
            select(Score.instrument, Score.created_at, Score.total)
            .where(Score.patient_id == patient_id, Score.instrument.in_(("phq9", "gad7")))
            .order_by(Score.created_at.desc())
            .limit(TREND_LIMIT * 2)
        )
    ).all()
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


async def timeline(*, session: AsyncSession, patient_id: int) -> list[TimelineItem]:
    """Check-ins, messages, escalations and treatments, newest first, bounded."""
    items: list[TimelineItem] = []
    for c in (
        await session.scalars(
            select(Checkin)
            .where(Checkin.patient_id == patient_id)
            .order_by(Checkin.due_at.desc())
            .limit(TIMELINE_LIMIT)
        )
    ).all():
        at = c.completed_at or c.started_at or c.due_at
        items.append(
            TimelineItem(
                at,
                "checkin",
                f"Check-in {c.flow_key}",
                f"{c.status}" + (f" ({c.outcome})" if c.outcome else ""),
                css=f"status-{c.status}",
            )
        )
    for m in (
        await session.scalars(
            select(Message)
            .where(Message.patient_id == patient_id)
            .order_by(Message.created_at.desc())
            .limit(TIMELINE_LIMIT)
        )
    ).all():
        who = "Patient" if m.direction == "in" else "Sent"
        items.append(
            TimelineItem(
                m.created_at,
                f"message-{m.direction}",
                who,
                m.body,
                css=f"msg-{m.direction}",
                extra={"status": str(m.status)},
            )
        )
    for e in (
        await session.scalars(
            select(Escalation)
            .where(Escalation.patient_id == patient_id)
            .order_by(Escalation.created_at.desc())
            .limit(TIMELINE_LIMIT)
        )
    ).all():
        items.append(
            TimelineItem(
                e.created_at,
                "escalation",
                f"{str(e.severity).capitalize()} escalation",
                e.summary,
                link=f"/escalations/{e.id}",
                css=f"sev-{e.severity}",
                extra={"status": str(e.status), "reason": e.reason},
            )
        )
    for t in (
        await session.scalars(
            select(Treatment)
            .where(Treatment.patient_id == patient_id)
            .order_by(Treatment.administered_at.desc())
            .limit(TIMELINE_LIMIT)
        )
    ).all():
        items.append(
            TimelineItem(t.administered_at, "treatment", f"Treatment: {t.kind}", css="treatment")
        )
    items.sort(key=lambda i: i.at, reverse=True)
    return items[:TIMELINE_LIMIT]


async def search_patients(*, session: AsyncSession, q: str, limit: int = 200) -> list[Patient]:
    query = select(Patient).order_by(Patient.first_name, Patient.id).limit(limit)
    q = q.strip()[:80]
    if q:
        like = f"%{q}%"
        query = query.where(
            or_(Patient.first_name.ilike(like), Patient.phone.like(like), Patient.external_ref == q)
        )
    return list((await session.scalars(query)).all())
