"""Read models for the clinician pages: an escalation with its context, score trends, search.

A patient's conversations are ``bot.services.conversation_view``'s."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from bot.services import flow_store
from db.enums import Direction, EscalationStatus
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
from flows import describe
from flows.reasons import Reason

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
    # the patient's own words that raised it and the question they answered, if any
    words: Message | None = None
    words_question: str = ""
    words_reading: str = ""  # what the words were read as, when they answered a question
    # each answer with its question's text and what it was read as
    readings: list[tuple[Answer, str, str]] = field(default_factory=list)
    # the patient's other escalations not yet resolved, most severe first
    others: list[Escalation] = field(default_factory=list)
    # for "not responding": what was sent since the patient last wrote, oldest first
    unanswered_sends: list[Message] = field(default_factory=list)


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
    words, question, reading, readings = await _words_and_readings(
        session, escalation, checkin, messages, answers
    )
    others: list[Escalation] = []
    sends: list[Message] = []
    if patient is not None:
        others = list(
            (
                await session.scalars(
                    select(Escalation)
                    .where(
                        Escalation.patient_id == patient.id,
                        Escalation.id != escalation.id,
                        Escalation.status != EscalationStatus.RESOLVED,
                    )
                    .order_by(Escalation.severity_rank, Escalation.created_at)
                    .limit(20)
                )
            ).all()
        )
        if escalation.reason == Reason.NOT_RESPONDING:
            sends = await _sent_since_last_reply(session, patient.id, escalation.created_at)
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
        words=words,
        words_question=question,
        words_reading=reading,
        readings=readings,
        others=others,
        unanswered_sends=sends,
    )


# alerts about a total, not about any one reply
FROM_A_TOTAL = frozenset(
    {
        Reason.PHQ9_SEVERE,
        Reason.PHQ9_MODERATELY_SEVERE,
        Reason.POSSIBLE_RELAPSE,
        Reason.SUSTAINED_WORSENING,
        Reason.GAD7_SEVERE,
        Reason.GAD7_MODERATE,
        Reason.ASRM_POSITIVE,
        Reason.ALCOHOL_RISK,
    }
)


async def _words_and_readings(
    session: AsyncSession,
    escalation: Escalation,
    checkin: Checkin | None,
    messages: list[Message],
    answers: list[Answer],
) -> tuple[Message | None, str, str, list[tuple[Answer, str, str]]]:
    """The patient's words that raised the escalation, with the question they answered; and
    every answer with its question and reading.

    The words are the text that raised the escalation: crisis or concerning language, a
    free text, a safety answer, a note. An alert raised by a total (a severe PHQ-9, a
    relapse) has no words of its own, since the last reply only completed the score: the
    answers table tells it."""
    words = None
    if escalation.message_id is not None:
        words = next((m for m in messages if m.id == escalation.message_id), None)
        if words is None:
            words = await session.get(Message, escalation.message_id)
    flow = await flow_store.of_checkin(session=session, checkin=checkin) if checkin else None
    known = describe.questions(flow) if flow is not None else {}
    readings = []
    question = reading = ""
    for a in answers:
        q = known.get(a.question_key)
        text = q.text if q else a.question_key
        readings.append((a, text, describe.reading(q.spec if q else None, a.value)))
        if words is not None and a.message_id == words.id:
            if escalation.reason in FROM_A_TOTAL:
                words = None  # the reply only completed the score the alert is about
            else:
                question, reading = text, readings[-1][2]
    if words is not None and not question:
        # no answer was read from it (crisis words, a free text): the text before it
        asked = [
            m
            for m in messages
            if m.direction is Direction.OUT and m.created_at <= words.created_at and m.id < words.id
        ]
        question = describe.short(asked[-1].body) if asked else ""
    return words, question, reading, readings


async def _sent_since_last_reply(
    session: AsyncSession, patient_id: int, until: datetime
) -> list[Message]:
    """The texts sent to a patient since they last wrote (at most the last 30)."""
    last_in = await session.scalar(
        select(func.max(Message.created_at)).where(
            Message.patient_id == patient_id,
            Message.direction == Direction.IN,
            Message.created_at <= until,
        )
    )
    query = select(Message).where(
        Message.patient_id == patient_id,
        Message.direction == Direction.OUT,
        Message.escalation_id.is_(None),
        Message.created_at <= until,
    )
    if last_in is not None:
        query = query.where(Message.created_at > last_in)
    rows = (await session.scalars(query.order_by(Message.created_at.desc()).limit(30))).all()
    return list(rows)[::-1]


def patient_matches(q: str) -> ColumnElement[bool]:
    """A name (first or last), a phone however typed ("(202) 555-0143" finds
    +12025550143), or the exact record number."""
    like = f"%{q}%"
    digits = "".join(ch for ch in q if ch.isdigit())
    return or_(
        Patient.first_name.ilike(like),
        Patient.last_name.ilike(like),
        Patient.phone.like(f"%{digits}%") if len(digits) >= 4 else Patient.phone.like(like),
        Patient.external_ref == q,
    )


async def search_patients(*, session: AsyncSession, q: str, limit: int = 200) -> list[Patient]:
    query = select(Patient).order_by(Patient.first_name, Patient.id).limit(limit)
    q = q.replace("\x00", "").strip()[:80]  # PostgreSQL text cannot hold a NUL
    if q:
        query = query.where(patient_matches(q))
    return list((await session.scalars(query)).all())
