"""The fast read paths keep their guarantees: the queue API's JSON, the patient page's
timeline, the session touch, the flow pickers, the audit of every view, and token
revocation at once."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from urllib.parse import quote

import pytest
from sqlalchemy import func, select, update

from bot import library
from bot.services import conversation_view, queue, sessions
from bot.web.api import serialize
from db.enums import (
    Disposition,
    EscalationStatus,
    MessageStatus,
    Role,
    Severity,
    VersionStatus,
)
from db.models import (
    ApiToken,
    AuditEvent,
    Escalation,
    FlowVersion,
    Message,
    Treatment,
    User,
    WebSession,
)
from tests.web.harness import Harness, harness
from tests.web.test_queue import bearer, escalation, staff

MOOD = library.flow_sources()["daily_mood"]


@pytest.fixture
async def h(db_url: str):  # type: ignore[no-untyped-def]
    async with harness(db_url) as hh:
        yield hh


# -- the queue API -----------------------------------------------------------------------------


async def test_queue_json_is_what_the_orm_serialiser_gives(h: Harness) -> None:
    """Written from plain rows, the items are the same JSON as ``serialize.escalation``."""
    p = await h.patient("Zoë")
    uid, email, token = await staff(h, name="Nia")
    open_ = await escalation(h, Severity.CRITICAL, patient_id=p.id, summary='said "stop" — ñ\n')
    claimed = await escalation(h, Severity.LOW, patient_id=None, reason="crisis_language")
    resolved = await escalation(h, Severity.MODERATE, patient_id=p.id)
    h.clock.advance(minutes=3)
    async with h.db.write() as s:
        await s.execute(
            update(Escalation)
            .where(Escalation.id == claimed)
            .values(status=EscalationStatus.CLAIMED, claimed_by=uid, claimed_at=h.clock.now())
        )
        await s.execute(
            update(Escalation)
            .where(Escalation.id == resolved)
            .values(
                status=EscalationStatus.RESOLVED,
                claimed_by=uid,
                claimed_at=h.clock.now(),
                resolved_by=uid,
                resolved_at=h.clock.now(),
                disposition=Disposition.LEFT_MESSAGE,
                note="<b>called</b> 'twice'",
                page_count=2,
            )
        )
    for query, statuses in (
        ("", [EscalationStatus.OPEN, EscalationStatus.CLAIMED]),
        ("?status=resolved", [EscalationStatus.RESOLVED]),
        ("?status=open,claimed,resolved&severity=critical", list(EscalationStatus)),
    ):
        resp = await h.client.get(f"/api/v1/escalations{query}", headers=bearer(token))
        assert resp.status == 200 and resp.content_type == "application/json"
        body = await resp.json()
        severity = Severity.CRITICAL if "severity" in query else None
        async with h.db.read() as s:
            rows = (await s.scalars(queue.queue_query(statuses=statuses, severity=severity))).all()
            expected = [
                serialize.escalation(e, email if e.claimed_by == uid else None) for e in rows
            ]
        assert body == {"items": expected, "next": None}, query
        assert expected, query
    ids = {
        i["id"]
        for i in (
            await (
                await h.client.get(
                    "/api/v1/escalations?status=open,claimed,resolved", headers=bearer(token)
                )
            ).json()
        )["items"]
    }
    assert ids == {open_, claimed, resolved}


async def test_a_changed_escalation_is_never_served_from_the_item_cache(h: Harness) -> None:
    """Items are memoised on their values: a claim, a page or an edit shows at the next poll."""
    uid, email, token = await staff(h, name="Nia")
    eid = await escalation(h, Severity.HIGH, summary="first")

    async def item() -> dict[str, object]:
        body = await (await h.client.get("/api/v1/escalations", headers=bearer(token))).json()
        (found,) = [i for i in body["items"] if i["id"] == eid]
        return found  # type: ignore[no-any-return]

    assert (await item())["status"] == "open"
    resp = await h.client.post(f"/api/v1/escalations/{eid}/claim", headers=bearer(token))
    assert resp.status == 200
    claimed = await item()
    assert (claimed["status"], claimed["claimed_by"], claimed["claimed_by_email"]) == (
        "claimed",
        uid,
        email,
    )
    async with h.db.write() as s:
        await s.execute(
            update(Escalation).where(Escalation.id == eid).values(page_count=3, summary="second")
        )
    again = await item()
    assert (again["page_count"], again["summary"]) == (3, "second")


async def test_the_queue_api_pages_through_every_item_once_in_queue_order(h: Harness) -> None:
    """``limit`` and ``after``: pages in queue order, every item once (also items created at
    the same moment), ``next`` null on the last page; bad values are a 422 naming the field."""
    _uid, _email, token = await staff(h)
    ids = []
    for i in range(7):
        ids.append(await escalation(h, Severity.HIGH if i % 2 else Severity.CRITICAL))
        if i % 3 == 2:
            h.clock.advance(minutes=1)
    whole = await (await h.client.get("/api/v1/escalations", headers=bearer(token))).json()
    assert whole["next"] is None
    expected = [i["id"] for i in whole["items"]]
    assert sorted(expected) == sorted(ids)
    seen: list[int] = []
    after = ""
    pages = 0
    while True:
        query = "?limit=3" + (f"&after={quote(after, safe='')}" if after else "")
        page = await (
            await h.client.get(f"/api/v1/escalations{query}", headers=bearer(token))
        ).json()
        pages += 1
        seen += [i["id"] for i in page["items"]]
        if page["next"] is None:
            break
        after = page["next"]
    assert seen == expected and pages == 3
    for bad, field in (
        ("?limit=0", "limit"),
        ("?limit=501", "limit"),
        ("?limit=x", "limit"),
        ("?after=nope", "after"),
        ("?after=9~2026-01-01T00:00:00%2B00:00~1", "after"),
        ("?after=0~2026-01-01T00:00:00~1", "after"),
        ("?after=0~0001-01-01T00:00:00%2B05:00~1", "after"),
        ("?limit=" + "9" * 5000, "limit"),
    ):
        resp = await h.client.get(f"/api/v1/escalations{bad}", headers=bearer(token))
        assert resp.status == 422, bad
        assert (await resp.json())["error"]["details"][0]["field"] == field, bad


async def test_queue_json_text_matches_json_dumps() -> None:
    """Byte for byte what ``json.dumps`` writes (compact), also for odd strings and nulls."""
    from datetime import UTC, datetime

    at = datetime(2026, 3, 2, 15, 0, 0, 120000, tzinfo=UTC)
    naive = datetime(2026, 3, 2, 15, 0)  # SQLite hands back naive UTC
    row = (7, None, 3, "high", "r\u2028", 'a "b"\\ \x00 ñ 😀', "open", at, naive, None, None,
           None, at, 4, None, "<n>", 0)  # fmt: skip
    expected = {
        "id": 7,
        "patient_id": None,
        "checkin_id": 3,
        "severity": "high",
        "reason": "r\u2028",
        "summary": 'a "b"\\ \x00 ñ 😀',
        "status": "open",
        "created_at": "2026-03-02T15:00:00.120000Z",
        "sla_due_at": "2026-03-02T15:00:00Z",
        "claimed_by": None,
        "claimed_by_email": None,
        "claimed_at": None,
        "resolved_at": "2026-03-02T15:00:00.120000Z",
        "resolved_by": 4,
        "disposition": None,
        "note": "<n>",
        "page_count": 0,
    }
    text = serialize.escalation_rows_json([row])
    assert text == json.dumps({"items": [expected], "next": None}, separators=(",", ":"))
    assert serialize.escalation_rows_json([]) == '{"items":[],"next":null}'
    assert serialize.escalation_rows_json([], "0~x~1") == '{"items":[],"next":"0~x~1"}'


async def test_a_revoked_token_or_deactivated_user_is_refused_at_once(h: Harness) -> None:
    _uid, email, token = await staff(h)
    assert (await h.client.get("/api/v1/escalations", headers=bearer(token))).status == 200
    async with h.db.write() as s:
        await s.execute(update(ApiToken).values(revoked_at=h.clock.now()))
    assert (await h.client.get("/api/v1/escalations", headers=bearer(token))).status == 401
    _uid, email, token = await staff(h)
    assert (await h.client.get("/api/v1/escalations", headers=bearer(token))).status == 200
    async with h.db.write() as s:
        await s.execute(update(User).where(User.email == email).values(active=False))
    assert (await h.client.get("/api/v1/escalations", headers=bearer(token))).status == 401


# -- the patient page ------------------------------------------------------------------------


def _blocks(html: str) -> list[str]:
    section = html.split('<section class="card" id="conversations">', 1)[1].split("</section>")[0]
    return re.findall(r'<article class="block.*?</article>', section, re.S)


async def test_each_reply_sits_under_the_question_it_answered(h: Harness) -> None:
    """The misreading this view exists to prevent: in a newest-first list the reply to item 8
    sat under item 9. Here each check-in is a block, oldest message first, and each reply
    says which question it answered and what it was read as."""
    p = await h.patient("Maya")
    await h.start(p, "phq9")
    for reply in ["1", "2", "0", "1", "0", "3", "1", "2", "1"]:
        await h.sms(p.phone, reply)
    await h.login(await h.user())
    blocks = _blocks(await _page(h, p.id))
    assert len(blocks) == 2  # newest first: item 9 handed over to the C-SSRS
    assert "C-SSRS" in blocks[0]
    block = blocks[1]
    assert "PHQ-9" in block and "phq9 v1" in block
    items = re.findall(r"<li class=\"(in|out)[^\"]*\">(.*?)</li>", block, re.S)
    kinds = [k for k, _ in items]
    assert kinds[:2] == ["out", "out"] or kinds[0] == "out"  # the opening texts come first
    # every reply directly follows the question it answered, and reads as that question
    for i, (kind, text) in enumerate(items):
        if kind != "in":
            continue
        asked = items[i - 1][1]
        number = re.search(r"q(\d): ", text)
        assert number, text
        assert f"{number.group(1)}/9" in asked
    q9 = next(t for k, t in items if k == "in" and "q9: " in t)
    assert "1 — Several days" in q9
    assert re.search(r'<li class="in safety">', block)


async def test_a_reply_that_was_not_understood_shows_the_reask(h: Harness) -> None:
    p = await h.patient("Ana")
    await h.start(p, "phq9")
    await h.sms(p.phone, "banana")
    await h.sms(p.phone, "2")
    await h.login(await h.user())
    block = _blocks(await _page(h, p.id))[0]
    assert "not understood; asked again" in block
    assert 'class="out reask"' in block and "Asked again" in block
    assert "2 — More than half the days" in block


async def test_texts_outside_check_ins_and_treatments_are_their_own_blocks(h: Harness) -> None:
    p = await h.patient("Sam")
    await h.start(p, "phq2")
    await h.sms(p.phone, "0")
    await h.sms(p.phone, "0")
    h.clock.advance(hours=3)
    await h.sms(p.phone, "can I move my appointment?")
    async with h.db.write() as s:
        s.add(Treatment(patient_id=p.id, kind="ketamine infusion", administered_at=h.clock.now()))
    h.clock.advance(minutes=5)
    await h.sms(p.phone, "I want to die")  # crisis words outside a check-in
    await h.login(await h.user())
    html = await _page(h, p.id)
    blocks = _blocks(html)
    assert "Texts outside a check-in" in blocks[0]
    assert "I want to die" in blocks[0] and 'class="badge sev-critical"' in blocks[0]
    assert "Treatment:</strong> ketamine infusion" in html
    assert "PHQ-2" in blocks[-1] or "phq2" in blocks[-1]


async def test_conversations_are_escaped(h: Harness) -> None:
    payload = "<img src=x onerror=\"alert('1')\"> & ñ"
    p = await h.patient("Maya")
    await h.start(p, "phq9")
    await h.sms(p.phone, payload)
    async with h.db.write() as s:
        s.add(Treatment(patient_id=p.id, kind=payload, administered_at=h.clock.now()))
    await h.login(await h.user())
    page = await _page(h, p.id)
    assert "<img" not in page and "&lt;img src=x" in page


async def test_pages_go_by_check_in_and_cover_each_once(h: Harness) -> None:
    per_page = conversation_view.CHECKINS_PER_PAGE
    p = await h.patient("Lee")
    for i in range(per_page + 5):
        h.clock.advance(days=1)
        await h.start(p, "phq2")
        await h.sms(p.phone, "0")
        await h.sms(p.phone, "1" if i % 2 else "0")
    await h.login(await h.user())
    url, seen = f"/patients/{p.id}", 0
    html = await _page_at(h, url)
    first = _blocks(html)
    assert len(first) == per_page
    older = re.search(r'<a rel="next" href="([^"]+)"', html)
    assert older is not None
    html = await _page_at(h, older.group(1).replace("&amp;", "&").split("#")[0])
    second = _blocks(html)
    seen = len(first) + len(second)
    assert seen == per_page + 5
    assert "Newest check-ins" in html and 'rel="next"' not in html
    assert not set(first) & set(second)


async def test_a_changed_delivery_status_shows_at_the_next_view(h: Harness) -> None:
    p = await h.patient()
    await h.start(p, "phq2")
    await h.login(await h.user())
    page = await _page(h, p.id)
    assert "mark-queued" in page and "mark-delivered" not in page
    async with h.db.write() as s:
        await s.execute(update(Message).values(status=MessageStatus.DELIVERED))
    page = await _page(h, p.id)
    assert "mark-delivered" in page and "mark-queued" not in page


async def test_a_malformed_older_link_is_a_clear_400(h: Harness) -> None:
    p = await h.patient()
    await h.login(await h.user())
    for bad in (
        "x",
        "2026-01-01T00:00:00~1",
        "2026-01-01T00:00:00+00:00~-1",
        "nope~1",
        "0001-01-01T00:00:00+05:00~1",
        "9999-12-31T23:59:59-05:00~1",
    ):
        resp = await h.client.get(f"/patients/{p.id}", params={"before": bad})
        assert resp.status == 400, bad
        assert "older check-ins is malformed" in await resp.text()
    ok = conversation_view.Cursor(h.clock.now(), 7)
    assert conversation_view.Cursor.parse(ok.token()) == ok
    resp = await h.client.get(f"/patients/{p.id}", params={"before": ok.token()})
    assert resp.status == 200 and "Nothing older." in await resp.text()


async def _page_at(h: Harness, url: str) -> str:
    resp = await h.client.get(url, allow_redirects=False)
    assert resp.status == 200, url
    return await resp.text()


async def _page(h: Harness, patient_id: int) -> str:
    resp = await h.client.get(f"/patients/{patient_id}", allow_redirects=False)
    assert resp.status == 200
    return await resp.text()


async def test_every_patient_page_view_is_audited(h: Harness) -> None:
    p = await h.patient()
    email = await h.user()
    await h.login(email)
    for _ in range(3):
        await _page(h, p.id)
    assert (await h.client.get("/patients/999999")).status == 404
    async with h.db.read() as s:
        events = (
            await s.scalars(select(AuditEvent).where(AuditEvent.action == "patient.view"))
        ).all()
        user_id = await s.scalar(select(User.id).where(User.email == email))
    assert len(events) == 3
    assert {(e.actor_id, e.subject_type, e.subject_id) for e in events} == {
        (user_id, "patient", str(p.id))
    }
    assert all(e.at == h.clock.now() and e.details == {} for e in events)


def _options(html: str, name: str) -> list[str]:
    select_ = re.search(rf'<select [^>]*name="{name}"[^>]*>(.*?)</select>', html, re.S)
    assert select_, name
    return re.findall(r'<option value="([^"]+)"', select_.group(1))


async def test_flow_pickers_follow_publish_and_retire_at_once(h: Harness) -> None:
    p = await h.patient()
    await h.login(await h.user(Role.ADMIN))
    before = _options(await _page(h, p.id), "flow")
    assert "daily_mood" in before and "evening_mood" not in before
    assert "ketamine_induction" in _options(await _page(h, p.id), "protocol")
    admin = await h.token(Role.ADMIN)
    source = MOOD.replace("key: daily_mood", "key: evening_mood", 1)
    resp = await h.client.put(
        "/api/v1/flows/evening_mood/draft",
        data=source.encode(),
        headers={**bearer(admin), "Content-Type": "application/yaml"},
    )
    assert resp.status in (200, 201), await resp.text()
    assert "evening_mood" not in _options(await _page(h, p.id), "flow")  # a draft only
    resp = await h.client.post("/api/v1/flows/evening_mood/publish", headers=bearer(admin))
    assert resp.status == 201
    assert "evening_mood" in _options(await _page(h, p.id), "flow")
    resp = await h.client.post("/api/v1/flows/evening_mood/retire", headers=bearer(admin))
    assert resp.status == 200
    assert "evening_mood" not in _options(await _page(h, p.id), "flow")


async def test_flow_pickers_see_another_process_at_once(h: Harness) -> None:
    """A change this process did not commit (the CLI, another server) shows at the next view."""
    p = await h.patient()
    await h.login(await h.user())
    assert "daily_mood" in _options(await _page(h, p.id), "flow")
    async with h.db.engine.begin() as conn:  # Core, as another process would: no ORM events
        await conn.execute(
            update(FlowVersion)
            .where(FlowVersion.key == "daily_mood")
            .values(status=VersionStatus.RETIRED)
        )
    assert "daily_mood" not in _options(await _page(h, p.id), "flow")


# -- the session touch -------------------------------------------------------------------------


async def _seen(h: Harness) -> tuple[object, object]:
    async with h.db.read() as s:
        row = (await s.execute(select(WebSession.last_seen_at, WebSession.idle_expires_at))).one()
    return row[0], row[1]


async def test_the_session_is_touched_at_most_every_30_seconds(h: Harness) -> None:
    await h.login(await h.user())
    signed_in = h.clock.now()
    assert await _seen(h) == (signed_in, signed_in + sessions.IDLE_TIMEOUT)
    h.clock.advance(seconds=20)
    assert (await h.client.get("/", allow_redirects=False)).status == 200
    assert await _seen(h) == (signed_in, signed_in + sessions.IDLE_TIMEOUT)  # not written
    h.clock.advance(seconds=10)
    assert (await h.client.get("/", allow_redirects=False)).status == 200
    now = h.clock.now()
    assert await _seen(h) == (now, now + sessions.IDLE_TIMEOUT)
    # the queue's own refresh is not activity: never a touch
    h.clock.advance(minutes=5)
    assert (await h.client.get("/queue/rows", allow_redirects=False)).status == 200
    assert await _seen(h) == (now, now + sessions.IDLE_TIMEOUT)
    # idle for the whole timeout (less than a touch interval after the last one): signed out
    h.clock.advance(minutes=10)
    assert (await h.client.get("/", allow_redirects=False)).status == 303


async def test_a_touch_never_revives_a_revoked_session_nor_moves_expiry_back(h: Harness) -> None:
    await h.login(await h.user())
    async with h.db.read() as s:
        session_id = await s.scalar(select(WebSession.id))
    assert session_id is not None
    later = h.clock.now() + timedelta(minutes=2)
    async with h.db.write() as s:
        await sessions.write_touch(
            session=s,
            session_id=session_id,
            last_seen_at=later,
            idle_expires_at=later + sessions.IDLE_TIMEOUT,
        )
    async with h.db.write() as s:  # an earlier request's touch arriving late
        await sessions.write_touch(
            session=s,
            session_id=session_id,
            last_seen_at=h.clock.now(),
            idle_expires_at=h.clock.now() + sessions.IDLE_TIMEOUT,
        )
    assert await _seen(h) == (later, later + sessions.IDLE_TIMEOUT)
    async with h.db.write() as s:
        await s.execute(update(WebSession).values(revoked_at=h.clock.now()))
        await sessions.write_touch(
            session=s,
            session_id=session_id,
            last_seen_at=later + timedelta(minutes=1),
            idle_expires_at=later + sessions.IDLE_TIMEOUT + timedelta(minutes=1),
        )
    assert await _seen(h) == (later, later + sessions.IDLE_TIMEOUT)
    assert (await h.client.get("/", allow_redirects=False)).status == 303


async def test_plain_reads_are_autocommit_on_postgres_only(h: Harness) -> None:
    """No BEGIN/ROLLBACK round trips on PostgreSQL; SQLite keeps its read transactions."""
    async with h.db.plain_reads() as conn:
        assert await conn.scalar(select(func.count()).select_from(User)) is not None
        level = conn.sync_connection.get_execution_options().get("isolation_level")  # type: ignore[union-attr]
    assert (level == "AUTOCOMMIT") is (not h.db.is_sqlite)
