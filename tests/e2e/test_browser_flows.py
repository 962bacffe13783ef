"""An admin in Chromium edits a flow: breaks a ``goto:``, sees the problem at its exact line and
column, jumps there from the problem list, fixes it, simulates a conversation that escalates,
publishes, and finds version 2 on the flows page."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.services.accounts import NewUser, create_user
from db.enums import Role
from tests.e2e.conftest import Live, sign_in, watched_page

pytestmark = pytest.mark.browser

ADMIN_EMAIL = "admin@e2e.example.org"
ADMIN_PASSWORD = "e2e-admin-passphrase-flows"
FLOW = "daily_mood"
MISSING = "nowhere_node"  # a node id daily_mood does not have


async def _admin(live: Live) -> None:
    async with live.db.write() as session:
        await create_user(
            session=session,
            new=NewUser(ADMIN_EMAIL, Role.ADMIN, ADMIN_PASSWORD, "Ada Admin"),
            now=datetime.now(UTC),
        )


def _break_first_goto(text: str) -> tuple[str, int, int, str]:
    """The text with its first ``goto:`` aimed at a missing node, the 1-based line and column
    of the bad target, and the original line (to type back as the fix)."""
    lines = text.split("\n")
    index = next(i for i, line in enumerate(lines) if re.search(r"\bgoto: \w+\s*$", line))
    original = lines[index]
    match = re.search(r"\bgoto: (\w+)", original)
    assert match is not None
    lines[index] = original[: match.start(1)] + MISSING
    return "\n".join(lines), index + 1, match.start(1) + 1, original


async def test_admin_edits_validates_simulates_and_publishes_a_flow(
    live: Live, browser: Any, artifacts: Path
) -> None:
    await _admin(live)
    watched = await watched_page(browser, height=1000)
    context, page = watched.context, watched.page
    errors = watched.errors
    dialogs: list[str] = []

    async def accept(dialog: Any) -> None:
        dialogs.append(dialog.message)
        await dialog.accept()

    page.on("dialog", accept)
    editor = page.locator("textarea[name=source]")
    problems = page.locator("#problems")
    try:
        # sign in: the flows page sends us to the login page and back
        await sign_in(page, live, "/admin/flows", ADMIN_EMAIL, ADMIN_PASSWORD)
        row = page.locator("tr", has=page.locator(f"a[href='/admin/flows/{FLOW}']"))
        assert "v1" in await row.inner_text()

        # open the flow: its published YAML in the editor, with a line-number gutter
        async with page.expect_navigation():
            await page.click(f"a[href='/admin/flows/{FLOW}']")
        assert page.url == f"{live.base_url}/admin/flows/{FLOW}"
        original = await editor.input_value()
        assert f"key: {FLOW}" in original
        gutter = await page.inner_text("#gutter")
        assert gutter.split("\n")[-1].strip() == str(original.count("\n") + 1)

        # introduce an error: a goto to a node that does not exist
        broken, line, column, fixed_line = _break_first_goto(original)
        await editor.fill(broken)
        await page.click("button[name=action][value=validate]")  # answered in place
        items = problems.locator("li.error-item")
        await items.first.wait_for()
        assert await editor.input_value() == broken  # what the admin typed is kept
        assert await items.count() == 1, await problems.inner_text()
        item = await items.first.inner_text()
        assert f"line {line}, column {column}" in item, (item, line, column)
        assert MISSING in item

        # clicking the problem puts the cursor on that line, selecting it
        await items.first.locator("a[data-goto-line]").click()
        selection = await editor.evaluate(
            "el => [el.selectionStart, el.selectionEnd, document.activeElement === el]"
        )
        start, end, focused = selection
        assert focused
        assert broken[:start].count("\n") + 1 == line
        assert broken[start:end] == broken.split("\n")[line - 1]

        # fix it by typing over the selected line, then validate again
        await page.keyboard.type(fixed_line)
        assert await editor.input_value() == original
        await page.click("button[name=action][value=validate]")
        await problems.get_by_text("No problems found").wait_for()

        # simulate: mood 1 asks PHQ-9 item 9; item 9 = 2 escalates high
        simulator = page.locator("#simulator")
        for reply, answered in (("1", "daily_mood.mood = 1"), ("2", "daily_mood.q9 = 2")):
            await simulator.locator("input[name=reply]").fill(reply)
            await simulator.locator("button[name=action][value=simulate]").click()
            await simulator.get_by_text(answered).wait_for()
        chat = await simulator.locator("ol.transcript").inner_text()
        assert "How is your mood today" in chat and "better off dead" in chat
        badge = simulator.locator("ul.escalations .badge.sev-high")
        await badge.wait_for(state="visible")
        assert (await badge.text_content() or "").strip() == "high"  # CSS shows it in capitals
        assert "item9_positive" in await simulator.locator("ul.escalations").inner_text()
        assert "q9 = 2" in await simulator.inner_text()
        await page.screenshot(path=str(artifacts / "flow-editor.png"), full_page=True)

        # publish with a change note, confirming the dialog
        await page.fill("input[name=note]", "Point the first goto back at its node")
        async with page.expect_navigation():
            await page.click("button[name=action][value=publish]")
        assert dialogs and dialogs[-1].startswith("Publish this as a new version?")
        notice = page.locator("p.notice[role=status]")
        assert (await notice.inner_text()).startswith("Published as a new version")
        assert "published v2" in await page.inner_text("h1")

        # the flows page lists version 2
        await page.goto(live.base_url + "/admin/flows")
        cells = await row.locator("td").all_inner_texts()
        assert cells[0] == FLOW and cells[2].startswith("v2 · "), cells
        assert errors == [], errors  # no CSP violations or script errors
    finally:
        await context.close()
