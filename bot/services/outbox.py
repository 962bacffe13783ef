"""The outbox: every outgoing SMS is a row first, sent after commit.

Claiming a row moves it from ``pending`` to ``sending`` with a lease in one
UPDATE, so two processes never send the same row; a row whose lease ran out
(the sender crashed) is claimable again. Twilio has no idempotency key, so a
crash between Twilio's acceptance and our commit can duplicate one message;
never more, and none is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Select, and_, bindparam, delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from bot.clock import Clock
from bot.logs import mask_phone
from bot.metrics import SendStats
from bot.services.escalations import open_escalation_exists, raise_escalation
from bot.services.optout import ALWAYS_SEND, StopCause, stop_texting
from bot.sms.transport import (
    OPTED_OUT_CODE,
    TRANSIENT_DELIVERY_CODES,
    PermanentSendError,
    SendError,
    SendResult,
    TransientSendError,
    Transport,
)
from db.enums import Direction, MessageStatus, Severity
from db.models import EarlyStatus, Message, Patient, unsent
from db.session import Database
from flows import gsm
from flows.reasons import Reason

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)
FAST_PATH_LEASE = timedelta(seconds=30)
MAX_ATTEMPTS = 8
BACKOFF_BASE_S = 10
BACKOFF_CAP = timedelta(minutes=30)
UNREACHABLE_AFTER = 3
SEND_CONCURRENCY = 16
DELIVERY_RETRIES = 3


def message_row(
    *,
    phone: str,
    body: str,
    purpose: str,
    now: datetime,
    patient_id: int | None = None,
    checkin_id: int | None = None,
    user_id: int | None = None,
    send_after: datetime | None = None,
    escalation_id: int | None = None,
) -> dict[str, object]:
    """The column values of a new outbound row (bulk inserts use these directly)."""
    encoding, segments = gsm.measure(body)
    return {
        "direction": Direction.OUT,
        "patient_id": patient_id,
        "checkin_id": checkin_id,
        "user_id": user_id,
        "escalation_id": escalation_id,
        "phone": phone,
        "body": body,
        "purpose": purpose,
        "status": MessageStatus.PENDING,
        "segments": segments,
        "encoding": encoding,
        "send_after": send_after,
        "attempts": 0,
        "created_at": now,
    }


def enqueue(
    *,
    session: AsyncSession,
    phone: str,
    body: str,
    purpose: str,
    now: datetime,
    patient_id: int | None = None,
    checkin_id: int | None = None,
    user_id: int | None = None,
    send_after: datetime | None = None,
    escalation_id: int | None = None,
) -> Message:
    """Add an outbound row to the session; the caller's transaction commits it."""
    message = Message(
        **message_row(
            phone=phone,
            body=body,
            purpose=purpose,
            now=now,
            patient_id=patient_id,
            checkin_id=checkin_id,
            user_id=user_id,
            send_after=send_after,
            escalation_id=escalation_id,
        )
    )
    session.add(message)
    return message


def backoff(attempts: int) -> timedelta:
    """10 s, 20 s, 40 s, ... capped at 30 minutes."""
    return min(timedelta(seconds=BACKOFF_BASE_S * 2 ** max(attempts - 1, 0)), BACKOFF_CAP)


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    phone: str
    body: str
    attempts: int


def _claimable(now: datetime) -> ColumnElement[bool]:
    return or_(
        and_(
            Message.status == MessageStatus.PENDING,
            or_(Message.send_after.is_(None), Message.send_after <= now),
        ),
        and_(Message.status == MessageStatus.SENDING, Message.lease_until < now),
    )


def claim_query(ids: Iterable[int] | None, now: datetime, limit: int) -> Select[int]:
    """The rows a claim takes, oldest due first; its plan must stay on ix_messages_outbox
    (a test checks it), the only index on messages that knows the status."""
    query = (
        select(Message.id)
        .where(
            unsent(),
            Message.direction == Direction.OUT,
            _claimable(now),
        )
        .order_by(Message.send_after.is_not(None), Message.send_after, Message.id)
        .limit(limit)
    )
    if ids is not None:
        query = query.where(Message.id.in_(list(ids)))
    return query


async def _claim(
    db: Database, ids: Iterable[int] | None, now: datetime, limit: int
) -> list[Claimed]:
    async with db.write() as session:
        query = claim_query(ids, now, limit)
        if not db.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        chosen = list((await session.scalars(query)).all())
        if not chosen:
            return []
        await _cancel_opted_out(session, chosen, now)
        rows = (
            await session.execute(
                update(Message)
                .where(Message.id.in_(chosen), _claimable(now))
                .values(
                    status=MessageStatus.SENDING,
                    lease_until=now + LEASE,
                    attempts=Message.attempts + 1,
                    updated_at=now,
                )
                .returning(Message.id, Message.phone, Message.body, Message.attempts)
            )
        ).all()
    return [Claimed(r.id, r.phone, r.body, r.attempts) for r in rows]


async def _cancel_opted_out(session: AsyncSession, ids: list[int], now: datetime) -> None:
    """A patient who said STOP hears nothing more, except crisis resources."""
    await session.execute(
        update(Message)
        .where(
            Message.id.in_(ids),
            Message.purpose.not_in(ALWAYS_SEND),
            Message.patient_id.in_(select(Patient.id).where(Patient.opted_out_at.is_not(None))),
        )
        .values(status=MessageStatus.CANCELLED, updated_at=now)
    )


async def _record_successes(
    db: Database, done: list[tuple[Claimed, str, str]], now: datetime
) -> None:
    """Record accepted sends in one statement (executemany), whatever their number."""
    if not done:
        return
    async with db.write_one() as conn:
        await conn.execute(
            _RECORD_SUCCESS,
            [
                {"b_id": claimed.id, "b_sid": sid, "b_status": _initial_status(status), "b_at": now}
                for claimed, sid, status in done
            ],
        )


_RECORD_SUCCESS = (
    update(Message)
    .where(Message.id == bindparam("b_id"))
    .values(
        provider_sid=bindparam("b_sid"),
        status=bindparam("b_status"),
        sent_at=bindparam("b_at"),
        lease_until=None,
        error_code=None,
        updated_at=bindparam("b_at"),
    )
)


class GroupRecorder:
    """Group commit for accepted sends: concurrent fast paths share one transaction.

    Each caller waits until its rows are recorded, so nothing is reported sent before the
    database knows it; under load one UPDATE records the sends of many requests.
    """

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        self._pending: list[tuple[Claimed, str, str]] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._flushing = False

    async def record(self, done: list[tuple[Claimed, str, str]]) -> None:
        if not done:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.extend(done)
        self._waiters.append(waiter)
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush())
        await waiter

    async def _flush(self) -> None:
        try:
            await asyncio.sleep(0)  # let requests finishing at the same moment join in
            while self._pending:
                batch, waiters = self._pending, self._waiters
                self._pending, self._waiters = [], []
                try:
                    await _record_successes(self._db, batch, self._clock.now())
                except Exception as exc:
                    for w in waiters:
                        if not w.done():
                            w.set_exception(exc)
                    continue
                for w in waiters:
                    if not w.done():
                        w.set_result(None)
        finally:
            self._flushing = False


def _initial_status(twilio_status: str) -> MessageStatus:
    try:
        status = MessageStatus(twilio_status)
    except ValueError:
        return MessageStatus.ACCEPTED
    if status in (MessageStatus.PENDING, MessageStatus.SENDING):
        return MessageStatus.ACCEPTED
    return status


async def _record_failure(db: Database, claimed: Claimed, exc: SendError, now: datetime) -> bool:
    """Record a failed attempt; True when it will be retried."""
    async with db.write() as session:
        if isinstance(exc, TransientSendError) and claimed.attempts < MAX_ATTEMPTS:
            await session.execute(
                update(Message)
                .where(Message.id == claimed.id)
                .values(
                    status=MessageStatus.PENDING,
                    send_after=now + backoff(claimed.attempts),
                    lease_until=None,
                    error_code=exc.code,
                    updated_at=now,
                )
            )
            return True
        await session.execute(
            update(Message)
            .where(Message.id == claimed.id)
            .values(
                status=MessageStatus.FAILED,
                lease_until=None,
                error_code=exc.code,
                updated_at=now,
            )
        )
        message = await session.get(Message, claimed.id)
        if message is not None and message.patient_id is not None:
            await on_permanent_failure(
                session=session, patient_id=message.patient_id, code=exc.code, now=now
            )
    return False


async def on_permanent_failure(
    *, session: AsyncSession, patient_id: int, code: int | None, now: datetime
) -> None:
    """21610 means the patient opted out at the carrier; repeated failures mean unreachable."""
    patient = await session.get(Patient, patient_id)
    if patient is None:
        return
    if code == OPTED_OUT_CODE:
        if patient.opted_out_at is None:
            await stop_texting(session=session, patient=patient, cause=StopCause.CARRIER, now=now)
        return
    recent = (
        await session.scalars(
            select(Message.status)
            .where(Message.patient_id == patient_id, Message.direction == Direction.OUT)
            .where(Message.status.in_(_FINAL_STATUSES))
            .order_by(Message.id.desc())
            .limit(UNREACHABLE_AFTER)
        )
    ).all()
    failed = [s for s in recent if s in (MessageStatus.FAILED, MessageStatus.UNDELIVERED)]
    if len(failed) >= UNREACHABLE_AFTER and patient.unreachable_at is None:
        patient.unreachable_at = now
        patient.updated_at = now
        if not await open_escalation_exists(
            session=session, patient_id=patient_id, reason=Reason.UNREACHABLE
        ):
            raise_escalation(
                session=session,
                severity=Severity.MODERATE,
                reason=Reason.UNREACHABLE,
                summary=f"The last {UNREACHABLE_AFTER} messages to this patient failed (error {code}).",
                now=now,
                patient_id=patient_id,
            )


_FINAL_STATUSES = (
    MessageStatus.SENT,
    MessageStatus.DELIVERED,
    MessageStatus.UNDELIVERED,
    MessageStatus.FAILED,
    MessageStatus.ACCEPTED,
    MessageStatus.QUEUED,
)


async def _attempt(
    transport: Transport, claimed: Claimed
) -> tuple[Claimed, SendResult | None, SendError | None]:
    try:
        return claimed, await transport.send(to=claimed.phone, body=claimed.body), None
    except SendError as exc:
        return claimed, None, exc


async def _deliver(
    db: Database,
    transport: Transport,
    clock: Clock,
    claimed: list[Claimed],
    stats: SendStats,
    recorder: GroupRecorder | None = None,
    concurrency: int | asyncio.Semaphore = SEND_CONCURRENCY,
) -> int:
    """Send claimed rows, each recorded as soon as the provider accepts it.

    Twilio has no idempotency key: a crash after its acceptance and before our record
    re-sends that row once its lease ends. Recording each acceptance before the next send
    in the same slot bounds the duplicates one crash can cause to ``concurrency`` (one with
    the worker's default of 1; a semaphore shared by all of a worker's senders holds that bound
    across its ticks). A row whose send raised unexpectedly keeps its lease and is retried
    after it; one bad row never stops the rest.
    """
    semaphore = (
        concurrency
        if isinstance(concurrency, asyncio.Semaphore)
        else asyncio.Semaphore(max(concurrency, 1))
    )
    accepted = 0

    async def one(c: Claimed) -> None:
        nonlocal accepted
        async with semaphore:
            try:
                _c, result, exc = await _attempt(transport, c)
            except Exception:
                log.exception("unexpected error sending message %s", c.id)
                return
            if result is not None:
                try:
                    if recorder is not None:
                        await recorder.record([(c, result.sid, result.status)])
                    else:
                        await _record_successes(db, [(c, result.sid, result.status)], clock.now())
                    stats.accepted += 1
                    accepted += 1
                except Exception:
                    # accepted but not recorded: the lease expires and the row is sent again
                    log.exception("recording accepted message %s failed", c.id)
                return
            assert exc is not None
            kind = "permanent" if isinstance(exc, PermanentSendError) else "transient"
            log.warning(
                "send %s failed (%s, code %s: %s) to %s, attempt %d",
                c.id,
                kind,
                exc.code,
                exc,
                mask_phone(c.phone),
                c.attempts,
            )
            try:
                if await _record_failure(db, c, exc, clock.now()):
                    stats.retried += 1
                else:
                    stats.failed += 1
            except Exception:
                log.exception("recording the failure of message %s failed", c.id)

    if len(claimed) == 1:
        await one(claimed[0])  # the usual reply: no task to gather
    else:
        await asyncio.gather(*(one(c) for c in claimed))
    return accepted


async def send(
    db: Database,
    transport: Transport,
    clock: Clock,
    *,
    ids: Iterable[int] | None = None,
    limit: int = 200,
    stats: SendStats | None = None,
    concurrency: int | asyncio.Semaphore = SEND_CONCURRENCY,
) -> int:
    """Claim due rows (only ``ids`` if given) and send them; return how many were accepted."""
    stats = stats if stats is not None else SendStats()
    claimed = await _claim(db, ids, clock.now(), limit)
    if not claimed:
        return 0
    return await _deliver(db, transport, clock, claimed, stats, concurrency=concurrency)


async def send_claimed(
    db: Database,
    transport: Transport,
    clock: Clock,
    claimed: list[Claimed],
    *,
    stats: SendStats | None = None,
    recorder: GroupRecorder | None = None,
) -> int:
    """Send rows their own transaction already claimed (``claim_in_session``): the fast path
    after an inbound message, without another claiming transaction."""
    if not claimed:
        return 0
    return await _deliver(
        db, transport, clock, claimed, stats if stats is not None else SendStats(), recorder
    )


def claim_in_session(messages: list[Message], now: datetime) -> None:
    """Mark new outbound rows as claimed by this process before they are inserted."""
    for m in messages:
        if m.send_after is None or m.send_after <= now:
            m.status = MessageStatus.SENDING
            m.lease_until = now + FAST_PATH_LEASE
            m.attempts = 1


def claim_rows(rows: list[dict[str, Any]], now: datetime) -> None:
    """``claim_in_session`` for column values about to be bulk-inserted."""
    for row in rows:
        send_after = row.get("send_after")
        if send_after is None or send_after <= now:
            row["status"] = MessageStatus.SENDING
            row["lease_until"] = now + FAST_PATH_LEASE
            row["attempts"] = 1


_INSERT_RETURNING_ID = insert(Message).returning(Message.id, sort_by_parameter_order=True)


async def insert_rows(
    conn: AsyncConnection, rows: list[dict[str, Any]]
) -> tuple[list[int], list[Claimed]]:
    """Insert outbound rows in one statement: every new id, and those claimed by
    ``claim_rows`` (to send after commit)."""
    if not rows:
        return [], []
    ids = list((await conn.execute(_INSERT_RETURNING_ID, rows)).scalars().all())
    claimed = [
        Claimed(i, row["phone"], row["body"], row["attempts"])
        for i, row in zip(ids, rows, strict=True)
        if row["status"] is MessageStatus.SENDING
    ]
    return ids, claimed


def claimed_of(messages: list[Message]) -> list[Claimed]:
    return [
        Claimed(m.id, m.phone, m.body, m.attempts)
        for m in messages
        if m.status is MessageStatus.SENDING
    ]


# Twilio's statuses in the order a message moves through them; callbacks only move forward.
_RANK = {
    MessageStatus.PENDING: 0,
    MessageStatus.SENDING: 1,
    MessageStatus.ACCEPTED: 2,
    MessageStatus.QUEUED: 3,
    MessageStatus.SENT: 4,
    MessageStatus.DELIVERED: 5,
    MessageStatus.UNDELIVERED: 5,
    MessageStatus.FAILED: 5,
    MessageStatus.CANCELLED: 5,
}
_TWILIO_STATUS = {
    "accepted": MessageStatus.ACCEPTED,
    "scheduled": MessageStatus.ACCEPTED,
    "queued": MessageStatus.QUEUED,
    "sending": MessageStatus.QUEUED,
    "sent": MessageStatus.SENT,
    "delivered": MessageStatus.DELIVERED,
    "read": MessageStatus.DELIVERED,
    "undelivered": MessageStatus.UNDELIVERED,
    "failed": MessageStatus.FAILED,
    "canceled": MessageStatus.CANCELLED,
}


class UnknownStatusError(ValueError):
    pass


def parse_status(value: str) -> MessageStatus:
    try:
        return _TWILIO_STATUS[value.strip().lower()]
    except KeyError as exc:
        raise UnknownStatusError(f"unknown MessageStatus {value[:40]!r}") from exc


StatusOutcome = Literal["applied", "stale", "unknown"]


async def record_status(
    *,
    session: AsyncSession,
    sid: str,
    status: MessageStatus,
    error_code: int | None,
    now: datetime,
) -> StatusOutcome:
    """A delivery report from the webhook: applied, or kept for later when no message has
    its sid yet (the report came before the send was recorded)."""
    outcome = await apply_status(
        session=session, sid=sid, status=status, error_code=error_code, now=now
    )
    if outcome == "unknown":
        session.add(
            EarlyStatus(provider_sid=sid, status=status, error_code=error_code, received_at=now)
        )
        log.info("delivery report %s for %s came before its send was recorded; kept", status, sid)
    return outcome


EARLY_STATUS_KEEP = timedelta(hours=1)
"""How long a report for an unknown sid is kept. A send is recorded within moments; one that
never is (the process died) goes out again when its lease ends, under a new sid."""


async def apply_early_statuses(db: Database, now: datetime, limit: int = 500) -> int:
    """Apply the kept reports whose message now has their sid; drop those kept too long."""
    applied = 0
    async with db.write() as session:
        query = (
            select(EarlyStatus)
            .join(Message, Message.provider_sid == EarlyStatus.provider_sid)
            .order_by(EarlyStatus.id)
            .limit(limit)
        )
        if not db.is_sqlite:
            # workers tick at once: each takes reports no other holds
            query = query.with_for_update(skip_locked=True, of=EarlyStatus)
        early = (await session.scalars(query)).all()
        for report in early:
            if (
                await apply_status(
                    session=session,
                    sid=report.provider_sid,
                    status=report.status,
                    error_code=report.error_code,
                    now=now,
                )
                == "applied"
            ):
                applied += 1
        if early:
            await session.execute(
                delete(EarlyStatus).where(EarlyStatus.id.in_([r.id for r in early]))
            )
        result = await session.execute(
            delete(EarlyStatus).where(EarlyStatus.received_at < now - EARLY_STATUS_KEEP)
        )
        dropped = int(result.rowcount or 0)  # type: ignore[attr-defined]
    if dropped:
        log.warning(
            "dropped %d delivery reports kept %s for sids no message has",
            dropped,
            EARLY_STATUS_KEEP,
        )
    return applied


async def apply_status(
    *,
    session: AsyncSession,
    sid: str,
    status: MessageStatus,
    error_code: int | None,
    now: datetime,
) -> StatusOutcome:
    """Record a delivery status if it moves the message forward (statuses never go back)."""
    message = await session.scalar(
        select(Message).where(Message.provider_sid == sid).with_for_update()
    )
    if message is None:
        return "unknown"
    if message.direction != Direction.OUT or _RANK.get(status, 0) <= _RANK.get(message.status, 0):
        return "stale"
    message.status = status
    message.error_code = error_code
    message.updated_at = now
    if status not in (MessageStatus.UNDELIVERED, MessageStatus.FAILED):
        return "applied"
    if error_code in TRANSIENT_DELIVERY_CODES and message.attempts < DELIVERY_RETRIES:
        # The handset was unreachable for now: send the same text again later, as a new row.
        retry = enqueue(
            session=session,
            phone=message.phone,
            body=message.body,
            purpose=message.purpose,
            now=now,
            patient_id=message.patient_id,
            checkin_id=message.checkin_id,
            user_id=message.user_id,
            send_after=now + backoff(message.attempts + 1) * 6,
        )
        retry.attempts = message.attempts
        return "applied"
    if message.patient_id:
        await on_permanent_failure(
            session=session, patient_id=message.patient_id, code=error_code, now=now
        )
    return "applied"
