"""The flow editor in Chromium, without page loads: an admin validates a draft with a schema
error and an unknown node (both listed at once, beside the editor), jumps to a problem's
line, sees a translation warning, chats with the simulator, then publishes with a change
note and finds the note and the superseded version in the versions list. Without script
the same form still works and lands back on the editor."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.services.accounts import NewUser, create_user
from db.enums import Role
from tests.e2e.conftest import CHROMIUM_ARGS, Live, sign_in, watched_page

pytestmark = pytest.mark.browser

ADMIN_EMAIL = "editor@e2e.example.org"
ADMIN_PASSWORD = "e2e-admin-passphrase-editor"
FLOW = "daily_mood"
MISSING = "nowhere_node"
NOTE = "Point the low-mood alert at a gentler ending"


async def _admin(live: Live) -> None:
    async with live.db.write() as session:
        await create_user(
            session=session,
            new=NewUser(ADMIN_EMAIL, Role.ADMIN, ADMIN_PASSWORD, "Eda Editor"),
            now=datetime.now(UTC),
        )


def _line_of(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1


def _broken(original: str) -> tuple[str, int, int]:
    """A schema error (no such severity) and an unknown ``next`` target, far enough down
    that the textarea has to scroll to them; their 1-based lines."""
    assert "    severity: low\n" in original and "    next: done_low\n" in original
    text = original.replace("    severity: low\n", "    severity: urgent\n", 1)
    text = text.replace("    next: done_low\n", f"    next: {MISSING}\n", 1)
    return text, _line_of(text, "severity: urgent"), _line_of(text, MISSING)


async def test_editor_validates_jumps_simulates_and_publishes_without_reloading(
    live: Live, browser: Any, artifacts: Path
) -> None:
    await _admin(live)
    watched = await watched_page(browser, height=900)
    context, page = watched.context, watched.page
    dialogs: list[str] = []

    async def accept(dialog: Any) -> None:
        dialogs.append(dialog.message)
        await dialog.accept()

    page.on("dialog", accept)
    loads: list[str] = []
    editor = page.locator("textarea[name=source]")
    problems = page.locator("#problems")
    simulator = page.locator("#simulator")
    try:
        await sign_in(page, live, f"/admin/flows/{FLOW}", ADMIN_EMAIL, ADMIN_PASSWORD)
        page.on("load", lambda _page: loads.append(page.url))
        await page.evaluate("window.__sameDocument = 'kept'")
        original = await editor.input_value()
        broken, severity_line, missing_line = _broken(original)

        # validate: both problems at once, listed beside the editor, and no page load
        await editor.fill(broken)
        await page.click("button[name=action][value=validate]")
        items = problems.locator("li.error-item")
        await items.nth(1).wait_for()
        texts = await items.all_inner_texts()
        assert len(texts) == 2, texts
        assert f"line {severity_line}, column" in texts[0] and "urgent" in texts[0], texts
        assert f"line {missing_line}, column" in texts[1] and MISSING in texts[1], texts
        assert await page.evaluate("window.__sameDocument") == "kept"
        assert await editor.input_value() == broken
        area, panel = await editor.bounding_box(), await problems.bounding_box()
        assert area and panel
        assert panel["x"] >= area["x"] + area["width"], (area, panel)  # to the right
        assert panel["y"] < area["y"] + area["height"]  # at the same height

        # click the unknown node's problem: the caret goes to its line, scrolled into view
        await editor.evaluate("el => { el.setSelectionRange(0, 0); el.scrollTop = 0; }")
        await items.nth(1).locator("[data-goto-line]").click()
        start, end, focused, top, height = await editor.evaluate(
            "el => [el.selectionStart, el.selectionEnd, document.activeElement === el,"
            " el.scrollTop, el.clientHeight]"
        )
        assert focused
        assert broken[:start].count("\n") + 1 == missing_line
        assert broken[start:end] == broken.split("\n")[missing_line - 1]
        line_top = (missing_line - 1) * 18
        assert top > 0 and top <= line_top < top + height, (top, line_top, height)
        gutter = await page.evaluate("document.getElementById('gutter').scrollTop")
        assert gutter == top  # the line numbers follow the text

        # fix it; change the English mood question only: a translation warning names the node
        edited = original.replace("How is your mood today", "How are you feeling today", 1)
        await editor.fill(edited)
        await page.click("button[name=action][value=validate]")
        await problems.get_by_text("No problems found").wait_for()
        warnings = page.locator("#editor-warnings")
        await warnings.get_by_text("English text changed but not the Spanish").wait_for()
        assert await warnings.locator("a[data-goto-line]").all_inner_texts() == ["mood"]

        # simulate beside the editor: start, reply with Enter, reply with the button
        await simulator.locator("button[name=action][value=simulate]").click()
        await simulator.locator("ol.transcript").get_by_text("How are you feeling today").wait_for()
        assert (await simulator.locator("button[value=simulate]").inner_text()) == "Send"
        reply = simulator.locator("input[name=reply]")
        await reply.fill("1")
        await reply.press("Enter")
        await simulator.locator("ol.transcript").get_by_text("better off dead").wait_for()
        assert await reply.input_value() == ""
        await reply.fill("2")
        await simulator.locator("button[name=action][value=simulate]").click()
        badge = simulator.locator("ul.escalations .badge.sev-high")
        await badge.wait_for(state="visible")
        assert "item9_positive" in await simulator.locator("ul.escalations").inner_text()
        assert "daily_mood.q9 = 2" in await simulator.inner_text()
        assert await page.evaluate("window.__sameDocument") == "kept"
        assert loads == [], loads
        await page.screenshot(path=str(artifacts / "flow-editor-live.png"), full_page=True)

        # on a narrow screen the panels stack under the editor
        await page.set_viewport_size({"width": 700, "height": 900})
        area, panel = await editor.bounding_box(), await problems.bounding_box()
        assert area and panel and panel["y"] >= area["y"] + area["height"], (area, panel)
        await page.set_viewport_size({"width": 1280, "height": 900})

        # publish asks for a change note first (and no confirmation until there is one)
        await page.click("button[name=action][value=publish]")
        assert dialogs == []
        assert await page.evaluate("document.getElementById('note').validationMessage")
        assert loads == []
        await page.fill("#note", NOTE)
        async with page.expect_navigation():
            await page.click("button[name=action][value=publish]")
        assert dialogs and dialogs[-1].startswith("Publish this as a new version?")
        notice = page.locator("p.notice[role=status]")
        assert (await notice.inner_text()).startswith("Published as a new version")
        versions = page.locator("#versions li")
        newest, older = await versions.nth(0).inner_text(), await versions.nth(1).inner_text()
        assert newest.startswith("v2 · published") and NOTE in newest, newest
        assert older.startswith("v1 · superseded (by v2)"), older
        assert watched.errors == [], watched.errors  # no CSP violations or script errors
    finally:
        await context.close()


async def test_editor_without_script_posts_and_returns_to_the_editor(
    live: Live, chromium_path: Path
) -> None:
    """Progressive enhancement: with JavaScript off, validate is an ordinary post that
    lands on the editor's anchor with the problems listed by line."""
    from playwright.async_api import async_playwright

    await _admin(live)
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=str(chromium_path), args=CHROMIUM_ARGS, headless=True
        )
        try:
            context = await chromium.new_context(
                java_script_enabled=False, viewport={"width": 1280, "height": 900}
            )
            page = await context.new_page()
            await sign_in(page, live, f"/admin/flows/{FLOW}", ADMIN_EMAIL, ADMIN_PASSWORD)
            editor = page.locator("textarea[name=source]")
            broken, _severity_line, missing_line = _broken(await editor.input_value())
            await editor.fill(broken)
            async with page.expect_navigation():
                await page.click("button[name=action][value=validate]")
            assert page.url.endswith(f"/admin/flows/{FLOW}#editor"), page.url
            items = await page.locator("#problems li.error-item").all_inner_texts()
            assert len(items) == 2 and f"line {missing_line}, column" in items[1], items
            await context.close()
        finally:
            await chromium.close()
