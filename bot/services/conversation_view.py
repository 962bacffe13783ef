"""A patient's history as conversations: one block per check-in, the exchange inside it in order.

A flat newest-first list puts each reply under the *next* question, so "Patient: 1"
reads as the answer to the question above it when it answered the one below. Here
every check-in is a block headed by what it concluded (outcome, scores, escalations),
and inside it the messages run oldest first: the question, then the reply with what it
was read as ("1 — Several days"), re-asks marked. Texts outside a check-in form their
own blocks between them; treatments are markers. Pages go by check-in, newest first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, or_, select, true, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import utc_from_iso
from bot.services import flow_store
from db.enums import CheckinStatus, Direction
from db.models import Answer, Checkin, Escalation, Message, Score, Treatment
from flows import describe
from flows.model import Flow

CHECKINS_PER_PAGE = 20
MAX_MESSAGES = 600  # a page never holds more; a longer run of free texts is cut, oldest first
_RETRY = "retry"


@dataclass(slots=True)
class Line:
    """One text in a block."""

    at: datetime
    inbound: bool
    body: str
    status: str
    question: str = ""  # for a reply: the question it answered (its key and text)
    reading: str = ""  # for a reply: what it was read as; "not understood" when re-asked
    reask: bool = False  # an outbound re-ask of the same question
    safety: bool = False  # the reply answered a safety question
    value: Any = None  # the recorded answer's value, for ``reading``


@dataclass(slots=True)
class EscalationMark:
    id: int
    severity: str
    reason: str
    status: str


@dataclass(slots=True)
class Block:
    kind: str  # "checkin" | "texts" | "treatment"
    at: datetime
    lines: list[Line] = field(default_factory=list)
    title: str = ""
    checkin_id: int | None = None
    flow_key: str = ""
    version: int | None = None
    status: str = ""
    outcome: str = ""
    scores: list[tuple[str, float, str | None, bool]] = field(default_factory=list)
    escalations: list[EscalationMark] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page ended: the oldest check-in shown (start time and id)."""

    at: datetime
    id: int

    def token(self) -> str:
        return f"{self.at.astimezone(UTC).isoformat()}~{self.id}"

    @classmethod
    def parse(cls, token: str) -> Cursor:
        at_text, sep, id_text = token.rpartition("~")
        if not sep or not (id_text.isascii() and id_text.isdigit()) or len(id_text) > 10:
            raise ValueError("expected time~id")
        if int(id_text) > 2**31 - 1:
            raise ValueError("the id is out of range")
        return cls(utc_from_iso(at_text), int(id_text))


@dataclass(frozen=True, slots=True)
class ConversationPage:
    blocks: list[Block]
    older: Cursor | None
    truncated: bool  # more texts fell in this page's span than it shows


def _started(c: Checkin) -> datetime:
    return c.started_at or c.due_at


async def _flows(session: AsyncSession, checkins: Sequence[Checkin]) -> dict[int, Flow | None]:
    """Per check-in, its pinned flow version (each version read once per page)."""
    by_version: dict[tuple[str, int | None], Flow | None] = {}
    out: dict[int, Flow | None] = {}
    for c in checkins:
        key = (c.flow_key, c.flow_version)
        if key not in by_version:
            by_version[key] = await flow_store.of_checkin(session=session, checkin=c)
        out[c.id] = by_version[key]
    return out


def _within(column: Any, lower: datetime | None, upper: datetime | None) -> list[Any]:
    """``column`` inside the page's span (either end open)."""
    out = []
    if lower is not None:
        out.append(column >= lower)
    if upper is not None:
        out.append(column < upper)
    return out


async def conversation_page(
    *, session: AsyncSession, patient_id: int, before: Cursor | None = None
) -> ConversationPage:
    """One page of the patient's conversations, newest check-in first."""
    query = (
        select(Checkin)
        .where(Checkin.patient_id == patient_id, Checkin.started_at.is_not(None))
        .order_by(Checkin.started_at.desc(), Checkin.id.desc())
        .limit(CHECKINS_PER_PAGE + 1)
    )
    if before is not None:
        query = query.where(tuple_(Checkin.started_at, Checkin.id) < tuple_(before.at, before.id))
    checkins = list((await session.scalars(query)).all())
    older = None
    if len(checkins) > CHECKINS_PER_PAGE:
        checkins = checkins[:CHECKINS_PER_PAGE]
        last = checkins[-1]
        older = Cursor(_started(last), last.id)
    # the span this page covers: from its oldest check-in (or all history on the last page)
    # up to where the newer page began (or now)
    lower = _started(checkins[-1]) if checkins and older is not None else None
    upper = before.at if before is not None else None
    ids = [c.id for c in checkins]

    in_span = [
        Message.patient_id == patient_id,
        Message.escalation_id.is_(None),
        *_within(Message.created_at, lower, upper),
    ]
    # two index reads (the patient's texts in the span, newest first; the page's check-ins'
    # own texts), not one OR that would sort every text the patient ever sent
    in_window = list(
        (
            await session.scalars(
                select(Message)
                .where(*in_span)
                .order_by(Message.created_at.desc(), Message.id.desc())
                .limit(MAX_MESSAGES + 1)
            )
        ).all()
    )
    own = (
        (await session.scalars(select(Message).where(Message.checkin_id.in_(ids)))).all()
        if ids
        else []
    )
    by_id = {m.id: m for m in (*in_window, *own)}
    messages = sorted(by_id.values(), key=lambda m: (m.created_at, m.id), reverse=True)
    truncated = len(messages) > MAX_MESSAGES
    messages = messages[:MAX_MESSAGES][::-1]
    answers = {
        a.message_id: a
        for a in (await session.scalars(select(Answer).where(Answer.checkin_id.in_(ids)))).all()
        if a.message_id is not None
    }
    unanswered: dict[int, list[Answer]] = {}
    for a in (
        await session.scalars(
            select(Answer).where(Answer.checkin_id.in_(ids), Answer.message_id.is_(None))
        )
    ).all():
        unanswered.setdefault(a.checkin_id, []).append(a)
    scores: dict[int, list[Score]] = {}
    for s in (await session.scalars(select(Score).where(Score.checkin_id.in_(ids)))).all():
        scores.setdefault(s.checkin_id, []).append(s)
    # the patient's own index first: an OR across columns would scan every escalation
    esc_in_span = and_(true(), *_within(Escalation.created_at, lower, upper))
    escalations = list(
        (
            await session.scalars(
                select(Escalation)
                .where(
                    Escalation.patient_id == patient_id,
                    or_(esc_in_span, Escalation.checkin_id.in_(ids)) if ids else esc_in_span,
                )
                .order_by(Escalation.created_at, Escalation.id)
            )
        ).all()
    )
    treatments = list(
        (
            await session.scalars(
                select(Treatment).where(
                    Treatment.patient_id == patient_id,
                    *_within(Treatment.administered_at, lower, upper),
                )
            )
        ).all()
    )

    flows = await _flows(session, checkins)
    blocks = _blocks(checkins, messages, answers, unanswered, scores, escalations, treatments)
    for b in blocks:
        if b.checkin_id is not None:
            flow = flows.get(b.checkin_id)
            b.title = flow.title if flow is not None else b.flow_key
            _annotate(b, describe.questions(flow) if flow is not None else {})
    return ConversationPage(blocks, older, truncated)


def _blocks(
    checkins: Sequence[Checkin],
    messages: Sequence[Message],
    answers: dict[int, Answer],
    unanswered: dict[int, list[Answer]],
    scores: dict[int, list[Score]],
    escalations: Sequence[Escalation],
    treatments: Sequence[Treatment],
) -> list[Block]:
    by_checkin: dict[int, Block] = {}
    blocks: list[Block] = []
    for c in checkins:
        block = Block(
            kind="checkin",
            at=_started(c),
            checkin_id=c.id,
            flow_key=c.flow_key,
            version=c.flow_version,
            status=str(c.status),
            outcome=c.outcome or "",
            scores=[(s.instrument, s.total, s.band, s.complete) for s in scores.get(c.id, [])],
        )
        by_checkin[c.id] = block
        blocks.append(block)
    texts: Block | None = None  # the current run of texts outside any check-in
    for m in messages:
        answer = answers.get(m.id)
        line = Line(
            at=m.created_at,
            inbound=m.direction is Direction.IN,
            body=m.body,
            status=str(m.status),
            reask=m.purpose == _RETRY,
        )
        if answer is not None:
            line.question, line.value = answer.question_key, answer.value
        owner = by_checkin.get(m.checkin_id) if m.checkin_id is not None else None
        if owner is not None:
            owner.lines.append(line)
            texts = None
            continue
        if texts is None or (texts.lines and (m.created_at - texts.lines[-1].at).days >= 1):
            texts = Block(kind="texts", at=m.created_at)
            blocks.append(texts)
        texts.lines.append(line)
    for e in escalations:
        mark = EscalationMark(e.id, str(e.severity), e.reason, str(e.status))
        owner = by_checkin.get(e.checkin_id) if e.checkin_id is not None else None
        if owner is None:
            owner = _nearest(blocks, e.created_at)
        if owner is None:
            owner = Block(kind="texts", at=e.created_at)
            blocks.append(owner)
        owner.escalations.append(mark)
    for t in treatments:
        blocks.append(Block(kind="treatment", at=t.administered_at, title=t.kind))
    for c_id, missing in unanswered.items():
        for a in missing:
            if a.value is None and c_id in by_checkin:
                by_checkin[c_id].lines.append(
                    Line(a.created_at, True, "", "", question=a.question_key)
                )
    for b in blocks:
        b.lines.sort(key=lambda line: line.at)
    blocks.sort(key=lambda b: b.at, reverse=True)
    return blocks


def _nearest(blocks: Sequence[Block], at: datetime) -> Block | None:
    """The texts block an escalation raised outside a check-in belongs to."""
    candidates = [b for b in blocks if b.kind == "texts" and b.lines and b.lines[0].at <= at]
    return max(candidates, key=lambda b: b.at) if candidates else None


def _annotate(block: Block, questions: dict[str, describe.Question]) -> None:
    """Replies get their question and reading; a reply followed by a re-ask was not read."""
    lines = block.lines
    for i, line in enumerate(lines):
        if line.inbound and line.question:
            q = questions.get(line.question)
            line.reading = describe.reading(q.spec if q else None, line.value)
            line.safety = bool(q and q.safety)
            line.question = f"{line.question}: {q.text}" if q else line.question
        elif line.inbound and not line.question and block.status != str(CheckinStatus.SCHEDULED):
            following = next((x for x in lines[i + 1 :] if not x.inbound), None)
            if following is not None and following.reask:
                line.reading = "not understood; asked again"
