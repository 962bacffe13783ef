"""``aftercare demo``: SQLite, console SMS, demo accounts and patients, web + worker.

The demo data is made the way real data is: patients are enrolled, treatments recorded and
check-ins started through the services, and every patient reply goes through
``handle_inbound`` at a past moment (an explicit ``now``), so transcripts, answers, scores and
escalations all come from the engine. Outbound texts are "sent" by the console transport at
the moment they were written.

Three patients, at three stages:

* Maya, mid-induction on ``ketamine_induction``: three infusions over the last ten days and
  PHQ-9 totals rising 8 → 11 → 16, so the relapse rule fired (an open high
  ``possible_relapse``, next to the moderate ``phq9_moderately_severe``).
* Sam, on ``esketamine_maintenance``, who answered PHQ-9 item 9 positively minutes ago: an
  open high ``item9_positive`` and an active C-SSRS screener waiting for his answer.
* Lena, on ``esketamine_maintenance``, who stopped responding: her last two check-ins
  expired unanswered, so the worker's silence rule raised a moderate ``not_responding``.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

from bot.clock import FrozenClock
from bot.migrations import upgrade_async
from bot.server import serve
from bot.services import dispatch, outbox, scheduling
from bot.services.accounts import NewUser, create_user
from bot.services.conversations import start_checkin
from bot.services.inbound import InboundSms, handle_inbound
from bot.services.library_seed import seed_library
from bot.settings import Settings, load_settings
from bot.sms.console import ConsoleTransport
from db.enums import CheckinStatus, PatientStatus, Role
from db.models import Checkin, Patient, User
from db.session import Database

DEMO_PASSWORD = "aftercare-demo-2026"  # noqa: S105 - printed demo login
DEMO_USERS = (
    NewUser("admin@demo.aftercare", Role.ADMIN, DEMO_PASSWORD, "Ada Admin"),
    NewUser(
        "nurse@demo.aftercare", Role.CLINICIAN, DEMO_PASSWORD, "Nia Nurse", "+12025550101", True
    ),
    NewUser("doctor@demo.aftercare", Role.CLINICIAN, DEMO_PASSWORD, "Dev Doctor", "+12025550102"),
)
CLINIC_NUMBER = "+12025550100"
# the demo's own file, in the directory it is started from; DATABASE_URL is never used
DEMO_DATABASE_URL = "sqlite+aiosqlite:///aftercare-demo.db"
"""The clinic's texting number in the demo (the ``To`` of the demo phone's texts)."""


@dataclass(frozen=True, slots=True)
class DemoPatient:
    first_name: str
    phone: str
    timezone: str
    story: str


MAYA = DemoPatient(
    "Maya",
    "+12025550111",
    "America/New_York",
    "mid-induction (ketamine), PHQ-9 rising 8 → 11 → 16: possible relapse",
)
SAM = DemoPatient(
    "Sam",
    "+12025550112",
    "America/Chicago",
    "just answered PHQ-9 item 9 positively; the C-SSRS screener is waiting for him",
)
LENA = DemoPatient(
    "Lena",
    "+12025550113",
    "Europe/Berlin",
    "stopped responding: her last two check-ins expired",
)
DEMO_PATIENTS = (MAYA, SAM, LENA)

# Replies, one per question, in the order the flows ask them.
# BP signs now, BP signs since the clinic, dissociation, sleepy, nausea, drove
POST_SESSION_OK = ("no", "no", "no", "no", "no", "no")


def post_session_replies(mood: int) -> tuple[str, ...]:
    return (*POST_SESSION_OK, str(mood), "no")


def phq9_replies(items: Sequence[int]) -> tuple[str, ...]:
    assert len(items) == 9
    return tuple(str(i) for i in items)


def demo_settings(
    env: Mapping[str, str] | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    database_url: str = DEMO_DATABASE_URL,
) -> Settings:
    """Demo settings: console SMS, a random Twilio token and secret key unless given.

    The database is the demo's own SQLite file, never ``DATABASE_URL``: the demo adds
    users with a published password and shows transcripts on its demo phone page, which
    must never happen on a clinic's real database. ``PUBLIC_BASE_URL`` defaults to the
    address the demo listens on, so the demo phone's signatures, page links and paging
    texts point at this server.
    """
    values = dict(os.environ if env is None else env)
    values["DATABASE_URL"] = database_url
    values.setdefault("CLINIC_NAME", "Aftercare Demo Clinic")
    values.setdefault("CLINIC_PHONE", CLINIC_NUMBER)
    values["SMS_TRANSPORT"] = "console"
    values.setdefault("TWILIO_AUTH_TOKEN", secrets.token_hex(16))
    values.setdefault("SECRET_KEY", secrets.token_urlsafe(48))
    if host is not None:
        values["HOST"] = host
    if port is not None:
        values["PORT"] = str(port)
    if not values.get("PUBLIC_BASE_URL", "").strip():
        listen = values.get("HOST", "").strip() or "127.0.0.1"
        if listen in ("0.0.0.0", "::", "localhost"):  # noqa: S104 - only read, never bound
            listen = "127.0.0.1"
        elif ":" in listen:
            listen = f"[{listen}]"
        values["PUBLIC_BASE_URL"] = f"http://{listen}:{values.get('PORT', '').strip() or 8080}"
    return load_settings(values, demo=True)


# -- seeding -------------------------------------------------------------------------------------


def _local(patient: DemoPatient, now: datetime, days_ago: int, at: time) -> datetime:
    """``at`` on the patient's local calendar ``days_ago`` days before ``now``, in UTC."""
    zone = ZoneInfo(patient.timezone)
    day = now.astimezone(zone).date() - timedelta(days=days_ago)
    return datetime.combine(day, at, tzinfo=zone).astimezone(UTC)


class _Seeder:
    """Drives the real services at past moments for one database."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.transport = ConsoleTransport()

    async def patient(self, who: DemoPatient, created_at: datetime) -> int:
        async with self.db.write() as session:
            row = Patient(
                first_name=who.first_name,
                phone=who.phone,
                timezone=who.timezone,
                language="en",
                quiet_start=time(21, 0),
                quiet_end=time(8, 0),
                status=PatientStatus.ACTIVE,
                created_at=created_at,
                updated_at=created_at,
            )
            session.add(row)
            await session.flush()
            return row.id

    async def enroll(
        self, patient_id: int, protocol: str, start_at: datetime, now: datetime
    ) -> None:
        """Enrolled today, starting ``start_at``: only the schedule from now on is materialised
        (nothing long past turns into a missed check-in)."""
        async with self.db.write() as session:
            patient = await session.get(Patient, patient_id)
            assert patient is not None
            await scheduling.enroll(
                session=session, patient=patient, protocol_key=protocol, start_at=start_at, now=now
            )

    async def treatment(self, patient_id: int, kind: str, at: datetime) -> list[int]:
        """Record a treatment when it was given; returns the check-ins it scheduled."""
        async with self.db.write() as session:
            patient = await session.get(Patient, patient_id)
            assert patient is not None
            _t, created = await scheduling.record_treatment(
                session=session, patient=patient, kind=kind, administered_at=at, now=at
            )
            return [c.id for c in created]

    async def adhoc(self, patient_id: int, flow: str, at: datetime) -> int:
        async with self.db.write() as session:
            patient = await session.get(Patient, patient_id)
            assert patient is not None
            row = await scheduling.adhoc_checkin(
                session=session, patient=patient, flow_key=flow, due_at=at, now=at
            )
            return row.id

    async def scheduled(self, checkin_ids: list[int], flow: str) -> int:
        async with self.db.read() as session:
            found = await session.scalar(
                select(Checkin.id).where(Checkin.id.in_(checkin_ids), Checkin.flow_key == flow)
            )
        assert found is not None, f"no {flow} check-in was scheduled"
        return found

    async def start(self, checkin_id: int, at: datetime) -> None:
        """Start a check-in at ``at`` (what the dispatcher does when it is due) and send it."""
        async with self.db.write() as session:
            checkin = await session.get(Checkin, checkin_id)
            assert checkin is not None and checkin.status is CheckinStatus.SCHEDULED
            patient = await session.get(Patient, checkin.patient_id)
            assert patient is not None
            applied = await start_checkin(
                session=session, checkin=checkin, patient=patient, settings=self.settings, now=at
            )
            await session.flush()
            ids = applied.ids
        await outbox.send(self.db, self.transport, FrozenClock(at), ids=ids)

    async def text(self, who: DemoPatient, body: str, at: datetime) -> None:
        """The patient texts ``body`` at ``at``: the webhook's own service, then the replies."""
        sms = InboundSms(
            sid="SMdemo" + uuid.uuid4().hex, from_=who.phone, to=CLINIC_NUMBER, body=body
        )
        result = await handle_inbound(self.db, self.settings, sms, at)
        await outbox.send_claimed(self.db, self.transport, FrozenClock(at), result.claimed)

    async def conversation(
        self, who: DemoPatient, checkin_id: int, at: datetime, replies: Sequence[str]
    ) -> datetime:
        """Start a check-in and answer it a couple of minutes per reply; returns the last time."""
        await self.start(checkin_id, at)
        for reply in replies:
            at += timedelta(minutes=2)
            await self.text(who, reply, at)
        return at

    async def remind_and_expire(self, checkin_id: int) -> None:
        """Let an unanswered check-in run out: the worker's reminder, then its expiry."""
        async with self.db.read() as session:
            checkin = await session.get(Checkin, checkin_id)
            assert checkin is not None and checkin.expires_at is not None
            remind_at, expires_at = checkin.reminder_at, checkin.expires_at
        if remind_at is not None and remind_at < expires_at:
            result = await dispatch.remind_due(self.db, self.settings, remind_at)
            await outbox.send(
                self.db, self.transport, FrozenClock(remind_at), ids=result.outbound_ids
            )
        result = await dispatch.expire_due(self.db, self.settings, expires_at)
        await outbox.send(self.db, self.transport, FrozenClock(expires_at), ids=result.outbound_ids)


async def _seed_maya(s: _Seeder, now: datetime) -> None:
    """Everything ends two days ago or earlier, so no recurring check-in from the schedule
    (materialised from a day ago on) is due yet when a conversation ends."""
    who = MAYA
    at = _local
    pid = await s.patient(who, at(who, now, 12, time(15, 0)))
    await s.enroll(pid, "ketamine_induction", at(who, now, 10, time(8, 0)), now)
    # infusion 1: the day-after check, a PHQ-9 of 8, the mood check two days after
    created = await s.treatment(pid, "ketamine infusion", at(who, now, 10, time(9, 0)))
    post, mood = (
        await s.scheduled(created, "post_session"),
        await s.scheduled(created, "daily_mood"),
    )
    await s.conversation(who, post, at(who, now, 9, time(9, 0)), post_session_replies(6))
    phq9 = await s.adhoc(pid, "phq9", at(who, now, 9, time(18, 0)))
    await s.conversation(
        who, phq9, at(who, now, 9, time(18, 0)), phq9_replies([1, 1, 1, 1, 1, 1, 1, 1, 0])
    )
    await s.conversation(who, mood, at(who, now, 8, time(9, 0)), ["6"])
    # infusion 2
    created = await s.treatment(pid, "ketamine infusion", at(who, now, 8, time(11, 0)))
    post, mood = (
        await s.scheduled(created, "post_session"),
        await s.scheduled(created, "daily_mood"),
    )
    await s.conversation(who, post, at(who, now, 7, time(11, 0)), post_session_replies(5))
    await s.conversation(who, mood, at(who, now, 6, time(11, 0)), ["5"])
    # infusion 3; then the PHQ-9 rises to 11, and to 16: 5 above the best since this infusion
    created = await s.treatment(pid, "ketamine infusion", at(who, now, 6, time(13, 0)))
    post, mood = (
        await s.scheduled(created, "post_session"),
        await s.scheduled(created, "daily_mood"),
    )
    await s.conversation(who, post, at(who, now, 5, time(13, 0)), post_session_replies(4))
    await s.conversation(who, mood, at(who, now, 4, time(13, 0)), ["4"])
    phq9 = await s.adhoc(pid, "phq9", at(who, now, 4, time(18, 0)))
    await s.conversation(
        who, phq9, at(who, now, 4, time(18, 0)), phq9_replies([2, 2, 1, 1, 1, 2, 1, 1, 0])
    )
    phq9 = await s.adhoc(pid, "phq9", at(who, now, 2, time(18, 0)))
    await s.conversation(
        who, phq9, at(who, now, 2, time(18, 0)), phq9_replies([2, 3, 2, 2, 2, 2, 2, 1, 0])
    )


async def _seed_lena(s: _Seeder, now: datetime) -> None:
    who = LENA
    at = _local
    pid = await s.patient(who, at(who, now, 40, time(11, 0)))
    await s.enroll(pid, "esketamine_maintenance", at(who, now, 14, time(9, 0)), now)
    created = await s.treatment(pid, "esketamine session", at(who, now, 9, time(10, 0)))
    await s.conversation(
        who,
        await s.scheduled(created, "post_session"),
        at(who, now, 8, time(10, 0)),
        post_session_replies(6),
    )
    phq9 = await s.adhoc(pid, "phq9", at(who, now, 7, time(10, 0)))
    await s.conversation(
        who, phq9, at(who, now, 7, time(10, 0)), phq9_replies([1, 1, 1, 1, 1, 1, 1, 0, 0])
    )
    # then silence: two mood checks go out, are reminded, and expire unanswered
    for days_ago in (5, 3):
        mood = await s.adhoc(pid, "daily_mood", at(who, now, days_ago, time(10, 0)))
        await s.start(mood, at(who, now, days_ago, time(10, 0)))
        await s.remind_and_expire(mood)


async def _seed_sam(s: _Seeder, now: datetime) -> None:
    who = SAM
    at = _local
    pid = await s.patient(who, at(who, now, 30, time(14, 0)))
    await s.enroll(pid, "esketamine_maintenance", at(who, now, 21, time(9, 0)), now)
    created = await s.treatment(pid, "esketamine session", at(who, now, 8, time(10, 0)))
    await s.conversation(
        who,
        await s.scheduled(created, "post_session"),
        at(who, now, 7, time(10, 0)),
        post_session_replies(5),
    )
    phq9 = await s.adhoc(pid, "phq9", at(who, now, 6, time(10, 0)))
    await s.conversation(
        who, phq9, at(who, now, 6, time(10, 0)), phq9_replies([2, 2, 1, 1, 1, 2, 1, 1, 0])
    )
    # minutes ago: a PHQ-9 whose item 9 is "several days" hands over to the C-SSRS screener
    started = now - timedelta(minutes=30)
    phq9 = await s.adhoc(pid, "phq9", started)
    await s.conversation(who, phq9, started, phq9_replies([2, 2, 2, 1, 2, 2, 1, 1, 1]))


SCENARIOS = ((MAYA, _seed_maya), (LENA, _seed_lena), (SAM, _seed_sam))


class NotADemoDatabase(RuntimeError):
    """The database has users the demo did not create: it is somebody's real data."""


async def seed_demo(db: Database, settings: Settings, now: datetime) -> None:
    """Idempotent: running the demo twice keeps one copy of everything.

    A patient whose phone number is already there is left as it is (their story was told).
    Raises :class:`NotADemoDatabase`, changing nothing, on a database with other users.
    """
    async with db.write() as session:
        existing = set((await session.scalars(select(User.email))).all())
        foreign = existing - {u.email for u in DEMO_USERS}
        if foreign:
            raise NotADemoDatabase(
                f"{len(foreign)} user(s) here were not made by the demo; it runs only on its "
                "own database. Move or delete the demo's file, or run `aftercare serve` instead."
            )
        await seed_library(session=session, now=now)
        for new in DEMO_USERS:
            if new.email not in existing:
                await create_user(session=session, new=new, now=now)
        phones = set((await session.scalars(select(Patient.phone))).all())
    seeder = _Seeder(db, settings)
    for who, scenario in SCENARIOS:
        if who.phone not in phones:
            await scenario(seeder, now)


def banner(settings: Settings) -> str:
    base = settings.public_base_url
    width = max(len(u.email) for u in DEMO_USERS)
    return "\n".join(
        [
            "",
            "aftercare demo is running (SQLite, console SMS transport; Ctrl-C stops it)",
            "",
            f"  sign in:      {base}/login",
            f"  password:     {DEMO_PASSWORD}   (the same for every demo login)",
            *(
                f"    {u.email:<{width}}  {u.name} ({u.role}"
                + (", on call" if u.on_call else "")
                + ")"
                for u in DEMO_USERS
            ),
            "",
            f"  queue:        {base}/",
            f"  patients:     {base}/patients",
            f"  flows admin:  {base}/admin/flows   (admins)",
            f"  demo phone:   {base}/demo/phone   (text as a patient, see the bot's replies)",
            f"  health:       {base}/healthz",
            f"  metrics:      {base}/metrics   (from this machine only)",
            f"  API schema:   {base}/api/v1/openapi.json",
            f"  database:     {settings.database_url}",
            "",
            "  demo patients:",
            *(f"    {p.first_name:<5} {p.phone}  {p.story}" for p in DEMO_PATIENTS),
            "",
        ]
    )


async def run_demo(*, host: str | None, port: int | None) -> None:
    settings = demo_settings(host=host, port=port)
    await upgrade_async(settings.database_url)
    db = Database(settings.database_url)
    try:
        await seed_demo(db, settings, datetime.now(UTC))
    finally:
        await db.dispose()

    async def announce() -> None:
        print(banner(settings), flush=True)

    await serve(settings, with_worker=True, on_started=announce)
