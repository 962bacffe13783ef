"""One inbound SMS, handled in one transaction.

Order matters: the message is recorded first (its ``MessageSid`` makes a
re-delivery a no-op), then the crisis detector runs on the text before
anything else routes it, then STOP/START/HELP, then the conversation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, bindparam, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from bot.logs import mask_phone
from bot.services import direct_reply
from bot.services.conversations import (
    Applied,
    ended_columns,
    resume_checkin,
    start_waiting,
    step_rows,
)
from bot.services.escalations import open_escalation_exists, raise_escalation
from bot.services.flow_store import pinned
from bot.services.outbox import (
    Claimed,
    claim_in_session,
    claim_rows,
    claimed_of,
    enqueue,
    insert_rows,
)
from bot.services.scheduling import rematerialise
from bot.settings import Settings
from db.enums import CheckinStatus, Direction, MessageStatus, Severity
from db.models import Answer, Checkin, Escalation, Message, Patient, Score, of_sender
from db.session import Database
from db.types import UTCDateTime
from flows import engine, keywords, safety
from flows.engine import ConversationState, Outcome, Reply

log = logging.getLogger(__name__)

ACK_EVERY = timedelta(hours=12)
UNKNOWN_REPLY_EVERY = timedelta(hours=24)
MAX_BODY_CHARS = direct_reply.MAX_BODY_CHARS


@dataclass(frozen=True, slots=True)
class _Sender:
    id: int
    phone: str
    opted_out_at: datetime | None


@dataclass(frozen=True, slots=True)
class _Active:
    id: int
    flow_key: str
    flow_version: int | None
    flow_checksum: str | None
    state: dict[str, Any] | None


# Plain columns on the session's Core connection: loading ORM objects for every reply cost
# more than the rest of the handler. Rare routes load the ORM rows afterwards (``_orm``).
_SENDER_COLUMNS = (Patient.id, Patient.phone, Patient.opted_out_at)
_ACTIVE_COLUMNS = (
    Checkin.id,
    Checkin.flow_key,
    Checkin.flow_version,
    Checkin.flow_checksum,
    Checkin.state,
)


def _sender_query() -> Select[Any]:
    active = and_(Checkin.patient_id == Patient.id, Checkin.status == CheckinStatus.ACTIVE)
    return (
        select(*_SENDER_COLUMNS, *_ACTIVE_COLUMNS)
        .outerjoin(Checkin, active)
        .where(Patient.phone == bindparam("phone"))
        .order_by(Checkin.started_at.desc())
        .limit(1)
    )


def _insert_inbound(insert: Callable[[type[Message]], Any]) -> Any:
    """``INSERT … ON CONFLICT (provider_sid) DO NOTHING RETURNING id``, built once."""
    return (
        insert(Message)
        .values(
            direction=Direction.IN,
            patient_id=bindparam("patient_id"),
            checkin_id=bindparam("checkin_id"),
            phone=bindparam("phone"),
            body=bindparam("body"),
            provider_sid=bindparam("provider_sid"),
            status=MessageStatus.RECEIVED,
            segments=1,
            encoding="GSM-7",
            attempts=0,
            purpose="",
            created_at=bindparam("created_at", type_=UTCDateTime()),
        )
        .on_conflict_do_nothing(index_elements=[Message.provider_sid])
        .returning(Message.id)
    )


# Built once: constructing statements is a measurable share of an inbound message's cost.
_SENDER = _sender_query()
# PostgreSQL, a reply inside a conversation (nearly every message): the patient and the
# check-in locked in one statement. Rows changed by a transaction it waited for come back in
# their committed version (PostgreSQL re-checks locked rows); a check-in that ended meanwhile
# drops out, and the two statements below run instead.
_SENDER_LOCKED = (
    select(*_SENDER_COLUMNS, *_ACTIVE_COLUMNS)
    .join(Checkin, and_(Checkin.patient_id == Patient.id, Checkin.status == CheckinStatus.ACTIVE))
    .where(Patient.phone == bindparam("phone"))
    .order_by(Checkin.started_at.desc())
    .limit(1)
    # FOR NO KEY UPDATE: replies from one patient (and dispatch batches, which take the same
    # lock) still go one at a time, but rows that only refer to the patient (a score, a
    # message, an escalation) can still be written by a job that holds the check-in this
    # waits for; with FOR UPDATE that job would wait for this and deadlock
    .with_for_update(of=[Patient, Checkin], key_share=True)
)
_PATIENT_FOR_UPDATE = (
    select(*_SENDER_COLUMNS)
    .where(Patient.phone == bindparam("phone"))
    .with_for_update(key_share=True)
)
_ACTIVE_CHECKIN = (
    select(*_ACTIVE_COLUMNS)
    .where(Checkin.patient_id == bindparam("patient_id"), Checkin.status == CheckinStatus.ACTIVE)
    .order_by(Checkin.started_at.desc())
    .limit(1)
)
_SAVE_STATE = (
    update(Checkin).where(Checkin.id == bindparam("b_id")).values(state=bindparam("b_state"))
)
_INSERT_ANSWERS = insert(Answer)
_INSERT_SCORES = insert(Score)
_INSERT_ESCALATIONS = insert(Escalation)
_INSERT_INBOUND_SQLITE = _insert_inbound(sqlite_insert)
_INSERT_INBOUND_PG = _insert_inbound(pg_insert)


@dataclass(frozen=True, slots=True)
class InboundSms:
    sid: str
    from_: str
    to: str
    body: str


@dataclass(slots=True)
class InboundResult:
    duplicate: bool = False
    outbound_ids: list[int] = field(default_factory=list)
    route: str = ""
    # an escalation that may page the on-call at once was raised: check for pages after
    # commit (the direct path sets it only for a critical one; here any escalation does)
    page_now: bool = False
    claimed: list[Claimed] = field(default_factory=list)
    # written by ``direct_reply`` rather than this module's ORM path
    direct: bool = False


def _texts(settings: Settings, language: str) -> dict[str, str]:
    clinic = settings.clinic_name or ("su clínica" if language == "es" else "your clinic")
    phone = settings.clinic_phone
    if language == "es":
        call = f"llame al {phone}" if phone else "llame a su clínica"
        return {
            "help": f"{clinic}: mensajes de seguimiento de su tratamiento. Para ayuda {call}. "
            "En crisis llame o envíe un texto al 988; emergencias 911. Responda STOP para no recibir más.",
            "ack": "Gracias, recibimos su mensaje. Su equipo de atención lo verá. "
            "En crisis llame o envíe un texto al 988.",
            "unknown": f"Este número no está vinculado a un paciente; {call}. "
            "En crisis llame o envíe un texto al 988.",
        }
    call = f"call {phone}" if phone else "call your clinic"
    return {
        "help": f"{clinic}: follow-up texts about your treatment. For help {call}. "
        "In a crisis call or text 988; emergencies 911. Reply STOP to opt out.",
        "ack": "Thanks, we got your message. Your care team will see it. "
        "In a crisis call or text 988.",
        "unknown": f"This number isn't linked to a patient; {call}. In a crisis call or text 988.",
    }


class _Handler:
    def __init__(
        self,
        session: AsyncSession,
        settings: Settings,
        sms: InboundSms,
        now: datetime,
        db: Database,
        crisis: safety.CrisisMatch | None,
    ) -> None:
        self.session = session
        self.crisis = crisis
        self.settings = settings
        self.sms = sms
        self.now = now
        self.db = db
        self.result = InboundResult()
        self.outbound: list[Message] = []
        self._escalated = False

    def reply(self, body: str, purpose: str, patient: Patient | None) -> None:
        self.outbound.append(
            enqueue(
                session=self.session,
                phone=self.sms.from_,
                body=body,
                purpose=purpose,
                now=self.now,
                patient_id=patient.id if patient else None,
            )
        )

    async def run(self) -> InboundResult:
        conn = await self.session.connection()
        sender, active = await self._read_sender(conn)
        message_id = await self._record_inbound(conn, sender, active)
        if message_id is None:
            self.result.duplicate = True
            self.result.route = "duplicate"
            return self.result

        crisis = self.crisis
        if not (
            crisis is None
            and sender is not None
            and active is not None
            and await self._converse(conn, sender, active, message_id)
        ):
            patient, checkin = await self._orm(sender, active)
            if crisis is not None:
                await self._crisis(patient, checkin, message_id, crisis)
            else:
                await self._route(patient, checkin, message_id)
        # replies are claimed by this process in this transaction: after commit they go out
        # at once without another claiming transaction (a crash leaves them to the worker
        # when the short lease ends)
        claim_in_session(self.outbound, self.now)
        await self.session.flush()
        self.result.outbound_ids.extend(m.id for m in self.outbound)
        self.result.claimed.extend(claimed_of(self.outbound))
        self.result.page_now = self._escalated
        return self.result

    async def _read_sender(self, conn: AsyncConnection) -> tuple[_Sender | None, _Active | None]:
        phone = {"phone": self.sms.from_}
        if self.db.is_sqlite:
            # the single writer: the sender and their active check-in in one round trip
            row = (await conn.execute(_SENDER, phone)).first()
            if row is None:
                return None, None
            sender = _Sender(*row[:3])
            return sender, None if row[3] is None else _Active(*row[3:])
        both = (await conn.execute(_SENDER_LOCKED, phone)).first()
        if both is not None:
            return _Sender(*both[:3]), _Active(*both[3:])
        # lock the patient first: one patient's replies are handled one at a time, in order;
        # the check-in is read after the lock, so it is never a stale snapshot
        found = (await conn.execute(_PATIENT_FOR_UPDATE, phone)).first()
        if found is None:
            return None, None
        sender = _Sender(*found)
        row = (await conn.execute(_ACTIVE_CHECKIN, {"patient_id": sender.id})).first()
        return sender, None if row is None else _Active(*row)

    async def _orm(
        self, sender: _Sender | None, active: _Active | None
    ) -> tuple[Patient | None, Checkin | None]:
        """The ORM rows for the routes that change more than a conversation (keywords, crisis,
        messages outside a check-in); already locked by this transaction on PostgreSQL."""
        patient = await self.session.get(Patient, sender.id) if sender is not None else None
        checkin = await self.session.get(Checkin, active.id) if active is not None else None
        return patient, checkin

    async def _converse(
        self, conn: AsyncConnection, sender: _Sender, active: _Active, message_id: int
    ) -> bool:
        """The common case, a reply to a running conversation, written with Core statements.

        False (nothing written) when it is not that case or the step needs the ORM path:
        a keyword, an opted-out sender, or a hand-over that starts the next flow.
        """
        if sender.opted_out_at is not None or active.state is None or active.flow_version is None:
            return False
        if keywords.classify(self.sms.body, opted_out=False) is not None:
            return False
        flow = await pinned(
            session=self.session,
            key=active.flow_key,
            version=active.flow_version,
            checksum=active.flow_checksum,
        )
        state = ConversationState.from_json(active.state)
        step = engine.resume(flow, state, Reply(self.sms.body), self.now)
        rows = step_rows(
            step,
            checkin_id=active.id,
            patient_id=sender.id,
            phone=sender.phone,
            now=self.now,
            message_id=message_id,
        )
        ended = rows.ended
        if ended is not None and ended.handover and ended.outcome is Outcome.COMPLETED:
            return False  # the engine is pure: the ORM path runs the same step again
        if ended is None:
            await conn.execute(_SAVE_STATE, {"b_id": active.id, "b_state": rows.state})
        else:
            await conn.execute(
                update(Checkin)
                .where(Checkin.id == active.id)
                .values(state=rows.state, **ended_columns(ended, self.now))
            )
        for statement, values in (
            (_INSERT_ANSWERS, rows.answers),
            (_INSERT_SCORES, rows.scores),
            (_INSERT_ESCALATIONS, rows.escalations),
        ):
            if values:
                await conn.execute(statement, values)
        claim_rows(rows.messages, self.now)
        claimed = await insert_rows(conn, rows.messages)
        self.result.claimed.extend(claimed)
        self.result.outbound_ids.extend(c.id for c in claimed)
        self.result.route = "conversation"
        self._escalated = bool(rows.escalations)
        if ended is not None and ended.outcome is not Outcome.CRISIS:
            # one conversation at a time: the next one already due starts now
            patient = await self.session.get(Patient, sender.id)
            assert patient is not None
            waiting = await start_waiting(
                session=self.session, patient=patient, settings=self.settings, now=self.now
            )
            self.outbound.extend(waiting.outbound)
        return True

    async def _record_inbound(
        self, conn: AsyncConnection, sender: _Sender | None, active: _Active | None
    ) -> int | None:
        """Insert the inbound row; None when its MessageSid is already there (a re-delivery,
        also one racing this one: the insert waits for the other transaction, then skips)."""
        statement = _INSERT_INBOUND_SQLITE if self.db.is_sqlite else _INSERT_INBOUND_PG
        values = {
            "patient_id": sender.id if sender else None,
            "checkin_id": active.id if active else None,
            "phone": self.sms.from_,
            "body": self.sms.body[:MAX_BODY_CHARS],
            "provider_sid": self.sms.sid,
            "created_at": self.now,
        }
        found: int | None = (await conn.execute(statement, values)).scalar()
        return found

    async def _crisis(
        self,
        patient: Patient | None,
        active: Checkin | None,
        message_id: int,
        crisis: safety.CrisisMatch,
    ) -> None:
        self.result.route = "crisis"
        log.warning("crisis language (%s) from %s", crisis.category, mask_phone(self.sms.from_))
        if patient is not None and active is not None and patient.opted_out_at is None:
            applied = await resume_checkin(
                session=self.session,
                checkin=active,
                patient=patient,
                settings=self.settings,
                input=Reply(self.sms.body),
                now=self.now,
                message_id=message_id,
            )
            if applied.escalations:
                self._collect(applied)
                return
        # Outside a conversation (or one that could not take it): escalate and answer here.
        who = "a patient" if patient is not None else "an unknown number"
        raise_escalation(
            session=self.session,
            severity=Severity.CRITICAL,
            reason="crisis_language",
            summary=f"Crisis language ({crisis.category}) in a text from {who}, outside a check-in.",
            now=self.now,
            patient_id=patient.id if patient else None,
            checkin_id=active.id if active else None,
            message_id=message_id,
        )
        self._escalated = True
        language = patient.language if patient else "en"
        reply = safety.crisis_reply(language, self.settings.clinic_name, self.settings.clinic_phone)
        self.reply(reply, "crisis", patient)

    async def _route(
        self, patient: Patient | None, active: Checkin | None, message_id: int
    ) -> None:
        opted_out = patient is not None and patient.opted_out_at is not None
        keyword = keywords.classify(self.sms.body, opted_out=opted_out)
        language = patient.language if patient else "en"
        texts = _texts(self.settings, language)
        if keyword is keywords.Keyword.STOP:
            self.result.route = "stop"
            if patient is not None:
                await self._opt_out(patient, active, message_id)
            return
        if keyword is keywords.Keyword.START:
            self.result.route = "start"
            if patient is not None and patient.opted_out_at is not None:
                patient.opted_out_at = None
                patient.updated_at = self.now
                await self.session.flush()
                await rematerialise(session=self.session, patient=patient, now=self.now)
                log.info("patient %s opted back in", patient.id)
            return
        if keyword is keywords.Keyword.HELP:
            self.result.route = "help"
            self.reply(texts["help"], "help", patient)
            return
        if patient is None:
            self.result.route = "unknown"
            if not await self._replied_recently(None, purpose="unknown", since=UNKNOWN_REPLY_EVERY):
                self.reply(texts["unknown"], "unknown", None)
            return
        if opted_out:
            self.result.route = "opted_out"
            await self._patient_message(patient, message_id, acknowledge=False)
            return
        if active is not None:
            self.result.route = "conversation"
            applied = await resume_checkin(
                session=self.session,
                checkin=active,
                patient=patient,
                settings=self.settings,
                input=Reply(self.sms.body),
                now=self.now,
                message_id=message_id,
            )
            self._collect(applied)
            return
        self.result.route = "patient_message"
        await self._patient_message(patient, message_id, acknowledge=True)

    def _collect(self, applied: Applied) -> None:
        self.outbound.extend(applied.outbound)
        if applied.escalations:
            self._escalated = True

    async def _replied_recently(
        self, patient_id: int | None, *, purpose: str, since: timedelta
    ) -> bool:
        found = await self.session.scalar(
            select(Message.id)
            .where(
                of_sender(patient_id, self.sms.from_),
                Message.direction == Direction.OUT,
                Message.purpose == purpose,
                Message.created_at >= self.now - since,
            )
            .limit(1)
        )
        return found is not None

    async def _patient_message(
        self, patient: Patient, message_id: int, *, acknowledge: bool
    ) -> None:
        """A text outside any conversation: recorded, acknowledged once, shown to clinicians."""
        if not await open_escalation_exists(
            session=self.session, patient_id=patient.id, reason="patient_message"
        ):
            late = await self.session.scalar(
                select(Checkin.id)
                .where(
                    Checkin.patient_id == patient.id,
                    Checkin.status.in_((CheckinStatus.EXPIRED, CheckinStatus.MISSED)),
                    Checkin.completed_at >= self.now - timedelta(days=2),
                )
                .limit(1)
            )
            raise_escalation(
                session=self.session,
                severity=Severity.LOW,
                reason="patient_message",
                summary="Late reply to an expired check-in."
                if late
                else "The patient sent a message outside a check-in.",
                now=self.now,
                patient_id=patient.id,
                message_id=message_id,
            )
        if acknowledge and not await self._replied_recently(
            patient.id, purpose="ack", since=ACK_EVERY
        ):
            self.reply(_texts(self.settings, patient.language)["ack"], "ack", patient)

    async def _opt_out(self, patient: Patient, active: Checkin | None, message_id: int) -> None:
        """STOP: nothing more is sent (Twilio confirms the opt-out itself)."""
        now = self.now
        if patient.opted_out_at is None:
            patient.opted_out_at = now
            patient.updated_at = now
        await self.session.execute(
            update(Checkin)
            .where(
                Checkin.patient_id == patient.id,
                Checkin.status.in_((CheckinStatus.SCHEDULED, CheckinStatus.ACTIVE)),
            )
            .values(status=CheckinStatus.CANCELLED, outcome="opted_out", completed_at=now)
        )
        await self.session.execute(
            update(Message)
            .where(
                Message.patient_id == patient.id,
                Message.direction == Direction.OUT,
                Message.status == MessageStatus.PENDING,
                Message.purpose != "crisis",
            )
            .values(status=MessageStatus.CANCELLED, updated_at=now)
        )
        if not await open_escalation_exists(
            session=self.session, patient_id=patient.id, reason="opted_out"
        ):
            raise_escalation(
                session=self.session,
                severity=Severity.LOW,
                reason="opted_out",
                summary="The patient replied STOP: no more texts will be sent until they reply START.",
                now=now,
                patient_id=patient.id,
                checkin_id=active.id if active else None,
                message_id=message_id,
            )
        log.info("patient %s opted out", patient.id)


async def handle_inbound(
    db: Database, settings: Settings, sms: InboundSms, now: datetime
) -> InboundResult:
    """Record and act on one inbound message; a repeated ``MessageSid`` changes nothing."""
    crisis = safety.detect(sms.body)
    if crisis is None and keywords.classify(sms.body, opted_out=False) is None:
        replied = await direct_reply.try_reply(
            db, settings, sid=sms.sid, phone=sms.from_, body=sms.body, now=now
        )
        if replied is not None:
            return InboundResult(
                duplicate=replied.duplicate,
                outbound_ids=[c.id for c in replied.claimed],
                route="duplicate" if replied.duplicate else "conversation",
                page_now=replied.page_now,
                claimed=replied.claimed,
                direct=True,
            )
    try:
        async with db.write() as session:
            return await _Handler(session, settings, sms, now, db, crisis).run()
    except IntegrityError:
        # Two deliveries of one MessageSid raced past each other; the other one won.
        return InboundResult(duplicate=True, route="duplicate")
