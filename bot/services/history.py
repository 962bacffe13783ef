"""Read models for the clinician pages: an escalation with its context, score trends, search.

A patient's conversations are ``bot.services.conversation_view``'s."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    bindparam,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from db.models import (
    Answer,
    Checkin,
    Escalation,
    Message,
    Patient,
    Score,
    User,
    of_sender,
)

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


async def search_patients(*, session: AsyncSession, q: str, limit: int = 200) -> list[Patient]:
    query = select(Patient).order_by(Patient.first_name, Patient.id).limit(limit)
    q = q.strip()[:80]
    if q:
        like = f"%{q}%"
        query = query.where(
            or_(Patient.first_name.ilike(like), Patient.phone.like(like), Patient.external_ref == q)
        )
    return list((await session.scalars(query)).all())
