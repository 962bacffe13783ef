"""Errors on pages come in the site's layout with the right status, a short explanation and
a way back; the API, Twilio, static files, /healthz and /metrics keep their own errors, and
an unexpected exception is a logged 500 that shows no traceback."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from bot.app import create_app
from bot.clock import FrozenClock
from bot.web import error_pages
from db.enums import Role
from db.session import Database
from tests.web.harness import START, Harness, harness, settings_for

SECRET = "secret-detail-7f3a"  # in the exception's message; must never reach the browser


@pytest.fixture
async def h(db_url: str):  # type: ignore[no-untyped-def]
    async with harness(db_url) as hh:
        yield hh


async def assert_error_page(resp: ClientResponse, status: int, explanation: str) -> str:
    """The site layout, the status, the explanation, the links back; the page's HTML."""
    html = await resp.text()
    assert resp.status == status, (resp.status, html[:300])
    assert resp.content_type == "text/html"
    assert '<header class="top">' in html and "app.css" in html, html[:300]
    assert f"Error {status}" in html
    assert explanation in html, html
    assert '<a class="button primary" href="/">Back to the queue</a>' in html
    assert "data-history-back" in html and "Go back" in html
    assert "Traceback" not in html
    # still the site's security headers and no caching (error pages show who is signed in)
    assert resp.headers["Cache-Control"] == "no-store"
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Request-ID"]
    return html


async def signed_in(h: Harness, role: Role = Role.CLINICIAN) -> None:
    resp = await h.login(await h.user(role))
    assert resp.status == 303


async def test_404_for_an_unknown_patient_keeps_the_handlers_sentence(h: Harness) -> None:
    await signed_in(h)
    resp = await h.client.get("/patients/987654")
    html = await assert_error_page(resp, 404, "No such patient.")
    assert "Sign out" in html  # the signed-in layout: the nav is there to go elsewhere
    assert "<title>Page not found" in html


async def test_404_for_an_unknown_address(h: Harness) -> None:
    await signed_in(h)
    resp = await h.client.get("/no/such/page")
    html = await assert_error_page(resp, 404, "There is no page at this address.")
    assert "404: Not Found" not in html  # aiohttp's own text is not a sentence for people


async def test_404_without_a_session_is_the_layout_without_the_nav(h: Harness) -> None:
    resp = await h.client.get("/no/such/page")
    html = await assert_error_page(resp, 404, "There is no page at this address.")
    assert "Sign out" not in html and "data-idle-seconds" not in html


async def test_403_for_an_admin_page(h: Harness) -> None:
    await signed_in(h)
    resp = await h.client.get("/admin/audit")
    await assert_error_page(resp, 403, "This page is for admins.")


async def test_403_for_a_form_without_its_csrf_token(h: Harness) -> None:
    await signed_in(h)
    resp = await h.client.post("/session/keepalive", data={"csrf_token": "forged"})
    await assert_error_page(resp, 403, "The form expired or did not come from this site.")


async def test_405_keeps_allow(h: Harness) -> None:
    resp = await h.client.delete("/login")
    await assert_error_page(resp, 405, "This address does not accept that kind of request.")
    assert {"GET", "POST"} <= {m.strip() for m in resp.headers["Allow"].split(",")}


async def test_redirects_are_not_errors(h: Harness) -> None:
    resp = await h.client.get("/patients/987654", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/v1/patients/987654", 401),
        ("GET", "/api/v1/no-such-thing", 404),
        ("GET", "/static/no-such-file.css", 404),
        ("PUT", "/healthz", 405),
        ("GET", "/twilio/sms", 405),
    ],
)
async def test_other_paths_keep_their_own_errors(
    h: Harness, method: str, path: str, status: int
) -> None:
    await signed_in(h)
    resp = await h.client.request(method, path)
    text = await resp.text()
    assert resp.status == status, (path, resp.status, text[:200])
    assert '<header class="top">' not in text, path
    if path.startswith("/api/"):
        assert resp.content_type == "application/json"


@asynccontextmanager
async def boom_app(db_url: str) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """The real app with two extra routes that fail unexpectedly (a page and an API path)."""

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError(SECRET)

    def extra(app: web.Application) -> None:
        app.router.add_get("/boom", boom)
        app.router.add_get("/api/v1/boom", boom)

    settings = settings_for(db_url, "http://127.0.0.1:9", SMS_TRANSPORT="console")
    db = Database(db_url)
    app = create_app(settings, database=db, clock=FrozenClock(START), extra_setup=extra)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
        await db.dispose()


async def test_an_unexpected_exception_is_a_logged_500_in_the_layout(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with boom_app(db_url) as client:
        with caplog.at_level(logging.ERROR, logger="bot.web.error_pages"):
            resp = await client.get("/boom", headers={"X-Request-ID": "req-boom-000001"})
            html = await assert_error_page(resp, 500, "Something went wrong on our side")
        assert SECRET not in html and "RuntimeError" not in html
        # the reference on the page is the request id the logs carry
        assert re.search(r"Reference: <code>req-boom-000001</code>", html), html
        assert resp.headers["X-Request-ID"] == "req-boom-000001"
        logged = [r for r in caplog.records if r.name == "bot.web.error_pages"]
        assert len(logged) == 1 and logged[0].exc_info is not None
        assert logged[0].exc_info[0] is RuntimeError and "/boom" in logged[0].getMessage()
        # the API keeps its JSON error (its own middleware logs it)
        api = await client.get("/api/v1/boom")
        assert api.status == 500 and api.content_type == "application/json"
        assert SECRET not in await api.text()


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("No such patient.", True),
        ("This page is for admins.", True),
        ("The form expired. Reload the page and try again.", True),
        ("404: Not Found", False),
        ("Not Found", False),  # no full stop: a reason phrase, not a sentence
        ("line one.\nline two.", False),
        ("<b>Bold</b> claims.", False),
        ("", False),
    ],
)
def test_which_handler_texts_are_shown(text: str, kept: bool) -> None:
    exc = web.HTTPNotFound(text=text) if text else web.HTTPNotFound()
    expected = text if kept else error_pages.EXPLANATIONS[404]
    assert error_pages.explanation(exc) == expected
