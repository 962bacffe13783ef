"""One inbound SMS, handled in one transaction.

Order matters: the message is recorded first (its ``MessageSid`` makes a
re-delivery a no-op), then the crisis detector runs on the text before
anything else routes it, then STOP/START/HELP, then the conversation. A reply
to a conversation is written by the step writer (``bot.services.steps``); if
its guard fails (the conversation moved on, the number is no longer the
patient's), the whole transaction is read and handled again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.logs import mask_phone
from bot.services.conversations import Applied, resume_checkin
from bot.services.escalations import pages_at_once, raise_escalation
from bot.services.optout import StopCause, stop_texting
from bot.services.outbox import Claimed, claim_in_session, claimed_of, enqueue
from bot.services.reply_batch import ReplyGroups, Sms, pages
from bot.services.scheduling import rematerialise
from bot.services.steps import MAX_BODY_CHARS, record_inbound
from bot.settings import Settings
from db.enums import CheckinStatus, Direction, Severity
from db.models import Checkin, Message, Patient, of_sender
from db.session import Database
from flows import keywords, safety
from flows.engine import Reply
from flows.reasons import Reason
from flows.text import during_clinic_hours

__all__ = ["MAX_BODY_CHARS", "InboundResult", "InboundSms", "handle_inbound"]

log = logging.getLogger(__name__)

ACK_EVERY = timedelta(hours=12)
UNKNOWN_REPLY_EVERY = timedelta(hours=24)
# reads and retries when a reply's guard fails; the last attempt keeps the text as a message
# outside a check-in rather than lose it
ATTEMPTS = 3

_ACTIVE = and_(Checkin.patient_id == Patient.id, Checkin.status == CheckinStatus.ACTIVE)


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
    # an escalation that pages the on-call at once was raised: page after commit
    page_now: bool = False
    claimed: list[Claimed] = field(default_factory=list)


def _texts(settings: Settings, language: str) -> dict[str, str]:
    """System replies. Spanish ones are written without the accents GSM-7 lacks (á, í, ó, ú),
    so they are not sent as UCS-2 and HELP stays within two segments. The acknowledgement
    says when messages are read (``CLINIC_HOURS``) and where to turn meanwhile."""
    clinic = settings.clinic_name or ("su clinica" if language == "es" else "your clinic")
    phone = settings.clinic_phone
    hours = settings.clinic_hours
    when = during_clinic_hours(language, hours)
    if language == "es":
        call = f"llame al {phone}" if phone else "llame a su clinica"
        return {
            "help": f"{clinic}: mensajes de seguimiento de su tratamiento. Para ayuda {call}. "
            "En crisis llame o envie un texto al 988; emergencias 911. "
            "Responda BAJA para no recibir mas.",
            "ack": f"Gracias, recibimos su mensaje. Su equipo lo leera {when}. "
            "En crisis llame o envie un texto al 988; emergencias 911.",
            "unknown": f"Este numero no esta vinculado a un paciente; {call}. "
            "En crisis llame o envie un texto al 988.",
        }
    call = f"call {phone}" if phone else "call your clinic"
    return {
        "help": f"{clinic}: follow-up texts about your treatment. For help {call}. "
        "In a crisis call or text 988; emergencies 911. Reply STOP to opt out.",
        "ack": f"Thanks, we got your message. Your care team will read it {when}. "
        "In a crisis call or text 988; in an emergency call 911.",
        "unknown": f"This number isn't linked to a patient; {call}. In a crisis call or text 988.",
    }


class _Stale(Exception):
    """A reply's step guard failed: the transaction is rolled back and handled again."""


class _Handler:
    def __init__(
        self,
        session: AsyncSession,
        settings: Settings,
        sms: InboundSms,
        now: datetime,
        db: Database,
        crisis: safety.CrisisMatch | None,
        last_attempt: bool,
    ) -> None:
        self.session = session
        self.crisis = crisis
        self.settings = settings
        self.sms = sms
        self.now = now
        self.db = db
        self.last_attempt = last_attempt
        self.result = InboundResult()
        self.outbound: list[Message] = []
        self.severities: list[Severity] = []

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
        patient, active = await self._read_sender()
        message_id = await record_inbound(
            self.session,
            sid=self.sms.sid,
            phone=self.sms.from_,
            body=self.sms.body,
            patient_id=patient.id if patient else None,
            checkin_id=active.id if active else None,
            now=self.now,
        )
        if message_id is None:
            self.result.duplicate = True
            self.result.route = "duplicate"
            return self.result
        if self.crisis is not None:
            await self._crisis(patient, active, message_id, self.crisis)
        else:
            await self._route(patient, active, message_id)
        # replies are claimed by this process in this transaction: after commit they go out
        # at once without another claiming transaction (a crash leaves them to the worker
        # when the short lease ends)
        claim_in_session(self.outbound, self.now)
        await self.session.flush()
        self.result.outbound_ids.extend(m.id for m in self.outbound)
        self.result.claimed.extend(claimed_of(self.outbound))
        self.result.page_now = any(pages_at_once(s) for s in self.severities)
        return self.result

    async def _read_sender(self) -> tuple[Patient | None, Checkin | None]:
        """The patient who owns the sending number, and their running check-in.

        On PostgreSQL both are locked (FOR NO KEY UPDATE: one patient's replies, and the
        dispatcher's batches, go one at a time, while rows that only refer to the patient
        can still be written); SQLite has one writer.
        """
        phone = Patient.phone == self.sms.from_
        newest = Checkin.started_at.desc()
        if self.db.is_sqlite:
            row = (
                await self.session.execute(
                    select(Patient, Checkin)
                    .outerjoin(Checkin, _ACTIVE)
                    .where(phone)
                    .order_by(newest)
                    .limit(1)
                )
            ).first()
            return (None, None) if row is None else (row[0], row[1])
        both = (
            await self.session.execute(
                select(Patient, Checkin)
                .join(Checkin, _ACTIVE)
                .where(phone)
                .order_by(newest)
                .limit(1)
                .with_for_update(of=[Patient, Checkin], key_share=True)
            )
        ).first()
        if both is not None:
            return both[0], both[1]
        # lock the patient first, then read the check-in after the lock
        patient = await self.session.scalar(
            select(Patient).where(phone).with_for_update(key_share=True)
        )
        if patient is None:
            return None, None
        checkin = await self.session.scalar(
            select(Checkin)
            .where(Checkin.patient_id == patient.id, Checkin.status == CheckinStatus.ACTIVE)
            .order_by(newest)
            .limit(1)
        )
        return patient, checkin

    async def _converse(self, patient: Patient, active: Checkin, message_id: int) -> Applied:
        applied = await resume_checkin(
            session=self.session,
            checkin=active,
            patient=patient,
            settings=self.settings,
            input=Reply(self.sms.body),
            now=self.now,
            message_id=message_id,
            phone=self.sms.from_,
            claim=True,
        )
        if not applied.written and not self.last_attempt:
            raise _Stale
        self.result.claimed.extend(applied.claimed)
        self.result.outbound_ids.extend(applied.ids)
        self.severities.extend(applied.escalations)
        return applied

    async def _crisis(
        self,
        patient: Patient | None,
        active: Checkin | None,
        message_id: int,
        crisis: safety.CrisisMatch,
    ) -> None:
        self.result.route = "crisis"
        log.warning(
            "crisis language (%s, %s) from %s",
            crisis.category,
            crisis.tier,
            mask_phone(self.sms.from_),
        )
        if patient is not None and active is not None and patient.opted_out_at is None:
            applied = await self._converse(patient, active, message_id)
            if applied.escalations:
                return
        # Outside a conversation (or one that could not take it): escalate and answer here.
        who = "a patient" if patient is not None else "an unknown number"
        critical = crisis.tier is safety.Tier.CRITICAL
        severity = Severity.CRITICAL if critical else Severity.HIGH
        raise_escalation(
            session=self.session,
            severity=severity,
            reason=Reason.CRISIS_LANGUAGE if critical else Reason.CONCERNING_LANGUAGE,
            summary=f"{'Crisis' if critical else 'Worrying'} language ({crisis.category}) "
            f"in a text from {who}, outside a check-in.",
            now=self.now,
            patient_id=patient.id if patient else None,
            checkin_id=active.id if active else None,
            message_id=message_id,
        )
        self.severities.append(severity)
        language = patient.language if patient else "en"
        reply = safety.reply_for(
            crisis.tier,
            language,
            self.settings.clinic_name,
            self.settings.clinic_phone,
            page_after_minutes=self.settings.page_high_after_minutes,
        )
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
                await stop_texting(
                    session=self.session,
                    patient=patient,
                    cause=StopCause.STOP,
                    now=self.now,
                    message_id=message_id,
                )
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
            if (await self._converse(patient, active, message_id)).written:
                return
        self.result.route = "patient_message"
        await self._patient_message(patient, message_id, acknowledge=True)

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
        """A text outside any conversation: recorded, acknowledged, and always its own item
        for clinicians (several texts are several items: none is hidden behind another)."""
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
            reason=Reason.PATIENT_MESSAGE,
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


async def handle_inbound(
    db: Database,
    settings: Settings,
    sms: InboundSms,
    now: datetime,
    groups: ReplyGroups | None = None,
) -> InboundResult:
    """Record and act on one inbound message; a repeated ``MessageSid`` changes nothing.

    With ``groups``, a plain reply to a running conversation is written together with
    the others ready at the same moment (``reply_batch``); everything else, and any reply
    the group does not take, is handled here one at a time."""
    crisis = safety.detect(sms.body)
    if groups is not None and crisis is None and keywords.classify(sms.body) is None:
        taken = await groups.submit(Sms(sms.sid, sms.from_, sms.body), now)
        if taken.taken:
            return InboundResult(
                duplicate=taken.duplicate,
                outbound_ids=taken.outbound_ids,
                route="duplicate" if taken.duplicate else "conversation",
                page_now=pages(taken),
                claimed=taken.claimed,
            )
    for attempt in range(1, ATTEMPTS + 1):
        try:
            async with db.write() as session:
                handler = _Handler(session, settings, sms, now, db, crisis, attempt == ATTEMPTS)
                return await handler.run()
        except _Stale:
            log.info(
                "reply from %s met a conversation that moved on; reading again",
                mask_phone(sms.from_),
            )
        except IntegrityError:
            # Two deliveries of one MessageSid raced past each other; the other one won.
            return InboundResult(duplicate=True, route="duplicate")
    raise AssertionError("unreachable: the last attempt never raises _Stale")
