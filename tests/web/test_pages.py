"""Sign-in, sessions, CSRF, headers, and the clinician pages through the real app."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from bot.services import accounts, sessions
from bot.services.escalations import raise_escalation
from db.enums import EscalationStatus, Role, Severity
from db.models import AuditEvent, Escalation, User, WebSession
from tests.web.harness import Harness, harness


@pytest.fixture
async def h(db_url: str):  # type: ignore[no-untyped-def]
    async with harness(db_url) as hh:
        yield hh


async def _audit_actions(h: Harness) -> list[str]:
    async with h.db.read() as s:
        return list((await s.scalars(select(AuditEvent.action).order_by(AuditEvent.id))).all())


async def test_pages_redirect_to_login(h: Harness) -> None:
    for path in ["/", "/patients", "/escalations/1", "/admin/audit"]:
        resp = await h.client.get(path, allow_redirects=False)
        assert resp.status == 303, path
        assert resp.headers["Location"].startswith("/login?next=")


async def test_login_sets_a_safe_cookie_and_shows_the_queue(h: Harness) -> None:
    email = await h.user()
    resp = await h.login(email)
    assert resp.status == 303 and resp.headers["Location"] == "/"
    cookie = resp.cookies["aftercare_session"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"
    assert cookie["secure"]  # PUBLIC_BASE_URL is https in the harness
    page = await h.client.get("/")
    assert page.status == 200
    assert "Escalation queue" in await page.text()
    assert "login.success" in await _audit_actions(h)


async def test_wrong_password_and_unknown_email_look_the_same(h: Harness) -> None:
    email = await h.user()
    bad = await h.login(email, "not-the-password-at-all")
    unknown = await h.login("nobody@example.org", "not-the-password-at-all")
    assert bad.status == unknown.status == 401
    assert "Email or password is not right." in await bad.text()
    assert "Email or password is not right." in await unknown.text()
    assert (await _audit_actions(h)).count("login.failure") == 2


async def test_account_throttle_answers_like_an_unknown_email(h: Harness) -> None:
    email = await h.user()
    for _ in range(sessions.ACCOUNT_FAILURES):
        assert (await h.login(email, "wrong-password-xyz")).status == 401
        assert (await h.login("nobody@example.org", "wrong-password-xyz")).status == 401
    locked = await h.login(email)  # even the right password
    unknown = await h.login("nobody@example.org")
    assert locked.status == unknown.status == 429
    locked_text, unknown_text = await locked.text(), await unknown.text()
    assert sessions.THROTTLED.split(".")[0] in locked_text
    # the same words whether or not the account exists: no enumeration
    assert _alert(locked_text) == _alert(unknown_text)
    h.clock.advance(minutes=16)
    assert (await h.login(email)).status == 303


def _alert(html: str) -> str:
    match = re.search(r'role="alert"[^>]*>(.*?)<', html, re.S)
    assert match, html
    return match.group(1).strip()


async def test_a_burst_of_parallel_guesses_cannot_slip_past_the_throttle(h: Harness) -> None:
    """Each attempt is counted before its password is checked: of 30 guesses sent at once,
    no more than the limit get a password answer; the rest are throttled."""
    email = await h.user()
    page = await h.client.get("/login")
    token = re.search(r'name="login_csrf" value="([^"]+)"', await page.text())
    assert token

    async def guess(i: int) -> int:
        resp = await h.client.post(
            "/login",
            data={"email": email, "password": f"wrong-{i}", "login_csrf": token.group(1)},
            allow_redirects=False,
        )
        return resp.status

    statuses = await asyncio.gather(*(guess(i) for i in range(30)))
    assert statuses.count(401) <= sessions.ACCOUNT_FAILURES
    assert statuses.count(429) >= 30 - sessions.ACCOUNT_FAILURES


async def test_address_rate_limit(h: Harness) -> None:
    for i in range(sessions.ADDRESS_FAILURES):
        await h.login(f"nobody{i}@example.org", "wrong-password-xyz")
    email = await h.user()
    resp = await h.login(email)
    assert resp.status == 429
    assert sessions.THROTTLED in await resp.text()


async def test_an_admins_unlock_lets_the_user_in_at_once(h: Harness) -> None:
    email = await h.user()
    for _ in range(sessions.ACCOUNT_FAILURES):
        await h.login(email, "wrong-password-xyz")
    assert (await h.login(email)).status == 429
    async with h.db.write() as session:
        user = await accounts.find_user(session, email)
        await accounts.unlock(session=session, user=user, change=accounts.Change(h.clock.now()))
    assert (await h.login(email)).status == 303


async def test_forwarded_for_is_ignored_from_an_untrusted_peer(h: Harness) -> None:
    """Without TRUSTED_PROXIES a client cannot pick a fresh address per guess."""
    email = await h.user()
    for i in range(sessions.ACCOUNT_FAILURES):
        await h.login(email, "wrong-password-xyz", forwarded_for=f"198.51.100.{i}")
    assert (await h.login(email, forwarded_for="198.51.100.99")).status == 429


async def test_behind_a_trusted_proxy_one_address_cannot_lock_out_another(db_url: str) -> None:
    async with harness(db_url, TRUSTED_PROXIES="127.0.0.0/8") as hp:
        email = await hp.user()
        attacker, nurse = "203.0.113.7", "198.51.100.20"
        for i in range(sessions.ADDRESS_FAILURES):
            await hp.login(
                email if i % 2 else f"x{i}@example.org",
                "wrong-password-xyz",
                forwarded_for=attacker,
            )
        assert (await hp.login(email, forwarded_for=attacker)).status == 429
        # a spoofed left-most hop does not help: the proxy's own hop is what counts
        assert (await hp.login(email, forwarded_for=f"10.9.9.9, {attacker}")).status == 429
        assert (await hp.login(email, forwarded_for=nurse)).status == 303
        async with hp.db.read() as session:
            rows = (
                (
                    await session.execute(
                        select(AuditEvent.source_address).where(
                            AuditEvent.action == "login.success"
                        )
                    )
                )
                .scalars()
                .all()
            )
        assert rows == [nurse]


async def test_idle_and_absolute_timeouts(h: Harness) -> None:
    email = await h.user()
    await h.login(email)
    h.clock.advance(minutes=14)
    assert (await h.client.get("/", allow_redirects=False)).status == 200
    h.clock.advance(minutes=14)  # active 14 minutes ago: still fine
    assert (await h.client.get("/", allow_redirects=False)).status == 200
    h.clock.advance(minutes=16)
    assert (await h.client.get("/", allow_redirects=False)).status == 303
    # absolute: a session kept busy still ends 12 hours after sign-in
    await h.login(email)
    signed_in = h.clock.now()
    for _ in range(60):
        h.clock.advance(minutes=14)
        if (await h.client.get("/", allow_redirects=False)).status != 200:
            break
    else:
        raise AssertionError("session outlived 12 hours")
    lived = h.clock.now() - signed_in
    assert timedelta(hours=12) <= lived < timedelta(hours=12, minutes=14)


async def test_logout_and_deactivation_end_sessions(h: Harness) -> None:
    email = await h.user()
    await h.login(email)
    token = await h.csrf()
    resp = await h.client.post("/logout", data={"csrf_token": token}, allow_redirects=False)
    assert resp.status == 303
    assert (await h.client.get("/", allow_redirects=False)).status == 303
    await h.login(email)
    async with h.db.write() as s:
        user = await s.scalar(select(User).where(User.email == email))
        assert user is not None
        user.active = False
    assert (await h.client.get("/", allow_redirects=False)).status == 303


async def test_new_session_id_at_each_login(h: Harness) -> None:
    email = await h.user()
    first = (await h.login(email)).cookies["aftercare_session"].value
    second = (await h.login(email)).cookies["aftercare_session"].value
    assert first != second
    async with h.db.read() as s:
        live = await s.scalar(
            select(func.count()).select_from(WebSession).where(WebSession.revoked_at.is_(None))
        )
    assert live == 1


async def test_csrf_required_on_every_form(h: Harness) -> None:
    email = await h.user()
    await h.login(email)
    async with h.db.write() as s:
        e = raise_escalation(
            session=s,
            severity=Severity.HIGH,
            reason="x",
            summary="s",
            now=h.clock.now(),
            patient_id=None,
        )
        await s.flush()
        eid = e.id
    for data in ({}, {"csrf_token": "forged"}):
        resp = await h.client.post(f"/escalations/{eid}/claim", data=data, allow_redirects=False)
        assert resp.status == 403
    async with h.db.read() as s:
        found = await s.get(Escalation, eid)
        assert found is not None and found.status is EscalationStatus.OPEN
    token = await h.csrf()
    resp = await h.client.post(
        f"/escalations/{eid}/claim", data={"csrf_token": token}, allow_redirects=False
    )
    assert resp.status == 303


async def test_login_form_needs_its_csrf_cookie(h: Harness) -> None:
    email = await h.user()
    resp = await h.client.post(
        "/login", data={"email": email, "password": "a-long-enough-passphrase", "login_csrf": "x"}
    )
    assert resp.status == 403


async def test_security_headers(h: Harness) -> None:
    for path in ["/login", "/healthz"]:
        resp = await h.client.get(path)
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
    email = await h.user()
    await h.login(email)
    resp = await h.client.get("/patients")
    assert resp.headers["Cache-Control"] == "no-store"
    html = await resp.text()
    assert "<script>" not in html and "onclick" not in html


async def test_no_versions_in_server_and_hsts_on_https(h: Harness) -> None:
    """The harness's PUBLIC_BASE_URL is https: every response, static files and errors
    included, says so and names no software version."""
    static = re.search(
        r'href="(/static/app\.css[^"]*)"', await (await h.client.get("/login")).text()
    )
    assert static
    for path in ["/login", "/healthz", static.group(1), "/no/such/page", "/api/v1/patients/1"]:
        resp = await h.client.get(path)
        assert resp.headers["Server"] == "aftercare", path
        assert resp.headers["Strict-Transport-Security"].startswith("max-age="), path


async def test_no_hsts_over_plain_http(db_url: str) -> None:
    async with harness(db_url, PUBLIC_BASE_URL="http://127.0.0.1:8080") as hp:
        resp = await hp.client.get("/login")
        assert "Strict-Transport-Security" not in resp.headers
        assert resp.headers["Server"] == "aftercare"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/login", {"GET", "POST"}),
        ("PUT", "/logout", {"POST"}),
        ("DELETE", "/api/v1/patients", {"POST"}),
        ("PUT", "/healthz", {"GET"}),
    ],
)
async def test_405_names_the_allowed_methods(
    h: Harness, method: str, path: str, allowed: set[str]
) -> None:
    resp = await h.client.request(method, path, allow_redirects=False)
    assert resp.status == 405
    assert allowed <= {m.strip() for m in resp.headers["Allow"].split(",")}


async def test_open_redirect_after_login_is_refused(h: Harness) -> None:
    await h.user()
    page = await h.client.get("/login?next=https://evil.example/")
    html = await page.text()
    assert 'value="/"' in html


async def test_clinician_cannot_open_admin_pages(h: Harness) -> None:
    email = await h.user(Role.CLINICIAN)
    await h.login(email)
    assert (await h.client.get("/admin/audit")).status == 403
    assert (await h.client.get("/patients/new")).status == 403
