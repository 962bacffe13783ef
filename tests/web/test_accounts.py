"""Account lifecycle: the ``user`` and ``token`` commands, ``/admin/users``, ``/api/v1/users``,
token expiry; deactivating or resetting a password ends sessions and tokens."""

from __future__ import annotations

import asyncio
import io
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.cli import main
from bot.services import accounts, sessions
from db.enums import Role
from db.models import ApiToken, AuditEvent, LoginAttempt, User, WebSession
from db.session import Database
from tests.web.harness import PASSWORD, Harness, harness

STRONG = "violet kettle harbour 42"


class Cli:
    def __init__(
        self, url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ):
        self.url, self.monkeypatch, self.capsys = url, monkeypatch, capsys
        monkeypatch.setenv("DATABASE_URL", url)

    def __call__(self, *argv: str, stdin: str = "") -> tuple[int, str, str]:
        self.monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(list(argv))
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err

    def query(self, statement: Any) -> list[Any]:
        async def run() -> list[Any]:
            db = Database(self.url)
            try:
                async with db.read() as s:
                    return list((await s.execute(statement)).all())
            finally:
                await db.dispose()

        return asyncio.run(run())

    def failed_sign_ins(self, email: str, count: int, address: str = "203.0.113.9") -> None:
        async def run() -> None:
            db = Database(self.url)
            try:
                async with db.write() as s:
                    now = datetime.now(UTC)
                    s.add_all(
                        LoginAttempt(email=email, source_address=address, success=False, at=now)
                        for _ in range(count)
                    )
            finally:
                await db.dispose()

        asyncio.run(run())


@pytest.fixture
def cli(db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    run = Cli(db_url, monkeypatch, capsys)
    for email, role in (("boss@example.org", "admin"), ("nurse@example.org", "clinician")):
        code, _, err = run(
            "create-user",
            "--email",
            email,
            "--role",
            role,
            "--name",
            "N",
            "--password-stdin",
            stdin=STRONG + "\n",
        )
        assert code == 0, err
    return run


def _row(out: str, email: str) -> list[str]:
    line = next(line for line in out.splitlines() if line.startswith(email))
    return line.split()


def test_user_list_shows_role_state_lock_and_on_call(cli: Cli) -> None:
    code, out, _ = cli("user", "list")
    assert code == 0
    assert _row(out, "nurse@example.org")[1:5] == ["clinician", "yes", "no", "no"]
    cli.failed_sign_ins("nurse@example.org", sessions.ACCOUNT_FAILURES)
    assert _row(cli("user", "list")[1], "nurse@example.org")[3] == "yes"
    assert cli("user", "unlock", "--email", "nurse@example.org")[0] == 0
    assert _row(cli("user", "list")[1], "nurse@example.org")[3] == "no"


def test_tokens_expire_list_without_secret_and_revoke(cli: Cli) -> None:
    code, token, _ = cli(
        "create-token", "--email", "nurse@example.org", "--label", "ehr", "--days", "30"
    )
    assert code == 0 and token.strip().startswith("act_")
    code, out, _ = cli("token", "list")
    assert code == 0
    assert token.strip() not in out and "ehr" in out and "active" in out
    (expires,) = cli.query(select(ApiToken.expires_at))[0]
    assert timedelta(days=29) < expires - datetime.now(UTC) <= timedelta(days=30)
    token_id = cli.query(select(ApiToken.id))[0][0]
    assert cli("token", "revoke", "--id", str(token_id))[0] == 0
    assert "revoked" in cli("token", "list", "--email", "nurse@example.org")[1]
    code, _, err = cli("token", "revoke", "--id", "999")
    assert code == 1 and "no token with id 999" in err
    code, _, err = cli("create-token", "--email", "nurse@example.org", "--days", "0")
    assert code == 1 and "--days" in err


def test_default_token_lifetime_is_90_days(cli: Cli) -> None:
    assert cli("create-token", "--email", "nurse@example.org")[0] == 0
    ((created, expires),) = cli.query(select(ApiToken.created_at, ApiToken.expires_at))
    assert expires - created == timedelta(days=90)


def test_deactivate_ends_sessions_and_tokens(cli: Cli) -> None:
    assert cli("create-token", "--email", "nurse@example.org")[0] == 0

    async def sign_in() -> None:
        db = Database(cli.url)
        try:
            outcome = await sessions.login(
                db=db,
                email="nurse@example.org",
                password=STRONG,
                address="198.51.100.1",
                now=datetime.now(UTC),
            )
            assert outcome.token is not None
        finally:
            await db.dispose()

    asyncio.run(sign_in())
    code, out, _ = cli("user", "deactivate", "--email", "nurse@example.org")
    assert code == 0 and "deactivated" in out
    assert cli.query(select(WebSession.revoked_at)) != [(None,)]
    assert all(r is not None for (r,) in cli.query(select(ApiToken.revoked_at)))
    assert _row(cli("user", "list")[1], "nurse@example.org")[2] == "no"
    code, _, err = cli("create-token", "--email", "nurse@example.org")
    assert code == 1 and "deactivated" in err


def test_reset_password_checks_strength_and_ends_access(cli: Cli) -> None:
    assert cli("create-token", "--email", "nurse@example.org")[0] == 0
    code, _, err = cli(
        "user",
        "reset-password",
        "--email",
        "nurse@example.org",
        "--password-stdin",
        stdin="Password123!\n",
    )
    assert code == 1 and "too easy to guess" in err
    code, _, err = cli("user", "reset-password", "--email", "nurse@example.org")
    assert code == 2 and "--password-stdin" in err
    code, _, _ = cli(
        "user",
        "reset-password",
        "--email",
        "nurse@example.org",
        "--password-stdin",
        stdin="amber walrus lantern 7\n",
    )
    assert code == 0
    assert all(r is not None for (r,) in cli.query(select(ApiToken.revoked_at)))
    actions = [a for (a,) in cli.query(select(AuditEvent.action))]
    assert "user.reset_password" in actions


def test_set_role_and_the_last_admin_stays(cli: Cli) -> None:
    code, _, err = cli("user", "set-role", "--email", "boss@example.org", "--role", "clinician")
    assert code == 1 and "last active admin" in err
    code, _, err = cli("user", "deactivate", "--email", "boss@example.org")
    assert code == 1 and "last active admin" in err
    assert cli("user", "set-role", "--email", "nurse@example.org", "--role", "admin")[0] == 0
    assert _row(cli("user", "list")[1], "nurse@example.org")[1] == "admin"
    assert cli("user", "set-role", "--email", "boss@example.org", "--role", "clinician")[0] == 0
    code, _, err = cli("user", "unlock", "--email", "ghost@example.org")
    assert code == 1 and "no user" in err


# --- the API and the pages --------------------------------------------------------------


@pytest.fixture
async def h(db_url: str):  # type: ignore[no-untyped-def]
    async with harness(db_url) as hh:
        yield hh


async def test_expired_tokens_are_refused_and_use_is_recorded(h: Harness) -> None:
    token = await h.token(Role.ADMIN)
    auth = {"Authorization": f"Bearer {token}"}
    assert (await h.client.get("/api/v1/users", headers=auth)).status == 200
    async with h.db.read() as s:
        assert await s.scalar(select(ApiToken.last_used_at)) == h.clock.now()
    h.clock.advance(days=91)
    resp = await h.client.get("/api/v1/users", headers=auth)
    assert resp.status == 401
    assert "expired" in (await resp.json())["error"]["message"]


async def test_users_api_is_for_admins(h: Harness) -> None:
    admin = await h.token(Role.ADMIN)
    clinician = await h.token(Role.CLINICIAN)
    resp = await h.client.get("/api/v1/users", headers={"Authorization": f"Bearer {admin}"})
    assert resp.status == 200
    items = (await resp.json())["items"]
    assert {tuple(sorted(i)) for i in items} == {
        ("active", "email", "id", "name", "on_call", "role")
    }
    assert {i["role"] for i in items} == {"admin", "clinician"}
    resp = await h.client.get("/api/v1/users", headers={"Authorization": f"Bearer {clinician}"})
    assert resp.status == 403
    assert (await h.client.get("/api/v1/users")).status == 401


async def _as_admin(h: Harness) -> str:
    email = await h.user(Role.ADMIN)
    assert (await h.login(email)).status == 303
    return email


async def _post(h: Harness, path: str, **fields: str):  # type: ignore[no-untyped-def]
    token = await h.csrf("/admin/users")
    return await h.client.post(path, data={"csrf_token": token, **fields}, allow_redirects=False)


async def _user_id(h: Harness, email: str) -> int:
    async with h.db.read() as s:
        found = await s.scalar(select(User.id).where(User.email == email))
    assert found is not None
    return found


async def test_users_page_is_for_admins(h: Harness) -> None:
    email = await h.user()
    await h.login(email)
    assert (await h.client.get("/admin/users", allow_redirects=False)).status == 403
    await _as_admin(h)
    page = await h.client.get("/admin/users")
    assert page.status == 200
    assert email in await page.text()


async def test_deactivating_on_the_page_ends_the_users_sessions_and_tokens(h: Harness) -> None:
    nurse = await h.user()
    live = await sessions.login(
        db=h.db, email=nurse, password=PASSWORD, address="198.51.100.1", now=h.clock.now()
    )
    assert live.token is not None
    async with h.db.write() as s:
        _, token = await accounts.create_token(session=s, email=nurse, label="x", now=h.clock.now())
    await _as_admin(h)
    resp = await _post(h, f"/admin/users/{await _user_id(h, nurse)}/deactivate")
    assert resp.status == 303 and resp.headers["Location"] == "/admin/users?notice=deactivated"
    page = await (await h.client.get(resp.headers["Location"])).text()
    assert "sessions and API tokens have ended" in page
    async with h.db.read() as s:
        revoked = await s.scalar(
            select(func.count()).select_from(WebSession).where(WebSession.revoked_at.is_not(None))
        )
        assert revoked == 1
        event = await s.scalar(select(AuditEvent).where(AuditEvent.action == "user.deactivate"))
        assert event is not None and event.actor_id is not None
    resp = await h.client.get("/api/v1/users", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 401


async def test_page_forms_refuse_bad_input_with_422(h: Harness) -> None:
    admin = await _as_admin(h)
    nurse = await h.user()
    nurse_id = await _user_id(h, nurse)
    weak = await _post(h, f"/admin/users/{nurse_id}/password", password="Password123!")
    assert weak.status == 422
    assert "too easy to guess" in await weak.text()
    mine = await _post(h, f"/admin/users/{await _user_id(h, admin)}/deactivate")
    assert mine.status == 422
    assert "your own account" in await mine.text()
    pager = await _post(h, f"/admin/users/{nurse_id}/on-call", on_call="on", phone="555")
    assert pager.status == 422
    assert "E.164" in await pager.text()
    dup = await _post(
        h, "/admin/users", email=nurse, role="clinician", password="amber walrus lantern 7"
    )
    assert dup.status == 422
    assert "already exists" in await dup.text()
    assert (await _post(h, f"/admin/users/{nurse_id}/explode")).status == 404
    assert (await _post(h, "/admin/users/999999/unlock")).status == 404


async def test_page_creates_users_sets_the_rota_and_revokes_tokens(h: Harness) -> None:
    await _as_admin(h)
    resp = await _post(
        h,
        "/admin/users",
        email="new.nurse@example.org",
        name="New Nurse",
        role="clinician",
        password="amber walrus lantern 7",
    )
    assert resp.status == 303
    new_id = await _user_id(h, "new.nurse@example.org")
    resp = await _post(h, f"/admin/users/{new_id}/on-call", on_call="on", phone="+12025550142")
    assert resp.status == 303
    resp = await _post(h, f"/admin/users/{new_id}/role", role="admin")
    assert resp.status == 303
    async with h.db.write() as s:
        user = await s.get(User, new_id)
        assert user is not None and user.on_call and user.role is Role.ADMIN
        await accounts.create_token(
            session=s, email="new.nurse@example.org", label="x", now=h.clock.now()
        )
    async with h.db.read() as s:
        token_id = await s.scalar(select(ApiToken.id))
    assert (await _post(h, f"/admin/tokens/{token_id}/revoke")).status == 303
    html = await (await h.client.get("/admin/users")).text()
    assert re.search(r"revoked", html)
