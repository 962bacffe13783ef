"""A whole app on a real database, with the real Twilio client talking to a fake Twilio."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from urllib.parse import urlencode

from aiohttp import ClientResponse, CookieJar, web
from aiohttp.test_utils import TestClient, TestServer, unused_port
from sqlalchemy import select

from bot.app import create_app
from bot.appkeys import BACKGROUND
from bot.clock import FrozenClock
from bot.services import outbox
from bot.services.accounts import NewUser, create_token, create_user
from bot.services.conversations import start_checkin
from bot.services.library_seed import seed_library
from bot.settings import Settings, load_settings
from bot.sms.signature import sign
from bot.sms.transport import Transport
from db.enums import CheckinStatus, Role
from db.models import Checkin, Patient
from db.session import Database
from tests.fakes.twilio_server import FakeTwilio

ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "test-auth-token-0123456789abcdef"
PUBLIC_BASE = "https://care.example.org"
CLINIC_PHONE = "+12025550100"
PASSWORD = "a-long-enough-passphrase"
START = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
_sids = itertools.count(1)


def new_sid() -> str:
    return f"SM{next(_sids):032d}"


def settings_for(db_url: str, twilio_base: str, *, demo: bool = False, **extra: str) -> Settings:
    env = {
        "DATABASE_URL": db_url,
        "SMS_TRANSPORT": "twilio",
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_FROM_NUMBER": "+12025550199",
        "TWILIO_API_BASE": twilio_base,
        "PUBLIC_BASE_URL": PUBLIC_BASE,
        "SECRET_KEY": "k" * 40,
        "CLINIC_NAME": "Test Clinic",
        "CLINIC_PHONE": CLINIC_PHONE,
        "SMS_SEND_TIMEOUT": "1",
        **extra,
    }
    return load_settings(env, demo=demo)


@dataclass
class Harness:
    client: TestClient[web.Request, web.Application]
    db: Database
    clock: FrozenClock
    twilio: FakeTwilio
    settings: Settings
    app: web.Application
    transport: Transport
    phones: itertools.count[int] = field(default_factory=lambda: itertools.count(200))

    # -- webhooks ---------------------------------------------------------------------------
    def signed(
        self, path: str, params: Mapping[str, str], *, url: str | None = None
    ) -> dict[str, str]:
        target = url if url is not None else PUBLIC_BASE + path
        return {
            "X-Twilio-Signature": sign(auth_token=AUTH_TOKEN, url=target, params=dict(params)),
            "Content-Type": "application/x-www-form-urlencoded",
        }

    async def post_form(
        self,
        path: str,
        params: Mapping[str, str],
        *,
        headers: Mapping[str, str] | None = None,
    ) -> ClientResponse:
        hdrs = dict(headers) if headers is not None else self.signed(path, params)
        return await self.client.post(path, data=urlencode(dict(params)), headers=hdrs)

    async def sms(self, sender: str, body: str, sid: str | None = None) -> ClientResponse:
        params = {
            "MessageSid": sid or new_sid(),
            "AccountSid": ACCOUNT_SID,
            "From": sender,
            "To": "+12025550199",
            "Body": body,
            "NumMedia": "0",
        }
        resp = await self.post_form("/twilio/sms", params)
        await self.drain()
        return resp

    async def status(self, sid: str, status: str, code: str | None = None) -> ClientResponse:
        params = {"MessageSid": sid, "MessageStatus": status, "AccountSid": ACCOUNT_SID}
        if code is not None:
            params["ErrorCode"] = code
        return await self.post_form("/twilio/status", params)

    async def drain(self) -> None:
        """Wait for the fast-path sends started by the last requests."""
        for _ in range(100):
            tasks = list(self.app[BACKGROUND].tasks)
            if not tasks:
                return
            await asyncio.gather(*tasks, return_exceptions=True)

    async def send_outbox(self) -> int:
        return await outbox.send(self.db, self.transport, self.clock)

    # -- data -------------------------------------------------------------------------------
    async def patient(
        self, first_name: str = "Maya", *, language: str = "en", phone: str | None = None
    ) -> Patient:
        phone = phone or f"+1202555{next(self.phones):04d}"
        async with self.db.write() as s:
            p = Patient(
                first_name=first_name,
                phone=phone,
                timezone="America/New_York",
                language=language,
                quiet_start=time(21, 0),
                quiet_end=time(8, 0),
                created_at=self.clock.now(),
                updated_at=self.clock.now(),
            )
            s.add(p)
        return p

    async def start(self, patient: Patient, flow: str) -> Checkin:
        """Start a check-in now and send its first message."""
        async with self.db.write() as s:
            c = Checkin(
                patient_id=patient.id,
                flow_key=flow,
                status=CheckinStatus.SCHEDULED,
                due_at=self.clock.now(),
                reminder_after_s=4 * 3600,
                expiry_after_s=24 * 3600,
                created_at=self.clock.now(),
            )
            s.add(c)
            await s.flush()
            p = await s.get(Patient, patient.id)
            assert p is not None
            await start_checkin(
                session=s, checkin=c, patient=p, settings=self.settings, now=self.clock.now()
            )
        await self.send_outbox()
        return c

    async def checkins(self, patient: Patient) -> list[Checkin]:
        async with self.db.read() as s:
            return list(
                (
                    await s.scalars(
                        select(Checkin).where(Checkin.patient_id == patient.id).order_by(Checkin.id)
                    )
                ).all()
            )

    async def user(self, role: Role = Role.CLINICIAN, **extra: object) -> str:
        """A new user's email; the password is ``PASSWORD``."""
        email = f"{role}{next(self.phones)}@example.org"
        async with self.db.write() as s:
            await create_user(
                session=s,
                new=NewUser(email, role, PASSWORD, "Test User", **extra),  # type: ignore[arg-type]
                now=self.clock.now(),
            )
        return email

    async def token(self, role: Role = Role.CLINICIAN) -> str:
        email = await self.user(role)
        async with self.db.write() as s:
            _user, token = await create_token(
                session=s, email=email, label="t", now=self.clock.now()
            )
        return token

    async def login(
        self, email: str, password: str = "", *, forwarded_for: str | None = None
    ) -> ClientResponse:
        """Sign in through the form, as a browser would; the client keeps the cookie.
        ``forwarded_for`` sends ``X-Forwarded-For``, as a reverse proxy would."""
        headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
        page = await self.client.get("/login")
        html = await page.text()
        match = re.search(r'name="login_csrf" value="([^"]+)"', html)
        assert match, html
        return await self.client.post(
            "/login",
            data={
                "email": email,
                "password": password or PASSWORD,
                "login_csrf": match.group(1),
                "next": "/",
            },
            headers=headers,
            allow_redirects=False,
        )

    async def csrf(self, path: str = "/") -> str:
        html = await (await self.client.get(path)).text()
        match = re.search(r'name="csrf_token" value="([^"]+)"', html)
        assert match, html
        return match.group(1)


@asynccontextmanager
async def harness(
    db_url: str, *, demo: bool = False, **settings_extra: str
) -> AsyncIterator[Harness]:
    twilio = FakeTwilio()
    await twilio.start()
    clock = FrozenClock(START)
    db = Database(db_url)
    async with db.write() as s:
        await seed_library(session=s, now=clock.now())
    settings = settings_for(db_url, twilio.base_url, demo=demo, **settings_extra)
    holder: dict[str, Transport] = {}

    def make_transport() -> Transport:
        from bot.sms.factory import build_transport

        holder["t"] = build_transport(settings)
        return holder["t"]

    app = create_app(settings, database=db, clock=clock, transport=make_transport)
    port = unused_port()
    jar = CookieJar(unsafe=True, treat_as_secure_origin=[f"http://127.0.0.1:{port}"])
    client = TestClient(TestServer(app, host="127.0.0.1", port=port), cookie_jar=jar)
    await client.start_server()
    try:
        yield Harness(client, db, clock, twilio, settings, app, holder["t"])
    finally:
        await client.close()
        await twilio.close()
        await db.dispose()
