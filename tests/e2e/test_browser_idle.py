"""The station screen's idle warning: two minutes before the idle sign-out a warning offers
"Stay signed in" (a keepalive request); left alone, the page goes to the sign-in page.

The browser's clock is Playwright's (``page.clock``), so 13 minutes pass in an instant; the
server's timeout is the real one, checked separately on the test harness's frozen clock.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from bot.services.sessions import IDLE_TIMEOUT
from db.enums import Role
from tests.e2e.conftest import CLINICIAN_EMAIL, CLINICIAN_PASSWORD, Live, sign_in, watched_page
from tests.web.harness import Harness, harness

KEEPALIVE = "/session/keepalive"


@pytest.fixture
async def h(db_url: str):  # type: ignore[no-untyped-def]
    async with harness(db_url) as hh:
        yield hh


async def test_keepalive_is_activity_and_the_timeout_is_unchanged(h: Harness) -> None:
    assert IDLE_TIMEOUT.total_seconds() == 15 * 60
    resp = await h.client.post(KEEPALIVE, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"].startswith("/login?next=")
    await h.login(await h.user(Role.CLINICIAN))
    page = await (await h.client.get("/")).text()
    assert 'data-idle-seconds="900"' in page and f'data-keepalive="{KEEPALIVE}"' in page
    csrf = await h.csrf()
    # without the page's token: refused, and no use as activity
    assert (await h.client.post(KEEPALIVE, data={"csrf_token": "forged"})).status == 403
    h.clock.advance(minutes=14)
    resp = await h.client.post(KEEPALIVE, data={"csrf_token": csrf}, allow_redirects=False)
    assert resp.status == 200 and await resp.json() == {"idle_seconds": 900}
    h.clock.advance(minutes=14)  # 28 minutes after the page load, 14 after the keepalive
    assert (await h.client.get("/queue/rows", allow_redirects=False)).status == 200
    h.clock.advance(minutes=2)  # the queue's own refresh above was not activity
    assert (await h.client.get("/", allow_redirects=False)).status == 303


@pytest.mark.browser
async def test_the_idle_warning_keeps_the_session_or_signs_out(live: Live, browser: Any) -> None:
    watched = await watched_page(browser)
    page = watched.page
    try:
        await page.clock.install()  # the page's timers run on a clock the test moves
        await sign_in(page, live, "/", CLINICIAN_EMAIL, CLINICIAN_PASSWORD)
        await page.wait_for_selector("h1:has-text('Escalation queue')")
        warning = page.locator("#idle-warning")
        await warning.wait_for(state="attached")
        assert await warning.is_hidden()

        # 12 minutes idle: nothing yet (the warning comes 2 minutes before the end, which
        # is up to 30 s before load + 15 min: the server extends at most every 30 s)
        await page.clock.fast_forward("12:00")
        await page.wait_for_timeout(100)
        assert await warning.is_hidden()
        await page.clock.fast_forward("01:00")
        await warning.wait_for(state="visible")
        text = await warning.inner_text()
        assert "You will be signed out in 2 minutes for inactivity." in text, text
        assert await warning.get_attribute("role") == "alert"

        # Stay signed in: a keepalive with the page's CSRF token, and the warning goes
        async with page.expect_response(lambda r: r.url.endswith(KEEPALIVE)) as answer:
            await warning.get_by_role("button", name="Stay signed in").click()
        response = await answer.value
        assert response.status == 200 and response.request.method == "POST"
        assert await response.json() == {"idle_seconds": 900}
        assert "csrf_token=" in (response.request.post_data or "")
        await warning.wait_for(state="hidden")
        assert page.url == live.base_url + "/"

        # the count starts again from the keepalive: warned again 13 minutes on ...
        await page.clock.fast_forward("12:00")
        await page.wait_for_timeout(100)
        assert await warning.is_hidden()
        await page.clock.fast_forward("01:00")
        await warning.wait_for(state="visible")
        # ... and left alone past the end, the page goes to sign in, and back here after
        async with page.expect_navigation():
            await page.clock.fast_forward("02:10")
        assert re.search(r"/login\?next=%2F$", page.url), page.url
        assert await page.locator("input[name=next]").get_attribute("value") == "/"
        assert watched.errors == [], watched.errors
    finally:
        await watched.context.close()
