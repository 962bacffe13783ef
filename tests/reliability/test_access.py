"""Case 9: access, across every route of the role x route table, and hostile text everywhere.

Built on ``tests/web/test_authz_matrix.py`` (which checks every route for anonymous,
clinician and admin callers): its ``TABLE`` drives the checks here, so a new route is
covered as soon as the matrix lists it.

- stale credentials on every route: a revoked API token is a 401 on every API route; a
  session past its idle (15 min) or absolute (12 h) limit is sent to sign in on every page;
- session fixation: a cookie planted before sign-in (made up, or a live session of the
  attacker's) is replaced at sign-in and is useless afterwards;
- CSRF on every state-changing page: no token, a made-up one, or another session's valid
  one is a 403 and changes nothing, whatever the Origin says;
- injection strings in every free-text field, through the API and the page forms and SMS:
  stored exactly (read back equal), rendered escaped in every page that shows them, the
  template expression not evaluated, every table still there afterwards.
"""

from __future__ import annotations

from datetime import timedelta
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote

import pytest
from markupsafe import escape
from sqlalchemy import func, select, text, update

from bot.services import sessions
from bot.services.escalations import raise_escalation
from db.enums import Severity
from db.models import ApiToken, Base, Escalation, Patient, Treatment, User
from flows.text import render
from tests.web.harness import Harness, harness
from tests.web.test_authz_matrix import (
    TABLE,
    _setup_users,
    assert_api_error,
    assert_to_login,
    registered,
    send,
    sign_in,
)

COOKIE = "aftercare_session"
PAYLOADS = [
    "'; DROP TABLE patients; --",
    "<script>alert(1)</script>",
    '" onmouseover="x',
    "{{7*7}}",
]


@pytest.fixture
async def h(db_url: str):  # type: ignore[no-untyped-def]
    async with harness(db_url) as hh:
        yield hh


def page_routes(h: Harness, method: str | None = None) -> list[tuple[tuple[str, str], Any]]:
    return [
        (key, TABLE[key])
        for key in sorted(registered(h))
        if TABLE[key].kind == "page" and (method is None or key[0] == method)
    ]


# -- stale credentials on every route ----------------------------------------------------------


async def test_a_revoked_token_is_refused_on_every_api_route(h: Harness) -> None:
    ctx = await _setup_users(h)
    requests = [
        req
        for key in sorted(registered(h))
        if TABLE[key].kind == "api"
        for req in await TABLE[key].make(ctx)
    ]
    async with h.db.write() as s:
        await s.execute(update(ApiToken).values(revoked_at=h.clock.now()))
    for req in requests:
        for role in ("admin", "clinician"):
            resp = await send(ctx, req, token=ctx.tokens[role])
            await assert_api_error(resp, 401, "unauthorized")
    assert len(requests) >= 25


@pytest.mark.parametrize("limit", ["idle", "absolute"])
async def test_an_expired_session_is_anonymous_on_every_page(h: Harness, limit: str) -> None:
    ctx = await _setup_users(h)
    await sign_in(ctx, "admin")
    stale_csrf = ctx.csrf
    if limit == "idle":
        h.clock.advance(seconds=sessions.IDLE_TIMEOUT.total_seconds())
    else:  # busy every 10 minutes, until the 12 hours are up
        deadline = h.clock.now() + sessions.ABSOLUTE_TIMEOUT
        while h.clock.now() + timedelta(minutes=10) < deadline:
            h.clock.advance(minutes=10)
            assert (await h.client.get("/patients", allow_redirects=False)).status == 200
        h.clock.set(deadline)
    for key, rule in page_routes(h):
        for req in await rule.make(ctx):
            ctx.csrf = stale_csrf  # the form a stale tab still shows
            resp = await send(ctx, req)
            assert_to_login(resp, req)
            assert "Set-Cookie" not in resp.headers or COOKIE not in resp.headers["Set-Cookie"], key
    # and the cookie still in the jar was the admin's
    assert COOKIE in {c.key for c in h.client.session.cookie_jar}


# -- session fixation ----------------------------------------------------------------------------


def _cookie(h: Harness) -> str:
    return next(c.value for c in h.client.session.cookie_jar if c.key == COOKIE)


async def test_a_planted_session_cookie_is_replaced_and_useless(h: Harness) -> None:
    ctx = await _setup_users(h)
    # 1. a value the attacker made up
    h.client.session.cookie_jar.update_cookies({COOKIE: "attacker-chosen-value"})
    resp = await h.login(ctx.emails["clinician"])
    assert resp.status == 303
    assert resp.cookies[COOKIE].value != "attacker-chosen-value"
    victim = _cookie(h)
    # 2. a live session of the attacker's own, planted in the victim's browser
    h.client.session.cookie_jar.clear()
    await h.login(ctx.emails["admin"])
    planted = _cookie(h)
    resp = await h.login(ctx.emails["clinician"])  # the victim signs in over it
    assert resp.status == 303
    fresh = resp.cookies[COOKIE].value
    assert fresh not in (planted, victim)
    # the planted session ended at the victim's sign-in: the attacker holds nothing
    for old in (planted, "attacker-chosen-value"):
        h.client.session.cookie_jar.clear()
        h.client.session.cookie_jar.update_cookies({COOKIE: old})
        for path in ("/", "/patients", "/admin/flows"):
            resp = await h.client.get(path, allow_redirects=False)
            assert resp.status == 303 and resp.headers["Location"].startswith("/login"), path
    # the victim's own session works
    h.client.session.cookie_jar.clear()
    h.client.session.cookie_jar.update_cookies({COOKIE: fresh})
    assert (await h.client.get("/", allow_redirects=False)).status == 200


# -- CSRF on every state-changing page -----------------------------------------------------------


async def _snapshot(h: Harness) -> dict[str, int]:
    """Row counts plus a fingerprint of the mutable columns, to show nothing changed."""
    out: dict[str, int] = {}
    async with h.db.read() as s:
        for name, table in Base.metadata.tables.items():
            if name in {"web_sessions", "login_attempts", "audit_events"}:
                continue
            out[name] = int(await s.scalar(select(func.count()).select_from(table)) or 0)
        out["escalation_states"] = hash(
            tuple((await s.execute(select(Escalation.id, Escalation.status))).all())
        )
        out["patient_states"] = hash(
            tuple((await s.execute(select(Patient.id, Patient.status, Patient.first_name))).all())
        )
    return out


async def test_csrf_on_every_state_changing_page(h: Harness) -> None:
    ctx = await _setup_users(h)
    # another live session: its token is valid, but not for this one
    await sign_in(ctx, "clinician")
    other_token = ctx.csrf
    await sign_in(ctx, "admin")
    own_token = ctx.csrf
    assert other_token != own_token
    posts = page_routes(h, "POST")
    assert len(posts) >= 10
    for key, rule in posts:
        for req in await rule.make(ctx):
            before = await _snapshot(h)
            for forged in ("", "forged-token", other_token):
                ctx.csrf = forged
                if req.upload is not None:
                    resp = await send(ctx, req)
                else:
                    data = dict(req.form or {})
                    if forged:
                        data["csrf_token"] = forged
                    resp = await h.client.post(
                        req.path,
                        data=data,
                        allow_redirects=False,
                        headers={
                            "Origin": "https://evil.example",
                            "Referer": "https://evil.example/",
                        },
                    )
                assert resp.status == 403, (key, forged[:8], resp.status)
            assert await _snapshot(h) == before, key
    ctx.csrf = own_token
    # logout is a form too: a cross-site post cannot sign the user out
    resp = await h.client.post("/logout", data={}, allow_redirects=False)
    assert resp.status == 403
    assert (await h.client.get("/", allow_redirects=False)).status == 200
    # and the login form needs its own token (login CSRF)
    resp = await h.client.post(
        "/login",
        data={"email": ctx.emails["admin"], "password": "a-long-enough-passphrase"},
        allow_redirects=False,
    )
    assert resp.status == 403


# -- injection strings in every free-text field -------------------------------------------------


class _Tags(HTMLParser):
    """Every element and attribute the browser would build from the page."""

    def __init__(self) -> None:
        super().__init__()
        self.handlers: list[str] = []
        self.scripts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handlers += [f"<{tag} {name}>" for name, _ in attrs if name.startswith("on")]
        if tag == "script":
            self.scripts.append(dict(attrs).get("src") or "(inline)")


def assert_inert(html: str, payload: str, where: str) -> None:
    """Shown escaped: the escaped text is there, the raw markup is not, nothing evaluated."""
    assert str(escape(payload)) in html, (where, payload)
    if any(c in payload for c in "<>\"'"):
        assert payload not in html, (where, payload)
    tags = _Tags()
    tags.feed(html)
    assert not tags.handlers, (where, tags.handlers)  # no event-handler attribute anywhere
    assert all(src.startswith("/static/") for src in tags.scripts), (where, tags.scripts)


async def _page(h: Harness, path: str) -> str:
    resp = await h.client.get(path, allow_redirects=False)
    assert resp.status == 200, (path, resp.status)
    return await resp.text()


def _flow(key: str, payload: str) -> str:
    quoted = '"' + payload.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"""key: {key}
title: {quoted}
description: {quoted}
language: en
nodes:
  - id: ask_mood
    type: ask
    text: "How is your mood today from 0 (worst) to 10 (best)?"
    answer: {{type: integer, min: 0, max: 10}}
    next: done
  - id: done
    type: end
    text: {quoted}
"""


async def test_injection_strings_are_stored_as_text_and_rendered_escaped(h: Harness) -> None:
    ctx = await _setup_users(h)
    api = {"Authorization": f"Bearer {ctx.tokens['admin']}"}
    await sign_in(ctx, "admin")
    for n, payload in enumerate(PAYLOADS):
        # patient first_name and external_ref, through the API
        body = {
            "first_name": payload,
            "external_ref": payload + f" #{n}",
            "phone": f"+1202555{7000 + n:04d}",
            "timezone": "America/New_York",
        }
        resp = await h.client.post("/api/v1/patients", json=body, headers=api)
        assert resp.status == 201, await resp.text()
        pid = (await resp.json())["id"]
        got = await (await h.client.get(f"/api/v1/patients/{pid}", headers=api)).json()
        assert (got["first_name"], got["external_ref"]) == (payload, payload + f" #{n}")
        async with h.db.write() as s:  # an open escalation puts the name in the queue
            raise_escalation(
                session=s,
                severity=Severity.MODERATE,
                reason="phq9_moderate",
                summary="PHQ-9 12",
                now=h.clock.now(),
                patient_id=pid,
            )
        # and through the page form
        form = {
            "first_name": payload,
            "external_ref": payload + f" form #{n}",
            "phone": f"+1202555{7100 + n:04d}",
            "timezone": "America/Chicago",
            "language": "en",
            "csrf_token": ctx.csrf,
        }
        resp = await h.client.post("/patients", data=form, allow_redirects=False)
        assert resp.status == 303, (resp.status, await resp.text())
        form_pid = int(resp.headers["Location"].split("/")[2].split("?")[0])
        got = await (await h.client.get(f"/api/v1/patients/{form_pid}", headers=api)).json()
        assert (got["first_name"], got["external_ref"]) == (payload, payload + f" form #{n}")
        # treatment kind, through the API and the page
        treat = {"kind": payload, "administered_at": h.clock.now().isoformat()}
        resp = await h.client.post(f"/api/v1/patients/{pid}/treatments", json=treat, headers=api)
        assert resp.status == 201 and (await resp.json())["kind"] == payload
        resp = await h.client.post(
            f"/patients/{form_pid}/treatments",
            data={
                "kind": payload,
                "administered_at": (h.clock.now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"),
                "csrf_token": ctx.csrf,
            },
            allow_redirects=False,
        )
        assert resp.status == 303
        async with h.db.read() as s:
            kinds = set(
                (
                    await s.scalars(
                        select(Treatment.kind).where(Treatment.patient_id.in_([pid, form_pid]))
                    )
                ).all()
            )
        assert kinds == {payload}
        # an inbound SMS body: stored exactly, in the transcript and the timeline
        patient = await h.patient(f"Sms{n}", phone=f"+1202555{7200 + n:04d}")
        await h.start(patient, "daily_mood")
        resp = await h.sms(patient.phone, payload)
        assert resp.status == 200
        messages = (
            await (
                await h.client.get(f"/api/v1/patients/{patient.id}/messages", headers=api)
            ).json()
        )["items"]
        assert payload in [m["body"] for m in messages if m["direction"] == "in"]
        # the resolve note, through the API and the page
        async with h.db.write() as s:
            pair = []
            for _ in range(2):
                e = raise_escalation(
                    session=s,
                    severity=Severity.HIGH,
                    reason="phq9_severe",
                    summary="PHQ-9 22",
                    now=h.clock.now(),
                    patient_id=patient.id,
                    checkin_id=(await h.checkins(patient))[0].id,
                )
                await s.flush()
                pair.append(e.id)
        resolve = {"disposition": "other", "note": payload}
        resp = await h.client.post(
            f"/api/v1/escalations/{pair[0]}/resolve", json=resolve, headers=api
        )
        assert resp.status == 200 and (await resp.json())["note"] == payload
        resp = await h.client.post(
            f"/escalations/{pair[1]}/resolve",
            # the patient's PHQ-9 is still running: the page asks to confirm
            data={
                "disposition": "other",
                "note": payload,
                "csrf_token": ctx.csrf,
                "confirm_running": "yes",
            },
            allow_redirects=False,
        )
        assert resp.status == 303 and resp.headers["Location"] == "/?notice=resolved"
        for eid in pair:
            got = await (await h.client.get(f"/api/v1/escalations/{eid}", headers=api)).json()
            assert got["note"] == payload
        # a flow draft's title and texts
        key = f"inject_{n}"
        resp = await h.client.put(
            f"/api/v1/flows/{key}/draft", data=_flow(key, payload).encode(), headers=api
        )
        assert resp.status == 200, await resp.text()
        got = await (await h.client.get(f"/api/v1/flows/{key}", headers=api)).json()
        assert got["title"] == payload and got["draft_source"] == _flow(key, payload)
        sim = await h.client.post(
            f"/api/v1/flows/{key}/simulate",
            json={"answers": ["5"], "version": "draft"},
            headers=api,
        )
        assert sim.status == 200
        said = [line["text"] for line in (await sim.json())["transcript"] if line["who"] == "bot"]
        # the flow's own template syntax applies ("{{" is a literal "{"); nothing is evaluated
        assert said[-1] == render(payload, lambda _name: None)
        assert "49" not in said[-1]
        # every page that shows them
        for path in (f"/patients/{pid}", f"/patients/{form_pid}", f"/patients/{form_pid}/edit"):
            assert_inert(await _page(h, path), payload, path)
        assert_inert(await _page(h, f"/patients/{patient.id}"), payload, "timeline")
        for eid in pair:
            assert_inert(await _page(h, f"/escalations/{eid}"), payload, f"escalation {eid}")
        assert_inert(await _page(h, "/patients"), payload, "patient list")
        assert_inert(await _page(h, "/"), payload, "queue")  # first names in the queue
        assert_inert(await _page(h, "/admin/flows"), payload, "flow list")
        editor = await _page(h, f"/admin/flows/{key}")
        assert str(escape(_flow(key, payload))) in editor and "<script>alert" not in editor
        search = await _page(h, "/patients?q=" + quote(payload))
        assert_inert(search, payload, "search")
    # every table is still there, and the patients with it
    async with h.db.read() as s:
        for name in Base.metadata.tables:
            await s.execute(text(f'SELECT COUNT(*) FROM "{name}"'))
        count = await s.scalar(select(func.count()).select_from(Patient))
        users = await s.scalar(select(func.count()).select_from(User))
    assert count == 3 * len(PAYLOADS) and users == 2
