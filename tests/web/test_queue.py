"""The escalation queue through the real app: ordering, filters, claim races, release,
resolve, the queue page and its refresh fragment, and the escalation detail page."""

from __future__ import annotations

import asyncio
import re
import xml.etree.ElementTree as ET
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.services.accounts import create_token
from bot.services.escalations import raise_escalation
from db.enums import Disposition, EscalationStatus, Role, Severity
from db.models import AuditEvent, Escalation, User
from tests.web.harness import Harness, harness


@pytest.fixture
async def h(db_url: str):  # type: ignore[no-untyped-def]
    async with harness(db_url) as hh:
        yield hh


# -- helpers ---------------------------------------------------------------------------------


async def staff(h: Harness, role: Role = Role.CLINICIAN, name: str = "") -> tuple[int, str, str]:
    """A new user: (id, email, API token). ``name`` replaces the harness default."""
    email = await h.user(role)
    async with h.db.write() as s:
        user, token = await create_token(session=s, email=email, label="t", now=h.clock.now())
        if name:
            user.name = name
        user_id = user.id
    return user_id, email, token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def escalation(
    h: Harness,
    severity: Severity = Severity.HIGH,
    *,
    patient_id: int | None = None,
    reason: str = "phq9_severe",
    summary: str = "PHQ-9 total 22.",
) -> int:
    async with h.db.write() as s:
        e = raise_escalation(
            session=s,
            severity=severity,
            reason=reason,
            summary=summary,
            now=h.clock.now(),
            patient_id=patient_id,
        )
        await s.flush()
        return e.id


async def get_escalation(h: Harness, escalation_id: int) -> Escalation:
    async with h.db.read() as s:
        found = await s.get(Escalation, escalation_id)
        assert found is not None
        return found


async def audit(h: Harness, action: str | None = None) -> list[AuditEvent]:
    query = select(AuditEvent).order_by(AuditEvent.id)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    async with h.db.read() as s:
        return list((await s.scalars(query)).all())


async def api_items(h: Harness, token: str, query: str = "") -> list[dict[str, Any]]:
    resp = await h.client.get(f"/api/v1/escalations{query}", headers=bearer(token))
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert set(body) == {"items", "next"}
    items: list[dict[str, Any]] = body["items"]
    return items


def row_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr class="[^"]*" data-id="(\d+)"', html)]


def row_html(html: str, escalation_id: int) -> str:
    match = re.search(rf'<tr class="[^"]*" data-id="{escalation_id}"[^>]*>.*?</tr>', html, re.S)
    assert match, html
    return match.group(0)


async def page(h: Harness, path: str) -> str:
    resp = await h.client.get(path, allow_redirects=False)
    assert resp.status == 200, (path, resp.status)
    return await resp.text()


def assert_error(body: dict[str, Any], code: str) -> None:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]


# -- ordering and filters --------------------------------------------------------------------


async def _mixed_queue(h: Harness) -> dict[str, int]:
    """Escalations raised a minute apart in a deliberately scrambled order."""
    ids: dict[str, int] = {}
    for name, severity in [
        ("low_old", Severity.LOW),
        ("high_old", Severity.HIGH),
        ("moderate", Severity.MODERATE),
        ("critical_new", Severity.CRITICAL),
        ("high_new", Severity.HIGH),
        ("low_new", Severity.LOW),
    ]:
        ids[name] = await escalation(h, severity)
        h.clock.advance(minutes=1)
    # an older critical one, raised "before" everything else
    async with h.db.write() as s:
        e = raise_escalation(
            session=s,
            severity=Severity.CRITICAL,
            reason="crisis_language",
            summary="",
            now=h.clock.now() - timedelta(hours=1),
            patient_id=None,
        )
        await s.flush()
        ids["critical_old"] = e.id
    return ids


EXPECTED_ORDER = [
    "critical_old",
    "critical_new",
    "high_old",
    "high_new",
    "moderate",
    "low_old",
    "low_new",
]


async def test_api_lists_most_severe_first_then_oldest(h: Harness) -> None:
    _uid, _email, token = await staff(h)
    ids = await _mixed_queue(h)
    items = await api_items(h, token)
    assert [i["id"] for i in items] == [ids[n] for n in EXPECTED_ORDER]
    first = items[0]
    for key in (
        "id",
        "patient_id",
        "checkin_id",
        "severity",
        "reason",
        "summary",
        "status",
        "created_at",
        "claimed_by",
        "resolved_at",
    ):
        assert key in first
    assert first["severity"] == "critical" and first["status"] == "open"


async def test_page_lists_in_the_same_order(h: Harness) -> None:
    ids = await _mixed_queue(h)
    await h.login(await h.user())
    assert row_ids(await page(h, "/")) == [ids[n] for n in EXPECTED_ORDER]
    assert row_ids(await page(h, "/queue/rows")) == [ids[n] for n in EXPECTED_ORDER]


async def test_api_filters(h: Harness) -> None:
    uid, _email, token = await staff(h)
    maya = await h.patient("Maya")
    sam = await h.patient("Sam")
    a = await escalation(h, Severity.CRITICAL, patient_id=maya.id)
    b = await escalation(h, Severity.HIGH, patient_id=maya.id)
    c = await escalation(h, Severity.HIGH, patient_id=sam.id)
    d = await escalation(h, Severity.LOW, patient_id=sam.id)
    resp = await h.client.post(f"/api/v1/escalations/{b}/claim", headers=bearer(token))
    assert resp.status == 200
    resp = await h.client.post(
        f"/api/v1/escalations/{d}/resolve",
        json={"disposition": "no_action_needed", "note": ""},
        headers=bearer(token),
    )
    assert resp.status == 200

    def ids(items: list[dict[str, Any]]) -> list[int]:
        return [i["id"] for i in items]

    assert ids(await api_items(h, token)) == [a, b, c]  # resolved ones leave the queue
    assert ids(await api_items(h, token, "?severity=high")) == [b, c]
    assert ids(await api_items(h, token, "?status=claimed")) == [b]
    assert ids(await api_items(h, token, "?status=resolved")) == [d]
    assert ids(await api_items(h, token, "?status=open,resolved")) == [a, c, d]
    assert ids(await api_items(h, token, f"?patient_id={maya.id}")) == [a, b]
    assert ids(await api_items(h, token, f"?patient_id={sam.id}&severity=high")) == [c]
    assert ids(await api_items(h, token, "?patient_id=999999")) == []
    claimed = (await api_items(h, token, "?status=claimed"))[0]
    assert claimed["claimed_by"] == uid
    for bad in ("?severity=urgent", "?status=closed", "?patient_id=abc"):
        resp = await h.client.get(f"/api/v1/escalations{bad}", headers=bearer(token))
        assert resp.status == 422, bad
        assert_error(await resp.json(), "invalid")


async def test_page_filters(h: Harness) -> None:
    maya = await h.patient("Maya")
    sam = await h.patient("Sam")
    a = await escalation(h, Severity.CRITICAL, patient_id=maya.id)
    b = await escalation(h, Severity.HIGH, patient_id=sam.id)
    c = await escalation(h, Severity.LOW, patient_id=sam.id)
    async with h.db.write() as s:
        found = await s.get(Escalation, c)
        assert found is not None
        found.status = EscalationStatus.RESOLVED
    await h.login(await h.user())
    assert row_ids(await page(h, "/")) == [a, b]
    assert row_ids(await page(h, "/?severity=high")) == [b]
    assert row_ids(await page(h, "/?status=resolved")) == [c]
    assert row_ids(await page(h, f"/?patient={sam.id}")) == [b]
    assert row_ids(await page(h, f"/?patient={maya.id}&severity=high")) == []
    # the refresh fragment keeps the page's filters
    assert row_ids(await page(h, "/queue/rows?severity=critical")) == [a]
    assert row_ids(await page(h, f"/queue/rows?patient={sam.id}&status=resolved")) == [c]
    # the chosen filters stay selected in the form
    html = await page(h, "/?severity=high&status=open")
    assert '<option value="high" selected>' in html
    assert '<option value="open" selected>' in html
    # nonsense filters are ignored rather than failing
    assert row_ids(await page(h, "/?severity=urgent&patient=abc")) == [a, b]


# -- claim, release, resolve ----------------------------------------------------------------


async def test_two_clinicians_claiming_at_once_one_wins(h: Harness) -> None:
    first_id, _e1, first = await staff(h)
    second_id, _e2, second = await staff(h)
    for _ in range(5):
        eid = await escalation(h, Severity.CRITICAL)
        responses = await asyncio.gather(
            h.client.post(f"/api/v1/escalations/{eid}/claim", headers=bearer(first)),
            h.client.post(f"/api/v1/escalations/{eid}/claim", headers=bearer(second)),
        )
        statuses = sorted(r.status for r in responses)
        assert statuses == [200, 409]
        winner = next(r for r in responses if r.status == 200)
        loser = next(r for r in responses if r.status == 409)
        assert_error(await loser.json(), "already_claimed")
        won = await winner.json()
        assert won["status"] == "claimed"
        stored = await get_escalation(h, eid)
        assert stored.status is EscalationStatus.CLAIMED
        assert stored.claimed_by == won["claimed_by"]
        assert stored.claimed_by in (first_id, second_id)
        claims = [ev for ev in await audit(h, "escalation.claim") if ev.subject_id == str(eid)]
        assert len(claims) == 1 and claims[0].actor_id == stored.claimed_by


async def test_claiming_again_is_harmless_and_resolved_cannot_be_claimed(h: Harness) -> None:
    _uid, _email, token = await staff(h)
    eid = await escalation(h)
    for _ in range(2):
        resp = await h.client.post(f"/api/v1/escalations/{eid}/claim", headers=bearer(token))
        assert resp.status == 200
    resp = await h.client.post(
        f"/api/v1/escalations/{eid}/resolve",
        json={"disposition": "reached_patient", "note": "ok"},
        headers=bearer(token),
    )
    assert resp.status == 200
    resp = await h.client.post(f"/api/v1/escalations/{eid}/claim", headers=bearer(token))
    assert resp.status == 409
    assert_error(await resp.json(), "resolved")


async def test_release(h: Harness) -> None:
    owner_id, _e1, owner = await staff(h)
    _other_id, _e2, other = await staff(h)
    _admin_id, _e3, admin = await staff(h, Role.ADMIN)
    eid = await escalation(h)
    resp = await h.client.post(f"/api/v1/escalations/{eid}/release", headers=bearer(owner))
    assert resp.status == 409
    assert_error(await resp.json(), "not_claimed")
    assert (
        await h.client.post(f"/api/v1/escalations/{eid}/claim", headers=bearer(owner))
    ).status == 200
    resp = await h.client.post(f"/api/v1/escalations/{eid}/release", headers=bearer(other))
    assert resp.status == 403
    assert_error(await resp.json(), "forbidden")
    assert (await get_escalation(h, eid)).claimed_by == owner_id
    resp = await h.client.post(f"/api/v1/escalations/{eid}/release", headers=bearer(owner))
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "open" and body["claimed_by"] is None
    stored = await get_escalation(h, eid)
    assert stored.status is EscalationStatus.OPEN and stored.claimed_by is None
    # back in the queue for anyone; an admin may release someone else's claim
    assert (
        await h.client.post(f"/api/v1/escalations/{eid}/claim", headers=bearer(other))
    ).status == 200
    assert (
        await h.client.post(f"/api/v1/escalations/{eid}/release", headers=bearer(admin))
    ).status == 200
    assert len(await audit(h, "escalation.release")) == 2


@pytest.mark.parametrize("disposition", list(Disposition))
async def test_resolve_with_each_disposition(h: Harness, disposition: Disposition) -> None:
    uid, _email, token = await staff(h)
    eid = await escalation(h)
    await h.client.post(f"/api/v1/escalations/{eid}/claim", headers=bearer(token))
    h.clock.advance(minutes=7)
    note = f"Called at once; {disposition}. <b>not markup</b>"
    resp = await h.client.post(
        f"/api/v1/escalations/{eid}/resolve",
        json={"disposition": str(disposition), "note": note},
        headers=bearer(token),
    )
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["status"] == "resolved" and body["disposition"] == str(disposition)
    assert body["note"] == note and body["resolved_at"] is not None
    stored = await get_escalation(h, eid)
    assert stored.status is EscalationStatus.RESOLVED
    assert stored.disposition is disposition and stored.note == note
    assert stored.resolved_by == uid and stored.resolved_at == h.clock.now()
    [event] = await audit(h, "escalation.resolve")
    assert event.actor_id == uid and event.subject_type == "escalation"
    assert event.subject_id == str(eid) and event.details["disposition"] == str(disposition)
    assert event.at == h.clock.now()
    # resolving twice is refused, and it has left the queue
    again = await h.client.post(
        f"/api/v1/escalations/{eid}/resolve",
        json={"disposition": str(disposition), "note": "again"},
        headers=bearer(token),
    )
    assert again.status == 409
    assert_error(await again.json(), "resolved")
    assert (await get_escalation(h, eid)).note == note
    assert eid not in [i["id"] for i in await api_items(h, token)]


async def test_resolve_validates_the_disposition(h: Harness) -> None:
    _uid, _email, token = await staff(h)
    eid = await escalation(h)
    for body in ({"note": "x"}, {"disposition": "fixed_it", "note": "x"}):
        resp = await h.client.post(
            f"/api/v1/escalations/{eid}/resolve", json=body, headers=bearer(token)
        )
        assert resp.status == 422
        assert_error(await resp.json(), "invalid")
    assert (await get_escalation(h, eid)).status is EscalationStatus.OPEN


async def test_resolving_someone_elses_claim(h: Harness) -> None:
    owner_id, _e1, owner = await staff(h)
    _o, _e2, other = await staff(h)
    admin_id, _e3, admin = await staff(h, Role.ADMIN)
    eid = await escalation(h)
    await h.client.post(f"/api/v1/escalations/{eid}/claim", headers=bearer(owner))
    payload = {"disposition": "left_message", "note": "voicemail"}
    resp = await h.client.post(
        f"/api/v1/escalations/{eid}/resolve", json=payload, headers=bearer(other)
    )
    assert resp.status == 409
    assert_error(await resp.json(), "already_claimed")
    resp = await h.client.post(
        f"/api/v1/escalations/{eid}/resolve", json=payload, headers=bearer(admin)
    )
    assert resp.status == 200
    stored = await get_escalation(h, eid)
    assert stored.resolved_by == admin_id and stored.claimed_by == owner_id


async def test_claim_and_resolve_through_the_pages_are_audited(h: Harness) -> None:
    p = await h.patient("Maya")
    eid = await escalation(h, patient_id=p.id)
    email = await h.user()
    await h.login(email)
    token = await h.csrf()
    assert (await page(h, f"/escalations/{eid}")).count('action="/escalations/') >= 2
    resp = await h.client.post(
        f"/escalations/{eid}/claim", data={"csrf_token": token}, allow_redirects=False
    )
    assert resp.status == 303 and resp.headers["Location"] == f"/escalations/{eid}?notice=claimed"
    html = await page(h, f"/escalations/{eid}")
    assert "Claimed by" in html and "Release" in html
    # no disposition: nothing changes and the page says what to do
    resp = await h.client.post(
        f"/escalations/{eid}/resolve",
        data={"csrf_token": token, "disposition": "", "note": "x"},
        allow_redirects=False,
    )
    assert resp.status == 303 and "error=" in resp.headers["Location"]
    assert "Choose a disposition" in await page(h, resp.headers["Location"])
    assert (await get_escalation(h, eid)).status is EscalationStatus.CLAIMED
    resp = await h.client.post(
        f"/escalations/{eid}/resolve",
        data={"csrf_token": token, "disposition": "reached_patient", "note": "Spoke with her."},
        allow_redirects=False,
    )
    assert resp.status == 303 and resp.headers["Location"] == "/?notice=resolved"
    stored = await get_escalation(h, eid)
    assert stored.status is EscalationStatus.RESOLVED
    assert stored.disposition is Disposition.REACHED_PATIENT and stored.note == "Spoke with her."
    assert eid not in row_ids(await page(h, "/"))
    # resolving twice through the page is refused with a message, not a crash
    resp = await h.client.post(
        f"/escalations/{eid}/resolve",
        data={"csrf_token": token, "disposition": "other", "note": "again"},
        allow_redirects=False,
    )
    assert resp.status == 303 and "error=" in resp.headers["Location"]
    assert (await get_escalation(h, eid)).disposition is Disposition.REACHED_PATIENT
    async with h.db.read() as s:
        user_id = await s.scalar(select(User.id).where(User.email == email))
    events = [e for e in await audit(h) if e.subject_type == "escalation"]
    actions = [e.action for e in events]
    assert actions.count("escalation.claim") == 1
    assert actions.count("escalation.resolve") == 1
    assert "escalation.view" in actions
    for event in events:
        assert event.actor_id == user_id and event.subject_id == str(eid)
        assert event.source_address == "127.0.0.1" and event.at == h.clock.now()


async def test_a_clinician_cannot_take_over_a_claim_through_the_pages(h: Harness) -> None:
    owner_id, _e, owner = await staff(h, name="Olga Owner")
    eid = await escalation(h)
    await h.client.post(f"/api/v1/escalations/{eid}/claim", headers=bearer(owner))
    await h.login(await h.user())
    html = await page(h, f"/escalations/{eid}")
    assert "Olga Owner" in html
    assert f'action="/escalations/{eid}/resolve"' not in html  # no form for someone else's
    token = await h.csrf()
    for action, data in (
        ("release", {}),
        ("resolve", {"disposition": "other", "note": "mine now"}),
        ("claim", {}),
    ):
        resp = await h.client.post(
            f"/escalations/{eid}/{action}",
            data={"csrf_token": token, **data},
            allow_redirects=False,
        )
        assert resp.status == 303 and "error=" in resp.headers["Location"], action
    stored = await get_escalation(h, eid)
    assert stored.status is EscalationStatus.CLAIMED and stored.claimed_by == owner_id


# -- the queue page --------------------------------------------------------------------------


async def test_queue_row_shows_what_a_clinician_needs(h: Harness) -> None:
    p = await h.patient("Maya")
    eid = await escalation(h, Severity.CRITICAL, patient_id=p.id, reason="crisis_language")
    await h.login(await h.user())
    row = row_html(await page(h, "/"), eid)
    assert "sev-critical" in row and ">critical<" in row
    assert "Crisis language in a text" in row
    assert "crisis_language" not in row.replace("sev-critical", "")
    assert f'<a href="/patients/{p.id}">Maya</a>' in row  # the name links to the patient
    assert "10:00 EST there" in row  # the patient's own time (New York)
    assert p.phone not in row  # the queue shows first names, not phone numbers
    assert "just now" in row
    assert "overdue" not in row
    assert "<td>—</td>" in row  # not claimed
    h.clock.advance(minutes=12)
    row = row_html(await page(h, "/"), eid)
    assert "12 min" in row and "overdue" not in row
    # the SLA (15 minutes for critical) passes: the row turns overdue
    h.clock.advance(minutes=3)
    row = row_html(await page(h, "/"), eid)
    assert 'class="sev-critical overdue overdue-critical"' in row
    assert '<span class="overdue-label">overdue</span>' in row
    assert "15 min" in row
    # the stylesheet paints overdue rows red
    css = await (await h.client.get("/static/app.css")).text()
    assert "tr.overdue {" in css
    assert re.search(r"\.overdue-label \{[^}]*color: var\(--critical\)", css)
    # claimed: the row says by whom
    _uid, _email, token = await staff(h, name="Nia Nurse")
    await h.client.post(f"/api/v1/escalations/{eid}/claim", headers=bearer(token))
    h.clock.advance(hours=2)
    await h.login(await h.user())  # the first session idled out meanwhile
    row = row_html(await page(h, "/queue/rows"), eid)
    assert "<td>Nia Nurse</td>" in row
    assert "2 h 15 min" in row


async def test_queue_row_for_an_unknown_number_and_escaping(h: Harness) -> None:
    p = await h.patient('<img src=x onerror="alert(1)">')
    a = await escalation(h, patient_id=p.id, reason="some_<b>new</b>_rule")
    b = await escalation(h, patient_id=None, reason="crisis_language")
    await h.login(await h.user())
    html = await page(h, "/")
    assert "<img src=x" not in html and "<b>new</b>" not in html
    assert "&lt;img src=x onerror=" in row_html(html, a)
    assert "<td>Unknown number</td>" in row_html(html, b)


async def test_response_targets_count_from_raising_and_pages_do_not_reset_them(
    h: Harness,
) -> None:
    """A 31-hour-old high once read "due 11:11" because each page moved its SLA; and two
    overdue moderates were pink while it was not. The target now counts from raising, and
    an overdue moderate is marked more quietly than an overdue high."""
    high = await escalation(h, Severity.HIGH, reason="phq9_severe")
    moderate = await escalation(h, Severity.MODERATE, reason="not_responding")
    async with h.db.write() as s:
        e = await s.get(Escalation, high)
        assert e is not None
        e.sla_due_at = h.clock.now() + timedelta(hours=40)  # as re-paging had moved it
    h.clock.advance(hours=31)
    await h.login(await h.user())
    html = await page(h, "/")
    high_row, moderate_row = row_html(html, high), row_html(html, moderate)
    assert "overdue-high" in high_row and '<span class="overdue-label">overdue</span>' in high_row
    assert "overdue-moderate" in moderate_row
    css = await (await h.client.get("/static/app.css")).text()
    assert "tr.overdue.overdue-moderate" in css and "background: transparent" in css


async def test_counts_mine_search_and_the_resolved_view(h: Harness) -> None:
    maya = await h.patient("Maya")
    sam = await h.patient("Sam")
    a = await escalation(h, Severity.CRITICAL, patient_id=maya.id, reason="crisis_language")
    b = await escalation(h, Severity.HIGH, patient_id=sam.id, reason="phq9_severe")
    email = await h.user()
    await h.login(email)
    html = await page(h, "/")
    counts = re.search(r'<p class="counts".*?</p>', html, re.S)
    assert counts and "critical</span> 1" in counts.group(0) and "high</span> 1" in counts.group(0)
    assert row_ids(await page(h, "/?q=Sam")) == [b]
    assert row_ids(await page(h, f"/?q={maya.phone[-7:]}")) == [a]
    token = await h.csrf(f"/escalations/{a}")
    await h.client.post(f"/escalations/{a}/claim", data={"csrf_token": token})
    assert row_ids(await page(h, "/?mine=1")) == [a]
    await h.client.post(
        f"/escalations/{a}/resolve",
        data={"csrf_token": token, "disposition": "reached_patient", "note": "Talked; safe."},
    )
    resolved = row_html(await page(h, "/?status=resolved"), a)
    assert "Reached the patient" in resolved and "Talked; safe." in resolved
    assert "Test User" in resolved and "reached_patient" not in resolved


async def test_queue_rows_fragment(h: Harness) -> None:
    resp = await h.client.get("/queue/rows", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"].startswith("/login")
    await h.login(await h.user())
    resp = await h.client.get("/queue/rows")
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    html = await resp.text()
    assert "<html" not in html and "<tr>" in html and "Nothing waiting" in html
    eid = await escalation(h, Severity.CRITICAL, reason="crisis_language")
    html = await page(h, "/queue/rows")
    assert "<html" not in html and "Nothing waiting" not in html
    assert row_ids(html) == [eid]
    # the full page tells the script where to refresh from
    full = await page(h, "/")
    assert 'data-refresh="/queue/rows"' in full and 'id="queue-rows"' in full
    assert "/static/app.js" in full


async def test_the_refresh_fragment_does_not_keep_an_idle_session_alive(h: Harness) -> None:
    """HIPAA automatic logoff: the page polling itself is not user activity."""
    await h.login(await h.user())
    assert (await h.client.get("/", allow_redirects=False)).status == 200
    for _ in range(16):  # the page polls; nobody touches it for 16 minutes
        h.clock.advance(minutes=1)
        resp = await h.client.get("/queue/rows", allow_redirects=False)
        if resp.status != 200:
            break
    assert resp.status == 303 and resp.headers["Location"].startswith("/login")
    assert (await h.client.get("/", allow_redirects=False)).status == 303


# -- the escalation detail page --------------------------------------------------------------


PHQ9_REPLIES = ["3", "3", "3", "2", "nearly every day", "3", "2", "2", "1"]


async def test_escalation_detail_after_a_real_phq9(h: Harness) -> None:
    p = await h.patient("Maya")
    # an earlier, milder PHQ-9 gives the trend a second point
    await h.start(p, "phq9")
    for reply in ["1", "1", "0", "1", "0", "1", "0", "1", "0"]:
        await h.sms(p.phone, reply)
    h.clock.advance(days=7)
    checkin = await h.start(p, "phq9")
    for reply in PHQ9_REPLIES:
        assert (await h.sms(p.phone, reply)).status == 200
    async with h.db.read() as s:
        item9 = await s.scalar(
            select(Escalation).where(
                Escalation.reason == "item9_positive", Escalation.checkin_id == checkin.id
            )
        )
    assert item9 is not None
    email = await h.user()
    await h.login(email)
    html = await page(h, f"/escalations/{item9.id}")
    # the rule, in plain words and as its code
    assert "Thoughts of death or self-harm (PHQ-9 item 9)" in html
    assert "<code>item9_positive</code>" in html
    # click to call
    assert f'href="tel:{p.phone}"' in html
    # the transcript: the questions sent and the replies received, in order
    transcript = html.split('<ol class="transcript">', 1)[1].split("</ol>", 1)[0]
    bodies = re.findall(r'<li class="msg-(in|out)">.*?<span class="body">(.*?)</span>', transcript)
    assert [b for d, b in bodies if d == "in"] == PHQ9_REPLIES
    assert bodies[0][0] == "out" and "Maya" in bodies[0][1]
    # each answer and the score
    answers = html.split('<table class="answers">', 1)[1].split("</table>", 1)[0]
    for n in range(1, 10):
        assert f"<td>{n}/9 " in answers  # the question as asked
    assert "<td>nearly every day</td><td>3 — Nearly every day</td>" in answers
    assert re.search(r"<strong>phq9</strong>: 22 \(severe\)", html)
    # the trend chart: inline, well-formed SVG with both PHQ-9 totals and the bands
    svg = re.search(r"<svg.*?</svg>", html, re.S)
    assert svg, "no trend chart"
    root = ET.fromstring(svg.group(0))
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{ns}svg"
    assert len(root.findall(f"{ns}circle")) == 2
    assert len(root.findall(f"{ns}rect")) == 5
    assert "PHQ-9" in (root.findtext(f"{ns}title") or "")
    assert "<script" not in svg.group(0)
    [view] = [e for e in await audit(h, "escalation.view") if e.subject_id == str(item9.id)]
    assert view.subject_type == "escalation"
    # the patient page shows the same chart
    patient_html = await page(h, f"/patients/{p.id}")
    assert "<svg" in patient_html and 'class="trend"' in patient_html


async def test_escalation_detail_for_a_text_outside_a_checkin(h: Harness) -> None:
    p = await h.patient("Maya")
    await h.sms(p.phone, "i want to kill myself")
    async with h.db.read() as s:
        crit = await s.scalar(select(Escalation).where(Escalation.severity == Severity.CRITICAL))
    assert crit is not None
    await h.login(await h.user())
    html = await page(h, f"/escalations/{crit.id}")
    assert "i want to kill myself" in html
    assert f'href="tel:{p.phone}"' in html
    assert "<svg" not in html  # no scores yet: no chart
    resp = await h.client.get("/escalations/999999")
    assert resp.status == 404


async def test_a_queue_longer_than_a_page_says_so(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page shows the first ``QUEUE_LIMIT`` and says that more match (never a silent
    cut); the API's first page carries a ``next``."""
    from bot.services import queue as queue_service

    monkeypatch.setattr(queue_service, "QUEUE_LIMIT", 3)
    ids = [await escalation(h, Severity.CRITICAL if i < 2 else Severity.LOW) for i in range(5)]
    await h.login(await h.user())
    for path in ("/", "/queue/rows"):
        html = await page(h, path)
        assert row_ids(html) == ids[:3], path
        assert "More escalations match than the 3 shown here" in html, path
    critical = await page(h, "/queue/rows?severity=critical")
    assert row_ids(critical) == ids[:2]
    assert "More escalations match" not in critical
    _uid, _email, token = await staff(h)
    body = await (await h.client.get("/api/v1/escalations", headers=bearer(token))).json()
    assert [i["id"] for i in body["items"]] == ids[:3] and body["next"] is not None


async def test_a_nul_in_a_search_is_not_an_error(h: Harness) -> None:
    """PostgreSQL text cannot hold a NUL: the searches drop it rather than fail."""
    await h.login(await h.user())
    for path in ("/?q=Ma%00ya", "/queue/rows?q=Ma%00ya", "/patients?q=Ma%00ya"):
        assert (await h.client.get(path)).status == 200, path
