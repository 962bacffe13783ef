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
    resp = await _post(h, edited, "publish")
    assert resp.status == 303
    assert "Published+version+2" in resp.headers["Location"]
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
