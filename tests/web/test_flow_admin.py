"""Flow administration: drafts, validation with positions, publishing, pinning, roll back, retire."""

from __future__ import annotations

import asyncio
import re

import pytest
from sqlalchemy import func, select

from bot import library
from bot.services.flow_admin import import_library
from db.enums import CheckinStatus, Role, VersionStatus
from db.models import AuditEvent, Checkin, FlowVersion
from tests.web.harness import Harness, harness

MOOD = library.flow_sources()["daily_mood"]


@pytest.fixture
async def h(db_url: str):  # type: ignore[no-untyped-def]
    async with harness(db_url) as hh:
        yield hh


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _put(h: Harness, token: str, key: str, text: str, kind: str = "flows"):  # type: ignore[no-untyped-def]
    return await h.client.put(
        f"/api/v1/{kind}/{key}/draft",
        data=text.encode(),
        headers={**_auth(token), "Content-Type": "application/yaml"},
    )


async def test_list_shows_library_as_version_1(h: Harness) -> None:
    token = await h.token(Role.CLINICIAN)
    resp = await h.client.get("/api/v1/flows", headers=_auth(token))
    assert resp.status == 200
    items = {i["key"]: i for i in (await resp.json())["items"]}
    assert set(items) >= {"phq9", "gad7", "cssrs_screen", "post_session"}
    assert items["phq9"]["published"]["version"] == 1
    assert items["phq9"]["draft"] is None
    protocols = await h.client.get("/api/v1/protocols", headers=_auth(token))
    assert {i["key"] for i in (await protocols.json())["items"]} == {
        "ketamine_induction",
        "esketamine_induction",
        "esketamine_maintenance",
        "maintenance_monthly",
        "relapse_watch",
    }


async def test_draft_publish_cycle_and_version_numbering(h: Harness) -> None:
    admin = await h.token(Role.ADMIN)
    edited = MOOD.replace("How is your mood today", "How are you feeling today")
    assert edited != MOOD
    resp = await _put(h, admin, "daily_mood", edited)
    assert resp.status == 200, await resp.text()
    diff = await (await h.client.get("/api/v1/flows/daily_mood/diff", headers=_auth(admin))).json()
    assert diff["lines_added"] >= 1 and diff["lines_removed"] >= 1
    assert "How are you feeling today" in diff["diff"]
    resp = await h.client.post("/api/v1/flows/daily_mood/publish", headers=_auth(admin))
    assert resp.status == 201
    assert (await resp.json())["version"] == 2
    # no draft left; publishing again is a clean conflict
    resp = await h.client.post("/api/v1/flows/daily_mood/publish", headers=_auth(admin))
    assert resp.status == 409
    assert (await resp.json())["error"]["code"] == "no_draft"
    detail = await (await h.client.get("/api/v1/flows/daily_mood", headers=_auth(admin))).json()
    assert [v["version"] for v in detail["versions"]] == [2, 1]
    assert "How are you feeling today" in detail["published_source"]
    async with h.db.read() as s:
        events = (
            await s.scalars(select(AuditEvent).where(AuditEvent.action == "flow.publish"))
        ).all()
    assert len(events) == 1 and events[0].details["lines_added"] >= 1
    assert events[0].subject_id == "daily_mood@2"


async def test_invalid_draft_is_refused_with_positions(h: Harness) -> None:
    admin = await h.token(Role.ADMIN)
    broken = MOOD.replace("goto: done", "goto: nowhere", 1)
    resp = await _put(h, admin, "daily_mood", broken)
    assert resp.status == 422
    body = await resp.json()
    problems = body["error"]["details"]
    assert any("nowhere" in p["message"] for p in problems)
    line = next(i for i, text in enumerate(broken.splitlines(), 1) if "goto: nowhere" in text)
    bad = next(p for p in problems if "nowhere" in p["message"])
    assert bad["line"] == line
    assert bad["column"] == broken.splitlines()[line - 1].index("nowhere") + 1
    async with h.db.read() as s:
        drafts = await s.scalar(
            select(func.count())
            .select_from(FlowVersion)
            .where(FlowVersion.status == VersionStatus.DRAFT)
        )
    assert drafts == 0


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a: &x [1]\nb: *x\n", "anchors"),
        ("key: daily_mood\n" + "lol: &a [" + ",".join(["x"] * 10) + "]\n", "anchors"),
        ("key: daily_mood\n\ttitle: x\n", "tabs"),
        ("key: daily_mood\ntitle: [unclosed\n", "invalid YAML"),
        ("key: daily_mood\ntitle: T\nnodes: 12\n", "nodes"),
        ("key: daily_mood\ntitle: T\nbogus: 1\nnodes: []\n", "bogus"),
        ("- just\n- a list\n", "mapping"),
        ("key: !!python/object:os.system x\n", "tag"),
    ],
)
async def test_malicious_and_broken_yaml_gets_clear_errors(
    h: Harness, text: str, fragment: str
) -> None:
    admin = await h.token(Role.ADMIN)
    resp = await _put(h, admin, "daily_mood", text)
    assert resp.status == 422
    body = await resp.json()
    assert "Traceback" not in await resp.text()
    problems = body["error"]["details"]
    assert problems and all(p["line"] >= 1 and p["column"] >= 1 for p in problems)
    assert any(fragment.lower() in p["message"].lower() for p in problems), problems


async def test_huge_document_is_413(h: Harness) -> None:
    admin = await h.token(Role.ADMIN)
    resp = await _put(h, admin, "daily_mood", "key: x\n" + "# pad\n" * 60_000)
    assert resp.status == 413


async def test_clinicians_read_but_do_not_change(h: Harness) -> None:
    clinician = await h.token(Role.CLINICIAN)
    assert (await h.client.get("/api/v1/flows/phq9", headers=_auth(clinician))).status == 200
    assert (await _put(h, clinician, "phq9", MOOD)).status == 403
    for action in ("publish", "retire"):
        resp = await h.client.post(f"/api/v1/flows/phq9/{action}", headers=_auth(clinician))
        assert resp.status == 403
    resp = await h.client.post(
        "/api/v1/flows/phq9/rollback", json={"version": 1}, headers=_auth(clinician)
    )
    assert resp.status == 403
    resp = await h.client.post(
        "/api/v1/flows/phq9/simulate", json={"answers": ["1"]}, headers=_auth(clinician)
    )
    assert resp.status == 200


async def test_two_admins_publishing_at_once(h: Harness) -> None:
    admin = await h.token(Role.ADMIN)
    await _put(h, admin, "daily_mood", MOOD.replace("How is your mood today", "How is it going"))
    results = await asyncio.gather(
        h.client.post("/api/v1/flows/daily_mood/publish", headers=_auth(admin)),
        h.client.post("/api/v1/flows/daily_mood/publish", headers=_auth(admin)),
    )
    statuses = sorted(r.status for r in results)
    assert statuses == [201, 409]
    async with h.db.read() as s:
        versions = sorted(
            v
            for v in (
                await s.scalars(select(FlowVersion.version).where(FlowVersion.key == "daily_mood"))
            ).all()
            if v is not None
        )
    assert versions == [1, 2]


async def test_rollback_publishes_a_copy_of_an_old_version(h: Harness) -> None:
    admin = await h.token(Role.ADMIN)
    await _put(h, admin, "daily_mood", MOOD.replace("How is your mood today", "How is it going"))
    await h.client.post("/api/v1/flows/daily_mood/publish", headers=_auth(admin))
    resp = await h.client.post(
        "/api/v1/flows/daily_mood/rollback", json={"version": 1}, headers=_auth(admin)
    )
    assert resp.status == 201
    assert (await resp.json())["version"] == 3
    v3 = await h.client.get("/api/v1/flows/daily_mood/versions/3", headers=_auth(admin))
    assert await v3.text() == MOOD
    assert (
        await h.client.post(
            "/api/v1/flows/daily_mood/rollback", json={"version": 9}, headers=_auth(admin)
        )
    ).status == 404
    assert (
        await h.client.post(
            "/api/v1/flows/daily_mood/rollback", json={"version": "x"}, headers=_auth(admin)
        )
    ).status == 422


async def test_retire_stops_new_checkins_and_warns_about_protocols(h: Harness) -> None:
    admin = await h.token(Role.ADMIN)
    resp = await h.client.post("/api/v1/flows/daily_mood/retire", headers=_auth(admin))
    assert resp.status == 200
    warnings = (await resp.json())["warnings"]
    assert any("ketamine_induction" in w for w in warnings)
    patient = await h.patient()
    resp = await h.client.post(
        f"/api/v1/patients/{patient.id}/checkins", json={"flow": "daily_mood"}, headers=_auth(admin)
    )
    assert resp.status == 422
    assert (await resp.json())["error"]["details"][0]["field"] == "flow"


async def test_protocol_naming_unpublished_flow_is_refused(h: Harness) -> None:
    admin = await h.token(Role.ADMIN)
    text = library.protocol_sources()["maintenance_monthly"].replace(
        "flow: phq9", "flow: not_a_flow", 1
    )
    resp = await _put(h, admin, "maintenance_monthly", text, kind="protocols")
    assert resp.status == 422
    assert any("not_a_flow" in p["message"] for p in (await resp.json())["error"]["details"])


async def test_key_in_file_must_match_the_url(h: Harness) -> None:
    admin = await h.token(Role.ADMIN)
    resp = await _put(h, admin, "other_key", MOOD)
    assert resp.status == 422
    assert any("must match" in p["message"] for p in (await resp.json())["error"]["details"])


async def test_simulate_draft_and_versions(h: Harness) -> None:
    admin = await h.token(Role.ADMIN)
    resp = await h.client.post(
        "/api/v1/flows/daily_mood/simulate", json={"answers": ["1", "2"]}, headers=_auth(admin)
    )
    body = await resp.json()
    assert resp.status == 200
    assert [e["severity"] for e in body["escalations"]] == ["high"]
    assert "cssrs_screen" in body["flows"]
    assert body["transcript"][0]["who"] == "bot"
    assert (
        await h.client.post(
            "/api/v1/flows/daily_mood/simulate",
            json={"answers": ["1"], "version": "draft"},
            headers=_auth(admin),
        )
    ).status == 404
    bad = await h.client.post(
        "/api/v1/flows/daily_mood/simulate", json={"answers": "1"}, headers=_auth(admin)
    )
    assert bad.status == 422
    assert (await bad.json())["error"]["details"][0]["field"] == "answers"


async def test_running_conversation_finishes_on_its_version(h: Harness) -> None:
    """Started on v1, v2 is published mid-conversation: the patient still finishes on v1."""
    admin = await h.token(Role.ADMIN)
    patient = await h.patient()
    checkin = await h.start(patient, "daily_mood")
    assert checkin.flow_version == 1
    v2 = MOOD.replace(
        "{answer: mood, lte: 2}\n        goto: q9", "{answer: mood, lte: 5}\n        goto: q9"
    )
    # v2 would ask item 9 for a mood of 4
    assert v2 != MOOD
    await _put(h, admin, "daily_mood", v2)
    assert (
        await h.client.post("/api/v1/flows/daily_mood/publish", headers=_auth(admin))
    ).status == 201
    await h.sms(patient.phone, "4")
    checkins = await h.checkins(patient)
    assert checkins[0].flow_version == 1 and checkins[0].status is CheckinStatus.COMPLETED
    # a new check-in uses v2
    second = await h.start(patient, "daily_mood")
    assert second.flow_version == 2
    await h.sms(patient.phone, "4")
    async with h.db.read() as s:
        still = await s.get(Checkin, second.id)
        assert still is not None and still.status is CheckinStatus.ACTIVE  # v2 asks item 9 now


async def test_import_library_never_overwrites_edits(h: Harness) -> None:
    admin = await h.token(Role.ADMIN)
    await _put(h, admin, "daily_mood", MOOD.replace("How is your mood today", "How is it going"))
    await h.client.post("/api/v1/flows/daily_mood/publish", headers=_auth(admin))
    shipped = library.flow_sources()
    changed = {
        **shipped,
        "daily_mood": MOOD.replace("Hi {first_name}", "Hello {first_name}"),
        "gad2": shipped["gad2"].replace("Hi {first_name}", "Hello {first_name}"),
    }
    async with h.db.write() as s:
        results = await import_library(
            session=s, sources={"flow": changed}, publish_=True, now=h.clock.now()
        )
    outcome = {r.key: r.outcome for r in results}
    assert outcome["phq9"] == "unchanged"
    assert outcome["daily_mood"].startswith("draft only")
    if "Hello" in changed["gad2"]:
        assert outcome["gad2"] == "published as v2"


async def test_openapi_documents_every_api_route(h: Harness) -> None:
    doc = await (await h.client.get("/api/v1/openapi.json")).json()
    documented = set()
    for path, ops in doc["paths"].items():
        for method in ops:
            documented.add((method.upper(), re.sub(r"\{[^}]+\}", "{}", path)))
    missing = []
    for route in h.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter") or ""
        if (
            not path.startswith("/api/v1/")
            or route.method == "HEAD"
            or path == "/api/v1/openapi.json"
        ):
            continue
        norm = re.sub(r"\{[^}]+\}", "{}", path)
        variants = (
            {norm.replace("{}", "flows", 1), norm.replace("{}", "protocols", 1), norm}
            if norm.startswith("/api/v1/{}")
            else {norm}
        )
        if not any(
            (route.method, v) in documented
            or (route.method, re.sub(r"^/api/v1/(flows|protocols)", "/api/v1/{}", v)) in documented
            for v in variants
        ):
            missing.append((route.method, path))
    assert missing == []
