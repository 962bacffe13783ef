"""The flow editor pages: validate with positions, save, diff, simulate, publish, upload."""

from __future__ import annotations

import re

import pytest
from aiohttp import FormData

from bot import library
from db.enums import Role
from tests.web.harness import Harness, harness

MOOD = library.flow_sources()["daily_mood"]


@pytest.fixture
async def h(db_url: str):  # type: ignore[no-untyped-def]
    async with harness(db_url) as hh:
        await hh.login(await hh.user(Role.ADMIN))
        yield hh


async def _post(h: Harness, source: str, action: str, **extra: str):  # type: ignore[no-untyped-def]
    token = await h.csrf("/admin/flows/daily_mood")
    return await h.client.post(
        "/admin/flows/daily_mood",
        data={"csrf_token": token, "source": source, "action": action, **extra},
        allow_redirects=False,
    )


async def test_list_page_shows_versions_and_running_counts(h: Harness) -> None:
    patient = await h.patient()
    await h.start(patient, "phq9")
    html = await (await h.client.get("/admin/flows")).text()
    assert "daily_mood" in html and "ketamine_induction" in html
    row = re.search(r"/admin/flows/phq9.*?</tr>", html, re.S)
    assert row and "v1: 1" in row.group(0)


async def test_validate_shows_problems_at_their_line(h: Harness) -> None:
    broken = MOOD.replace("goto: done", "goto: nowhere", 1)
    line = next(i for i, t in enumerate(broken.splitlines(), 1) if "goto: nowhere" in t)
    resp = await _post(h, broken, "validate")
    html = await resp.text()
    assert resp.status == 200
    assert f'data-goto-line="{line}"' in html
    assert f"line {line}, column" in html and "nowhere" in html
    # what the admin typed is kept in the editor
    assert "goto: nowhere" in html


async def test_save_refused_when_invalid_and_kept_when_valid(h: Harness) -> None:
    resp = await _post(h, "key: daily_mood\n", "save")
    assert resp.status == 422
    assert "Not saved" in await resp.text()
    edited = MOOD.replace("How is your mood today", "How are things today")
    resp = await _post(h, edited, "save")
    assert resp.status == 200
    assert "Draft saved" in await resp.text()
    page = await (await h.client.get("/admin/flows/daily_mood")).text()
    assert "How are things today" in page and "draft saved" in page


async def test_diff_and_publish(h: Harness) -> None:
    edited = MOOD.replace("How is your mood today", "How are things today")
    html = await (await _post(h, edited, "diff")).text()
    assert '<span class="add">+' in html and "How are things today" in html
    resp = await _post(h, edited, "publish", note="Friendlier mood question")
    assert resp.status == 303
    assert resp.headers["Location"].endswith("?notice=published")
    listing = await (await h.client.get("/admin/flows")).text()
    assert "v2" in listing


async def test_simulate_on_the_page_shows_escalations_after_each_reply(h: Harness) -> None:
    html = await (await _post(h, MOOD, "simulate", reply="")).text()
    assert "How is your mood today" in html
    html = await (await _post(h, MOOD, "simulate", replies="", reply="1")).text()
    assert "none" in html  # no escalation yet
    html = await (await _post(h, MOOD, "simulate", replies="1", reply="2", lang="en")).text()
    assert 'class="badge sev-high"' in html
    html_es = await (await _post(h, MOOD, "simulate", replies="", reply="", lang="es")).text()
    assert "Hola" in html_es or "hola" in html_es


async def test_upload_loads_a_file_into_the_editor(h: Harness) -> None:
    token = await h.csrf("/admin/flows/daily_mood")
    form = FormData()
    form.add_field("csrf_token", token)
    form.add_field(
        "file",
        MOOD.replace("How is your mood today", "Uploaded question").encode(),
        filename="m.yaml",
        content_type="application/yaml",
    )
    resp = await h.client.post("/admin/flows/daily_mood/upload", data=form)
    html = await resp.text()
    assert resp.status == 200 and "Uploaded question" in html and "No problems found" in html


async def test_new_flow_editor_and_clinicians_locked_out(h: Harness) -> None:
    resp = await h.client.get("/admin/flows/new?key=weekly_sleep", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/admin/flows/weekly_sleep"
    html = await (await h.client.get("/admin/flows/weekly_sleep")).text()
    assert "key: weekly_sleep" in html
    bad = await h.client.get("/admin/flows/new?key=Bad Key")
    assert bad.status == 422
    await h.login(await h.user(Role.CLINICIAN))
    assert (await h.client.get("/admin/flows")).status == 403
    assert (await h.client.get("/admin/flows/daily_mood")).status == 403


# -- the editor's script: JSON for validate, diff and simulate ---------------------------------

JSON = {"Accept": "application/json"}


async def _live(h: Harness, source: str, action: str, **extra: str):  # type: ignore[no-untyped-def]
    token = await h.csrf("/admin/flows/daily_mood")
    return await h.client.post(
        "/admin/flows/daily_mood",
        data={"csrf_token": token, "source": source, "action": action, **extra},
        headers=JSON,
        allow_redirects=False,
    )


def _line(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1


async def test_validate_answers_json_with_every_problem_at_once(h: Harness) -> None:
    broken = MOOD.replace("    severity: low\n", "    severity: urgent\n", 1)
    broken = broken.replace("goto: done", "goto: nowhere", 1)
    resp = await _live(h, broken, "validate")
    assert resp.status == 200 and resp.content_type == "application/json"
    body = await resp.json()
    assert body["checked"] and body["errors"] == 2, body["problems"]
    lines = {p["line"] for p in body["problems"]}
    assert lines == {_line(broken, "goto: nowhere"), _line(broken, "severity: urgent")}
    assert all({"line", "column", "message", "severity"} <= set(p) for p in body["problems"])
    ok = await (await _live(h, MOOD, "validate")).json()
    assert ok["problems"] == [] and ok["errors"] == 0


async def test_json_requests_are_csrf_checked_and_admin_only(h: Harness) -> None:
    resp = await h.client.post(
        "/admin/flows/daily_mood",
        data={"csrf_token": "forged", "source": MOOD, "action": "validate"},
        headers=JSON,
    )
    assert resp.status == 403
    await h.login(await h.user(Role.CLINICIAN))
    resp = await h.client.post(
        "/admin/flows/daily_mood", data={"source": MOOD, "action": "validate"}, headers=JSON
    )
    assert resp.status == 403


async def test_diff_answers_json(h: Harness) -> None:
    edited = MOOD.replace("How is your mood today", "How are things today")
    body = await (await _live(h, edited, "diff")).json()
    assert "+" in body["diff"] and "How are things today" in body["diff"]


async def test_simulate_answers_json_and_keeps_the_replies(h: Harness) -> None:
    body = await (await _live(h, MOOD, "simulate", reply="")).json()
    assert "How is your mood today" in body["sim"]["transcript"][0]["text"]
    assert body["replies"] == []
    body = await (await _live(h, MOOD, "simulate", replies="", reply="1")).json()
    assert body["replies"] == ["1"] and body["sim"]["escalations"] == []
    body = await (await _live(h, MOOD, "simulate", replies="1", reply="2", lang="en")).json()
    assert body["replies"] == ["1", "2"]
    assert [e["severity"] for e in body["sim"]["escalations"]] == ["high"]
    restarted = await (await _live(h, MOOD, "restart", replies="1\n2", reply="3")).json()
    assert restarted["replies"] == [] and len(restarted["sim"]["transcript"]) == 1
    resp = await _live(h, MOOD.replace("goto: done", "goto: nowhere", 1), "simulate", reply="1")
    assert resp.status == 422
    body = await resp.json()
    assert body["sim"] is None and "Fix the errors" in body["sim_error"] and body["errors"] == 1


async def test_save_and_publish_never_answer_json(h: Harness) -> None:
    edited = MOOD.replace("How is your mood today", "How are things today")
    resp = await _live(h, edited, "save")
    assert resp.status == 200 and resp.content_type == "text/html"


# -- without script: the same form, landing back on the editor ---------------------------------


async def test_the_page_works_without_script_and_loads_the_editor_script(h: Harness) -> None:
    html = await (await h.client.get("/admin/flows/daily_mood")).text()
    assert re.search(r'<script src="/static/flow_editor\.js\?v=[^"]+" defer>', html)
    assert 'action="/admin/flows/daily_mood#editor"' in html
    assert 'formaction="/admin/flows/daily_mood#simulator"' in html
    assert "Validate to list the problems here" in html
    broken = MOOD.replace("goto: done", "goto: nowhere", 1)
    html = await (await _post(h, broken, "validate")).text()
    line = _line(broken, "goto: nowhere")
    assert f'<a href="#source" data-goto-line="{line}"' in html
    # the problems sit in the side panel, next to the textarea
    side = html[html.index('<aside class="editor-side">') :]
    assert 'id="problems"' in side and "nowhere" in side[: side.index("</aside>")]
    html = await (await _post(h, MOOD, "restart", replies="1\n2")).text()
    assert 'name="replies" value=""' in html and "How is your mood today" in html


# -- change notes and superseded versions --------------------------------------------------------


async def test_publish_needs_a_change_note_and_the_versions_show_it(h: Harness) -> None:
    from sqlalchemy import select

    from db.models import FlowVersion

    edited = MOOD.replace("How is your mood today", "How are things today")
    resp = await _post(h, edited, "publish")
    assert resp.status == 422 and "change note" in await resp.text()
    resp = await _post(h, edited, "publish", note="   ")
    assert resp.status == 422
    resp = await _post(h, edited, "publish", note="x" * 501)
    assert resp.status == 422 and "500" in await resp.text()
    resp = await _post(h, edited, "publish", note="  Friendlier mood question  ")
    assert resp.status == 303
    async with h.db.read() as s:
        notes = dict((await s.execute(select(FlowVersion.version, FlowVersion.change_note))).all())
    assert notes[1] is None and notes[2] == "Friendlier mood question"
    again = edited.replace("How are things today", "How are you today")
    assert (await _post(h, again, "publish", note="Shorter <b>still</b>")).status == 303
    html = await (await h.client.get("/admin/flows/daily_mood")).text()
    versions = html[html.index('id="versions"') :]
    rows = re.findall(r"<li class=\"version-[a-z]+\">(.*?)</li>", versions, re.S)
    assert rows[0].startswith('v3 · <span class="version-status">published</span>')
    assert "Shorter &lt;b&gt;still&lt;/b&gt;" in rows[0]  # escaped
    assert "superseded (by v3)" in rows[1] and "Friendlier mood question" in rows[1]
    assert "superseded (by v2)" in rows[2] and 'class="version-note"' not in rows[2]
    listing = await (await h.client.get("/admin/flows")).text()
    assert "Shorter &lt;b&gt;still&lt;/b&gt;" in listing


async def test_a_roll_back_supersedes_the_version_before_it(h: Harness) -> None:
    edited = MOOD.replace("How is your mood today", "How are things today")
    assert (await _post(h, edited, "publish", note="Reword")).status == 303
    token = await h.csrf("/admin/flows/daily_mood")
    resp = await h.client.post(
        "/admin/flows/daily_mood/rollback",
        data={"csrf_token": token, "version": "1"},
        allow_redirects=False,
    )
    assert resp.status == 303
    html = await (await h.client.get("/admin/flows/daily_mood")).text()
    statuses = re.findall(r'<span class="version-status">([^<]*)</span>', html)
    assert statuses == ["published", "superseded (by v3)", "superseded (by v2)"]


def test_version_labels() -> None:
    from datetime import UTC, datetime

    from bot.services.flow_admin import VersionInfo
    from bot.web.pages.flows_admin import version_rows
    from db.enums import VersionStatus

    def info(version: int, status: VersionStatus) -> VersionInfo:
        now = datetime(2026, 1, 5, tzinfo=UTC)
        return VersionInfo(version, status, now, now, None, "0" * 64, 0)

    rows = version_rows(
        [
            info(3, VersionStatus.RETIRED),
            info(2, VersionStatus.PUBLISHED),
            info(1, VersionStatus.PUBLISHED),
        ]
    )
    assert [r.label for r in rows] == ["retired", "superseded (by v3)", "superseded (by v2)"]
    assert version_rows([]) == []


# -- warnings: validated instruments and one-language edits --------------------------------------


async def test_validated_instruments_carry_a_warning(h: Harness) -> None:
    for key, name in (
        ("phq9", "PHQ-9"),
        ("gad2", "GAD-2"),
        ("cssrs_screen", "C-SSRS"),
        ("mania_screen", "ASRM"),
        ("alcohol_sedatives", "AUDIT-C"),
    ):
        html = await (await h.client.get(f"/admin/flows/{key}")).text()
        assert f"the {name}" in html and "a validated instrument: changing" in html, key
    html = await (await h.client.get("/admin/flows/daily_mood")).text()
    assert "a validated instrument: changing" not in html
    assert 'id="editor-warnings" hidden' in html
    # a flow that says it is validated gets the warning too
    marked = MOOD.replace("validated: false", "validated: true", 1)
    body = await (await _live(h, marked, "validate")).json()
    assert any("validated instrument" in w["message"] for w in body["warnings"])


async def test_changing_one_language_of_a_node_warns_naming_the_node(h: Harness) -> None:
    english = MOOD.replace("How is your mood today", "How are you feeling today", 1)
    html = await (await _post(h, english, "validate")).text()
    assert "English text changed but not the Spanish" in html
    assert f'data-goto-line="{_line(english, "- id: mood")}">mood</a>' in html
    spanish = MOOD.replace("Como esta su animo hoy", "Como se siente hoy", 1)
    body = await (await _live(h, spanish, "validate")).json()
    [warning] = body["warnings"]
    assert warning["message"].startswith("Spanish text changed but not the English")
    assert warning["nodes"] == [{"id": "mood", "line": _line(spanish, "- id: mood")}]
    both = english.replace("Como esta su animo hoy", "Como se siente hoy", 1)
    assert (await (await _live(h, both, "validate")).json())["warnings"] == []
    # a saved draft keeps the warning on the page until it is fixed
    assert (await _post(h, english, "save")).status == 200
    html = await (await h.client.get("/admin/flows/daily_mood")).text()
    assert "English text changed but not the Spanish" in html


def test_translation_warnings_ignore_new_nodes_and_single_language_texts() -> None:
    from bot.web.pages.flows_admin import translation_warnings

    old = "key: f\nnodes:\n  - id: a\n    text: {en: A, es: Ae}\n  - id: b\n    text: B\n"
    new = (
        "key: f\nnodes:\n  - id: a\n    text: {en: A, es: Ae}\n  - id: b\n    text: B2\n"
        "  - id: c\n    text: {en: C, es: Ce}\n"
    )
    assert translation_warnings(new, old, 1) == []
    changed = new.replace("{en: A, es: Ae}", "{en: A2, es: Ae}")
    [warning] = translation_warnings(changed, old, 1)
    assert [(n.id, n.line) for n in warning.nodes] == [("a", 3)]
    assert (
        translation_warnings("key: [", old, 1) == [] and translation_warnings(new, None, None) == []
    )
