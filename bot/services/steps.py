"""The one writer of conversation steps, and of the inbound texts that feed them.

Every caller that persists an engine step — a start, a reply, a reminder, an
expiry, a hand-over's first question — goes through :func:`write_step`. The
step is computed outside the write (the engine is pure); the write applies it
only while one guard holds:

- the check-in is still in the state the step was computed from (same
  ``revision``, and scheduled for a start or active otherwise);
- the patient is active and opted in;
- the number the step talks to is still the patient's.

A step whose guard fails writes nothing, and the caller decides what that
means (read again, or treat the sender as unknown). Speed comes from batching
around this function (several steps in one transaction), never from a copy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Update, and_, bindparam, exists, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.sql.elements import ColumnElement

from bot.services.escalations import escalation_row, raise_escalations
from bot.services.outbox import Claimed, claim_rows, insert_rows, message_row
from db.enums import CheckinStatus, Direction, MessageStatus, PatientStatus, Severity
from db.models import Answer, Checkin, Message, Patient, Score
from flows.engine import (
    AnswerRecorded,
    ConversationEnded,
    EscalationRequested,
    Outcome,
    ScoreComputed,
    SendMessage,
    Step,
)

MAX_BODY_CHARS = 1600

_OUTCOME_STATUS = {
    Outcome.COMPLETED: CheckinStatus.COMPLETED,
    Outcome.EXPIRED: CheckinStatus.EXPIRED,
    Outcome.CRISIS: CheckinStatus.COMPLETED,
}


@dataclass(frozen=True, slots=True)
class Target:
    """The check-in a step was computed from, and who it talks to."""

    checkin_id: int
    patient_id: int
    phone: str
    revision: int
    starting: bool = False


@dataclass(slots=True)
class Written:
    """What a step wrote: outbound messages (to send after commit) and escalations raised."""

    ids: list[int] = field(default_factory=list)
    claimed: list[Claimed] = field(default_factory=list)
    escalations: list[Severity] = field(default_factory=list)
    ended: ConversationEnded | None = None


@dataclass(slots=True)
class StepRows:
    """One engine step as column values."""

    state: dict[str, Any]
    answers: list[dict[str, Any]] = field(default_factory=list)
    scores: list[dict[str, Any]] = field(default_factory=list)
    escalations: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    ended: ConversationEnded | None = None


def step_rows(
    step: Step,
    *,
    checkin_id: int,
    patient_id: int,
    phone: str,
    now: datetime,
    message_id: int | None = None,
) -> StepRows:
    rows = StepRows(state=step.state.to_json())
    for event in step.events:
        if isinstance(event, SendMessage):
            rows.messages.append(
                message_row(
                    phone=phone,
                    body=event.text,
                    purpose=str(event.purpose),
                    now=now,
                    patient_id=patient_id,
                    checkin_id=checkin_id,
                )
            )
        elif isinstance(event, AnswerRecorded):
            rows.answers.append(
                {
                    "checkin_id": checkin_id,
                    "message_id": message_id if event.raw is not None else None,
                    "question_key": event.key,
                    "raw_text": event.raw,
                    "value": event.value,
                    "created_at": now,
                }
            )
        elif isinstance(event, ScoreComputed):
            rows.scores.append(
                {
                    "checkin_id": checkin_id,
                    "patient_id": patient_id,
                    "instrument": event.name,
                    "total": event.total,
                    "band": event.band,
                    "flags": list(event.flags),
                    "complete": event.complete,
                    "created_at": now,
                }
            )
        elif isinstance(event, EscalationRequested):
            rows.escalations.append(
                escalation_row(
                    severity=event.severity,
                    reason=event.reason,
                    summary=event.summary,
                    now=now,
                    patient_id=patient_id,
                    checkin_id=checkin_id,
                    message_id=message_id,
                )
            )
        elif isinstance(event, ConversationEnded):
            rows.ended = event
    return rows


def ended_columns(ended: ConversationEnded, now: datetime) -> dict[str, Any]:
    """The check-in columns that change when its conversation ends."""
    return {
        "status": _OUTCOME_STATUS[ended.outcome],
        "outcome": str(ended.outcome),
        "completed_at": now,
        "lease_until": None,
    }


def _guard() -> ColumnElement[bool]:
    """The one condition under which a step may be written (bound per call)."""
    owner = exists().where(
        Patient.id == Checkin.patient_id,
        Patient.status == PatientStatus.ACTIVE,
        Patient.opted_out_at.is_(None),
        Patient.phone == bindparam("g_phone"),
    )
    return and_(
        Checkin.id == bindparam("g_id"),
        Checkin.patient_id == bindparam("g_patient"),
        Checkin.revision == bindparam("g_revision"),
        Checkin.status == bindparam("g_status"),
        owner,
    )


GUARD = _guard()


def _guard_params(target: Target) -> dict[str, Any]:
    return {
        "g_id": target.checkin_id,
        "g_patient": target.patient_id,
        "g_phone": target.phone,
        "g_revision": target.revision,
        "g_status": CheckinStatus.SCHEDULED if target.starting else CheckinStatus.ACTIVE,
    }


def _update(columns: tuple[str, ...]) -> Update:
    return update(Checkin).where(GUARD).values({c: bindparam(f"v_{c}") for c in columns})


_STEP = ("revision", "state")
_END = ("completed_at", "lease_until", "outcome", "status")
_BEGIN = (
    "expires_at",
    "expiry_after_s",
    "flow_checksum",
    "flow_version",
    "lease_until",
    "reminder_after_s",
    "reminder_at",
    "started_at",
    "status",
)
# The four shapes a step's UPDATE takes, built once: constructing the guarded statement cost
# more than running it.
_UPDATES: Mapping[tuple[str, ...], Update] = {
    columns: _update(columns)
    for columns in (
        tuple(sorted(set(_STEP))),
        tuple(sorted({*_STEP, *_END})),
        tuple(sorted({*_STEP, *_BEGIN})),
        tuple(sorted({*_STEP, *_END, *_BEGIN})),
    )
}


@dataclass(frozen=True, slots=True)
class StepWrite:
    """One step to persist: the check-in it was computed from, the step, and its extras
    (``begin``: the columns a start sets; ``message_id``: the inbound text it answers;
    ``claim``: lease its outbound messages to this process to send right after commit)."""

    target: Target
    step: Step
    begin: dict[str, Any] | None = None
    message_id: int | None = None
    claim: bool = False


async def write_steps(
    session: AsyncSession, writes: Sequence[StepWrite], now: datetime
) -> list[Written | None]:
    """Persist engine steps in the caller's transaction, each only while its guard holds
    (None for one whose guard failed: nothing of it is written). Steps of the same shape
    share one guarded UPDATE (executemany), and all share the inserts of their answers,
    scores and messages (one statement each)."""
    await session.flush()  # pending ORM rows (a hand-over's new check-in) go first
    conn = await session.connection()
    planned: list[tuple[StepWrite, StepRows, dict[str, Any]]] = []
    shapes: dict[tuple[str, ...], list[int]] = {}
    for w in writes:
        target = w.target
        rows = step_rows(
            w.step,
            checkin_id=target.checkin_id,
            patient_id=target.patient_id,
            phone=target.phone,
            now=now,
            message_id=w.message_id,
        )
        values: dict[str, Any] = {
            **(w.begin or {}),
            "state": rows.state,
            "revision": target.revision + 1,
        }
        if rows.ended is not None:
            values.update(ended_columns(rows.ended, now))
        shapes.setdefault(tuple(sorted(values)), []).append(len(planned))
        planned.append((w, rows, values))
    passed = [False] * len(planned)
    for columns, members in shapes.items():
        statement = _UPDATES.get(columns)
        if statement is None:
            statement = _update(columns)
        params = [
            {
                **_guard_params(planned[i][0].target),
                **{f"v_{k}": v for k, v in planned[i][2].items()},
            }
            for i in members
        ]
        result = await conn.execute(statement, params if len(params) > 1 else params[0])
        if len(members) == 1:
            passed[members[0]] = result.rowcount == 1
        else:
            # executemany reports no row count on every driver: the guard's outcome is read
            # back (the rows are this transaction's until it ends)
            moved = await _moved(
                conn, {planned[i][0].target.checkin_id: planned[i][2]["revision"] for i in members}
            )
            for i in members:
                passed[i] = planned[i][0].target.checkin_id in moved
    out: list[Written | None] = []
    answers: list[dict[str, Any]] = []
    scores: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    owners: list[int] = []  # index in ``out`` of each message row
    for (w, rows, values), ok in zip(planned, passed, strict=True):
        if not ok:
            out.append(None)
            continue
        loaded = session.identity_map.get(session.identity_key(Checkin, (w.target.checkin_id,)))
        if loaded is not None:
            for name, value in values.items():
                set_committed_value(loaded, name, value)
        answers += rows.answers
        scores += rows.scores
        raise_escalations(session, rows.escalations)
        if w.claim:
            claim_rows(rows.messages, now)
        messages += rows.messages
        owners += [len(out)] * len(rows.messages)
        out.append(
            Written(escalations=[row["severity"] for row in rows.escalations], ended=rows.ended)
        )
    if answers:
        await conn.execute(_INSERT_ANSWER, answers)
    if scores:
        await conn.execute(_INSERT_SCORE, scores)
    ids, claimed = await insert_rows(conn, messages)
    claimed_ids = {c.id: c for c in claimed}
    for owner, message_id in zip(owners, ids, strict=True):
        written = out[owner]
        assert written is not None
        written.ids.append(message_id)
        if message_id in claimed_ids:
            written.claimed.append(claimed_ids[message_id])
    return out


_REVISIONS = select(Checkin.id, Checkin.revision).where(
    Checkin.id.in_(bindparam("ids", expanding=True))
)


async def _moved(conn: AsyncConnection, expected: dict[int, int]) -> set[int]:
    """The check-ins now at the revision a guarded UPDATE would have set."""
    rows = (await conn.execute(_REVISIONS, {"ids": sorted(expected)})).all()
    return {row[0] for row in rows if expected.get(row[0]) == row[1]}


async def write_step(
    session: AsyncSession,
    *,
    target: Target,
    step: Step,
    now: datetime,
    begin: dict[str, Any] | None = None,
    message_id: int | None = None,
    claim: bool = False,
) -> Written | None:
    """``write_steps`` for one step."""
    (written,) = await write_steps(
        session, [StepWrite(target, step, begin, message_id, claim)], now
    )
    return written


def _insert_texts(insert_for: Any) -> Any:
    """``INSERT … ON CONFLICT (provider_sid) DO NOTHING RETURNING id, provider_sid``, built
    once: a re-delivered ``MessageSid`` is skipped, and the ids come back by sid."""
    return (
        insert_for(Message)
        .on_conflict_do_nothing(index_elements=[Message.provider_sid])
        .returning(Message.id, Message.provider_sid)
    )


_INSERT_ANSWER = insert(Answer)
_INSERT_SCORE = insert(Score)
_INSERT_TEXTS = {"sqlite": _insert_texts(sqlite_insert), "postgresql": _insert_texts(pg_insert)}


@dataclass(frozen=True, slots=True)
class Text:
    """An inbound SMS to record, and who it is from when the number is a patient's."""

    sid: str
    phone: str
    body: str
    now: datetime
    patient_id: int | None = None
    checkin_id: int | None = None


async def record_texts(session: AsyncSession, texts: Sequence[Text]) -> dict[str, int]:
    """Insert inbound texts in one statement; their ids by ``MessageSid``. A sid already
    there (a re-delivery, also one racing this: the insert waits for the other
    transaction, then skips) is missing from the result."""
    if not texts:
        return {}
    conn = await session.connection()
    rows = [
        {
            "direction": Direction.IN,
            "patient_id": t.patient_id,
            "checkin_id": t.checkin_id,
            "phone": t.phone,
            "body": t.body[:MAX_BODY_CHARS],
            "provider_sid": t.sid,
            "status": MessageStatus.RECEIVED,
            "segments": 1,
            "encoding": "GSM-7",
            "attempts": 0,
            "purpose": "",
            "created_at": t.now,
        }
        for t in texts
    ]
    statement = _INSERT_TEXTS[conn.dialect.name]
    result = await conn.execute(statement, rows if len(rows) > 1 else rows[0])
    return {sid: message_id for message_id, sid in result.all()}


async def record_inbound(
    session: AsyncSession,
    *,
    sid: str,
    phone: str,
    body: str,
    patient_id: int | None,
    checkin_id: int | None,
    now: datetime,
) -> int | None:
    """``record_texts`` for one text; None when its MessageSid is already there."""
    found = await record_texts(session, [Text(sid, phone, body, now, patient_id, checkin_id)])
    return found.get(sid)
