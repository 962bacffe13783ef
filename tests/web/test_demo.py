"""``aftercare demo``: the seeded story, and the demo phone through Twilio's webhook path."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import ClientResponse, CookieJar, web
from aiohttp.test_utils import TestClient, TestServer, unused_port
from sqlalchemy import func, select

from bot.app import create_app
from bot.appkeys import BACKGROUND
from bot.demo import (
    DEMO_DATABASE_URL,
    DEMO_PASSWORD,
    LENA,
    MAYA,
    SAM,
    NotADemoDatabase,
    demo_settings,
    seed_demo,
)
from bot.services.accounts import NewUser, create_user
from bot.settings import Settings
from bot.web.api.errors import Handler
from db.enums import CheckinStatus, Direction, EscalationStatus, MessageStatus, Role, Severity
from db.models import (
    Answer,
    Base,
    Checkin,
    Escalation,
    Message,
    Patient,
    Score,
    Treatment,
    User,
)
from db.session import Database

AUTH_TOKEN = "demo-test-auth-token-0123456789ab"
PUBLIC_BASE = "https://care.example.org"  # not where the app listens: signatures use this
NURSE = "nurse@demo.aftercare"
NOW = datetime(2026, 3, 9, 14, 0, tzinfo=UTC)  # a Monday, the day after US clocks moved


def _settings(db_url: str, port: int, *, demo: bool = True) -> Settings:
    settings = demo_settings(
        {
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "SECRET_KEY": "d" * 40,
            "PUBLIC_BASE_URL": PUBLIC_BASE,
        },
        host="127.0.0.1",
        port=port,
        database_url=db_url,
    )
    return settings if demo else settings.with_overrides(demo=False)


async def _count(db: Database, model: type[Base]) -> int:
    async with db.read() as s:
        return int(await s.scalar(select(func.count()).select_from(model)) or 0)


async def _patient(db: Database, phone: str) -> Patient:
    async with db.read() as s:
        p = await s.scalar(select(Patient).where(Patient.phone == phone))
    assert p is not None
    return p


async def _open(db: Database, patient_id: int) -> set[tuple[str, Severity]]:
    async with db.read() as s:
        rows = (
            await s.scalars(
                select(Escalation).where(
                    Escalation.patient_id == patient_id,
                    Escalation.status == EscalationStatus.OPEN,
                )
            )
        ).all()
    return {(e.reason, e.severity) for e in rows}


# -- the seed ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "now",
    [
        NOW,
        datetime(2026, 3, 31, 6, 0, tzinfo=UTC),  # a Tuesday morning after Europe's change
        datetime(2026, 11, 1, 23, 30, tzinfo=UTC),  # a Sunday evening, US clocks went back
    ],
    ids=["monday-after-us-dst", "tuesday-after-eu-dst", "sunday-us-dst-end"],
)
async def test_seed_creates_the_three_stories_once(db_url: str, now: datetime) -> None:
    db = Database(db_url)
    try:
        settings = _settings(db_url, unused_port())
        await seed_demo(db, settings, now)
        tables: list[type[Base]] = [
            User,
            Patient,
            Treatment,
            Checkin,
            Message,
            Answer,
            Score,
            Escalation,
        ]
        counts = {m.__name__: await _count(db, m) for m in tables}

        async with db.read() as s:
            users = {u.email: u for u in (await s.scalars(select(User))).all()}
            assert {(u.name, u.role, u.on_call) for u in users.values()} == {
                ("Ada Admin", Role.ADMIN, False),
                ("Nia Nurse", Role.CLINICIAN, True),
                ("Dev Doctor", Role.CLINICIAN, False),
            }
            assert users[NURSE].phone
            names = set((await s.scalars(select(Patient.first_name))).all())
            assert names == {"Maya", "Sam", "Lena"}
            # everything happened in the past, and every patient text came through inbound
            for model in (Message, Score, Escalation, Answer):
                latest = await s.scalar(select(func.max(model.created_at)))
                assert latest is not None and latest <= now, model
            sids = (
                await s.scalars(
                    select(Message.provider_sid).where(Message.direction == Direction.IN)
                )
            ).all()
            assert sids and all(sid and sid.startswith("SMdemo") for sid in sids)
            unsent = await s.scalar(
                select(func.count())
                .select_from(Message)
                .where(Message.direction == Direction.OUT, Message.status != MessageStatus.SENT)
            )
            assert unsent == 0

        # Maya: mid-induction, PHQ-9 rising 8 → 11 → 16, the relapse rule fired
        maya = await _patient(db, MAYA.phone)
        async with db.read() as s:
            treated = (
                await s.scalars(
                    select(Treatment.administered_at)
                    .where(Treatment.patient_id == maya.id)
                    .order_by(Treatment.administered_at)
                )
            ).all()
            totals = (
                await s.scalars(
                    select(Score.total)
                    .where(Score.patient_id == maya.id, Score.instrument == "phq9")
                    .order_by(Score.created_at)
                )
            ).all()
            active = await s.scalar(
                select(func.count())
                .select_from(Checkin)
                .where(Checkin.patient_id == maya.id, Checkin.status == CheckinStatus.ACTIVE)
            )
        assert len(treated) == 3
        assert all(now - timedelta(days=11) < t < now for t in treated)
        assert list(totals) == [8, 11, 16]
        assert active == 0
        assert await _open(db, maya.id) == {
            ("possible_relapse", Severity.HIGH),
            ("phq9_moderately_severe", Severity.MODERATE),
        }

        # Sam: item 9 answered positively minutes ago; the C-SSRS waits for his answer
        sam = await _patient(db, SAM.phone)
        assert await _open(db, sam.id) == {("item9_positive", Severity.HIGH)}
        async with db.read() as s:
            checkin = await s.scalar(
                select(Checkin).where(
                    Checkin.patient_id == sam.id, Checkin.status == CheckinStatus.ACTIVE
                )
            )
            last_out = await s.scalar(
                select(Message)
                .where(Message.patient_id == sam.id, Message.direction == Direction.OUT)
                .order_by(Message.id.desc())
                .limit(1)
            )
            q9 = await s.scalar(
                select(Answer)
                .join(Checkin, Checkin.id == Answer.checkin_id)
                .where(Checkin.patient_id == sam.id, Answer.question_key == "q9")
                .order_by(Answer.id.desc())
                .limit(1)
            )
        assert checkin is not None and checkin.flow_key == "cssrs_screen"
        assert checkin.started_at is not None
        assert now - timedelta(hours=1) < checkin.started_at < now
        assert last_out is not None and "wished you were dead" in last_out.body
        assert q9 is not None and q9.value == 1 and q9.raw_text == "1"

        # Lena: two check-ins expired unanswered; the silence rule raised "not responding"
        lena = await _patient(db, LENA.phone)
        assert await _open(db, lena.id) == {("not_responding", Severity.MODERATE)}
        async with db.read() as s:
            expired = (
                await s.scalars(
                    select(Checkin).where(
                        Checkin.patient_id == lena.id, Checkin.status == CheckinStatus.EXPIRED
                    )
                )
            ).all()
            assert len(expired) == 2
            first_silence = min(c.started_at for c in expired if c.started_at)
            late = await s.scalar(
                select(func.count())
                .select_from(Message)
                .where(
                    Message.patient_id == lena.id,
                    Message.direction == Direction.IN,
                    Message.created_at >= first_silence,
                )
            )
            assert late == 0
            assert all(c.reminder_sent_at is not None for c in expired)

        # no other open escalation anywhere
        async with db.read() as s:
            assert (
                await s.scalar(
                    select(func.count())
                    .select_from(Escalation)
                    .where(Escalation.status != EscalationStatus.RESOLVED)
                )
                == 4
            )

        # idempotent: a second run adds nothing
        await seed_demo(db, settings, now + timedelta(minutes=5))
        assert {m.__name__: await _count(db, m) for m in tables} == counts
    finally:
        await db.dispose()


# -- the demo phone ------------------------------------------------------------------------------


@dataclass
class Demo:
    client: TestClient[web.Request, web.Application]
    db: Database
    app: web.Application
    settings: Settings
    webhook_calls: list[tuple[str, str, bool, int]]

    async def drain(self) -> None:
        for _ in range(100):
            tasks = list(self.app[BACKGROUND].tasks)
            if not tasks:
                return
            await asyncio.gather(*tasks, return_exceptions=True)

    async def login(self, email: str = NURSE) -> None:
        html = await (await self.client.get("/login")).text()
        match = re.search(r'name="login_csrf" value="([^"]+)"', html)
        assert match, html
        resp = await self.client.post(
            "/login",
            data={
                "email": email,
                "password": DEMO_PASSWORD,
                "login_csrf": match.group(1),
                "next": "/",
            },
            allow_redirects=False,
        )
        assert resp.status == 303, await resp.text()

    async def csrf(self, path: str) -> str:
        html = await (await self.client.get(path)).text()
        match = re.search(r'name="csrf_token" value="([^"]+)"', html)
        assert match, html
        return match.group(1)


async def _demo(db_url: str, *, demo: bool = True) -> AsyncIterator[Demo]:
    port = unused_port()
    settings = _settings(db_url, port, demo=demo)
    db = Database(db_url)
    await seed_demo(db, settings, datetime.now(UTC))
    calls: list[tuple[str, str, bool, int]] = []

    @web.middleware
    async def watch(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Notes each webhook call: where from, whether signed, and the app's answer."""
        if not request.path.startswith("/twilio/"):
            return await handler(request)
        signed = bool(request.headers.get("X-Twilio-Signature"))
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            calls.append((request.path, request.remote or "", signed, exc.status))
            raise
        calls.append((request.path, request.remote or "", signed, response.status))
        return response

    def extra(app: web.Application) -> None:
        app.middlewares.insert(0, watch)

    app = create_app(settings, database=db, extra_setup=extra)
    jar = CookieJar(unsafe=True, treat_as_secure_origin=[f"http://127.0.0.1:{port}"])
    client = TestClient(TestServer(app, host="127.0.0.1", port=port), cookie_jar=jar)
    await client.start_server()
    try:
        yield Demo(client, db, app, settings, calls)
    finally:
        await client.close()
        await db.dispose()


@pytest.fixture
async def demo(db_url: str) -> AsyncIterator[Demo]:
    async for d in _demo(db_url):
        yield d


async def _send(d: Demo, phone: str, body: str, csrf: str | None) -> ClientResponse:
    data = {"phone": phone, "body": body}
    if csrf is not None:
        data["csrf_token"] = csrf
    return await d.client.post("/demo/phone/send", data=data, allow_redirects=False)


async def _inbound(d: Demo, phone: str, body: str) -> list[Message]:
    async with d.db.read() as s:
        return list(
            (
                await s.scalars(
                    select(Message).where(
                        Message.direction == Direction.IN,
                        Message.phone == phone,
                        Message.body == body,
                    )
                )
            ).all()
        )


async def test_demo_phone_is_a_404_outside_demo_mode(db_url: str) -> None:
    async for d in _demo(db_url, demo=False):
        await d.login()
        for path in ("/demo/phone", f"/demo/phone/messages?phone={MAYA.phone}"):
            resp = await d.client.get(path, allow_redirects=False)
            assert resp.status == 404, path
        resp = await d.client.post("/demo/phone/send", data={"phone": MAYA.phone, "body": "hi"})
        assert resp.status == 404
        assert "/demo/phone" not in await (await d.client.get("/")).text()


async def test_demo_phone_needs_a_signed_in_user(demo: Demo) -> None:
    resp = await demo.client.get("/demo/phone", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"].startswith("/login")
    resp = await demo.client.get("/demo/phone/messages", params={"phone": MAYA.phone})
    assert resp.status == 401
    resp = await demo.client.post(
        "/demo/phone/send", data={"phone": MAYA.phone, "body": "hi"}, allow_redirects=False
    )
    assert resp.status == 303 and resp.headers["Location"].startswith("/login")
    assert await _inbound(demo, MAYA.phone, "hi") == []


async def test_a_text_from_the_demo_phone_goes_through_the_signed_webhook(demo: Demo) -> None:
    await demo.login()
    page = await demo.client.get("/demo/phone", params={"phone": SAM.phone})
    html = await page.text()
    assert page.status == 200
    assert "wished you were dead" in html  # the C-SSRS question waiting for Sam
    assert 'data-refresh="/demo/phone/messages?phone=' in html
    csrf = await demo.csrf("/demo/phone")

    resp = await _send(demo, SAM.phone, "No", csrf)
    assert resp.status == 303, await resp.text()
    target = urlsplit(resp.headers["Location"])
    assert target.path == "/demo/phone" and parse_qs(target.query) == {"phone": [SAM.phone]}
    # Twilio's path: /twilio/sms over loopback, signed, answered 200
    assert demo.webhook_calls == [("/twilio/sms", "127.0.0.1", True, 200)]
    rows = await _inbound(demo, SAM.phone, "No")
    assert len(rows) == 1
    sam = await _patient(demo.db, SAM.phone)
    assert rows[0].patient_id == sam.id
    assert rows[0].provider_sid and rows[0].provider_sid.startswith("SMdemo")
    await demo.drain()
    # the bot's reply (the next C-SSRS question) is on the phone
    fragment = await (
        await demo.client.get("/demo/phone/messages", params={"phone": SAM.phone})
    ).text()
    assert "<html" not in fragment
    assert fragment.index(">No<") < fragment.index("thoughts of killing yourself")

    # the same words twice are two texts (a fresh MessageSid each time)
    await _send(demo, SAM.phone, "No", csrf)
    assert len(await _inbound(demo, SAM.phone, "No")) == 2


async def test_a_bad_signature_is_refused_by_the_webhook(
    demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The webhook really checks: a wrong signature is a 403 there, shown on the phone."""
    await demo.login()
    csrf = await demo.csrf("/demo/phone")
    monkeypatch.setattr("bot.sms.signature.sign", lambda **_kw: "not-a-signature")
    resp = await _send(demo, MAYA.phone, "feeling a bit off today", csrf)
    assert resp.status == 303
    assert resp.headers["Location"].endswith("error=demo_refused")
    assert demo.webhook_calls == [("/twilio/sms", "127.0.0.1", True, 403)]
    assert await _inbound(demo, MAYA.phone, "feeling a bit off today") == []


async def test_a_forged_post_without_csrf_is_refused(demo: Demo) -> None:
    await demo.login()
    resp = await _send(demo, MAYA.phone, "feeling a bit off today", None)
    assert resp.status == 403
    resp = await _send(demo, MAYA.phone, "feeling a bit off today", "forged-token")
    assert resp.status == 403
    assert demo.webhook_calls == []
    assert await _inbound(demo, MAYA.phone, "feeling a bit off today") == []


async def test_an_unknown_number_and_a_check_in_sent_now(demo: Demo) -> None:
    await demo.login()
    csrf = await demo.csrf("/demo/phone")
    stranger = "+12025550177"
    resp = await _send(demo, stranger, "hello there", csrf)
    assert resp.status == 303
    assert len(await _inbound(demo, stranger, "hello there")) == 1
    await demo.drain()
    fragment = await (
        await demo.client.get("/demo/phone/messages", params={"phone": stranger})
    ).text()
    assert "linked to a patient" in fragment

    maya = await _patient(demo.db, MAYA.phone)
    resp = await demo.client.post(
        "/demo/phone/checkin",
        data={"csrf_token": csrf, "phone": MAYA.phone, "flow": "phq9"},
        allow_redirects=False,
    )
    assert resp.status == 303 and "started" in resp.headers["Location"]
    await demo.drain()
    async with demo.db.read() as s:
        active = await s.scalar(
            select(Checkin).where(
                Checkin.patient_id == maya.id, Checkin.status == CheckinStatus.ACTIVE
            )
        )
        first = await s.scalar(
            select(Message)
            .where(Message.patient_id == maya.id, Message.direction == Direction.OUT)
            .order_by(Message.id.desc())
            .limit(1)
        )
    assert active is not None and active.flow_key == "phq9"
    assert first is not None and first.body.startswith("1/9") and first.status is MessageStatus.SENT
    # and Maya answers on the phone: the engine moves to question 2
    await _send(demo, MAYA.phone, "2", csrf)
    await demo.drain()
    fragment = await (
        await demo.client.get("/demo/phone/messages", params={"phone": MAYA.phone})
    ).text()
    assert "2/9 Feeling down" in fragment


# --- the demo keeps to its own database -----------------------------------------------------


def test_demo_never_uses_database_url() -> None:
    settings = demo_settings({"DATABASE_URL": "postgresql+asyncpg://clinic@db.internal/prod"})
    assert settings.database_url == DEMO_DATABASE_URL
    assert settings.database_url.startswith("sqlite+aiosqlite:///")


def test_demo_honours_host_and_port() -> None:
    settings = demo_settings({"HOST": "0.0.0.0", "PORT": "8093"})
    assert (settings.host, settings.port) == ("0.0.0.0", 8093)
    assert settings.public_base_url == "http://127.0.0.1:8093"


async def test_demo_refuses_a_database_with_users_it_did_not_create(db_url: str) -> None:
    db = Database(db_url)
    try:
        async with db.write() as session:
            await create_user(
                session=session,
                new=NewUser("head.nurse@clinic.example", Role.ADMIN, "amber walrus lantern 7"),
                now=NOW,
            )
        settings = _settings(db_url, unused_port())
        with pytest.raises(NotADemoDatabase, match="not made by the demo"):
            await seed_demo(db, settings, NOW)
        async with db.read() as session:
            assert await session.scalar(select(func.count()).select_from(User)) == 1
            assert await session.scalar(select(func.count()).select_from(Patient)) == 0
    finally:
        await db.dispose()


def test_the_demo_command_refuses_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.cli import main
    from bot.migrations import upgrade

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'clinic.db'}")
    url = DEMO_DATABASE_URL  # relative: the file in the working directory
    upgrade(url)

    async def add_user() -> None:
        db = Database(url)
        try:
            async with db.write() as session:
                await create_user(
                    session=session,
                    new=NewUser("someone@clinic.example", Role.CLINICIAN, "amber walrus lantern 7"),
                    now=NOW,
                )
        finally:
            await db.dispose()

    asyncio.run(add_user())
    assert main(["demo", "--port", str(unused_port())]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not made by the demo" in err
    assert not (tmp_path / "clinic.db").exists()  # DATABASE_URL was never touched


async def test_the_demo_console_prints_the_text_it_would_send(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The operator sees each text, the number masked; outside the demo only the log line."""
    from bot.sms.factory import build_transport

    demo = build_transport(demo_settings({"TWILIO_AUTH_TOKEN": AUTH_TOKEN}))
    await demo.send(to="+12025550143", body="Hi Maya, how is your mood today?")
    printed = capsys.readouterr().out
    assert "Hi Maya, how is your mood today?" in printed
    assert "+12025550143" not in printed and "0143" in printed
    plain = build_transport(demo_settings({}).with_overrides(demo=False))
    await plain.send(to="+12025550143", body="Hi Maya")
    assert "Hi Maya" not in capsys.readouterr().out
