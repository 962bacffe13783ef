"""Every read of patient data leaves one audit event (HIPAA 164.312(b)): the pages and the
API, lists and searches (one event per request, a searched phone number never in clear),
and the admin audit page's filters by user, patient and action."""

from __future__ import annotations

import html as html_lib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.services.accounts import create_token
from bot.web.audit_log import masked_query
from db.enums import Role, Severity
from db.models import AuditEvent, User
from tests.web.harness import Harness, harness
from tests.web.test_queue import bearer, escalation

PHONE = "+12025550142"
OTHER_PHONE = "+12025550177"


@dataclass
class World:
    h: Harness
    patient: int
    other: int  # a second patient, for the filters
    escalation: int
    other_escalation: int
    clinician: int
    clinician_email: str
    admin: int
    admin_email: str
    clinician_token: str
    admin_token: str


async def _user_id(h: Harness, email: str) -> int:
    async with h.db.read() as s:
        found = await s.scalar(select(User.id).where(User.email == email))
    assert found is not None
    return found


async def _token(h: Harness, email: str) -> str:
    async with h.db.write() as s:
        _user, token = await create_token(session=s, email=email, label="t", now=h.clock.now())
    return token


async def _world(h: Harness) -> World:
    p = await h.patient("Maya", phone=PHONE)
    q = await h.patient("Sam", phone=OTHER_PHONE)
    await h.start(p, "phq9")  # a check-in and its first text
    eid = await escalation(h, Severity.HIGH, patient_id=p.id)
    other_eid = await escalation(h, Severity.LOW, patient_id=q.id)
    await escalation(h, Severity.MODERATE, patient_id=None, reason="crisis_language")
    clinician_email = await h.user(Role.CLINICIAN)
    admin_email = await h.user(Role.ADMIN)
    return World(
        h=h,
        patient=p.id,
        other=q.id,
        escalation=eid,
        other_escalation=other_eid,
        clinician=await _user_id(h, clinician_email),
        clinician_email=clinician_email,
        admin=await _user_id(h, admin_email),
        admin_email=admin_email,
        clinician_token=await _token(h, clinician_email),
        admin_token=await _token(h, admin_email),
    )


@pytest.fixture
async def w(db_url: str) -> AsyncIterator[World]:
    async with harness(db_url) as h:
        yield await _world(h)


@pytest.fixture
async def demo_w(db_url: str) -> AsyncIterator[World]:
    async with harness(db_url, demo=True) as h:
        yield await _world(h)


async def _last_id(h: Harness) -> int:
    async with h.db.read() as s:
        return int(await s.scalar(select(func.coalesce(func.max(AuditEvent.id), 0))) or 0)


async def _events_after(h: Harness, after: int) -> list[AuditEvent]:
    async with h.db.read() as s:
        return list(
            (
                await s.scalars(
                    select(AuditEvent).where(AuditEvent.id > after).order_by(AuditEvent.id)
                )
            ).all()
        )


def _fill(template: str, w: World) -> str:
    return template.format(p=w.patient, e=w.escalation, phone=PHONE.replace("+", "%2B"), q=w.other)


def _subject(subject: str, w: World) -> tuple[str, str]:
    kind, _, ident = subject.partition(":")
    return kind, ident.format(p=w.patient, e=w.escalation, q=w.other)


def _details(expected: dict[str, Any], w: World) -> dict[str, Any]:
    return {
        k: (w.patient if v == "{p}" else w.other if v == "{q}" else v) for k, v in expected.items()
    }


async def _one_event(w: World, after: int, actor: int) -> AuditEvent:
    """The request's audit events: exactly one (lists too: one per request, not per item)."""
    events = await _events_after(w.h, after)
    assert len(events) == 1, [(e.action, e.subject_type, e.subject_id) for e in events]
    (event,) = events
    assert event.actor_id == actor
    assert event.at == w.h.clock.now()
    assert event.source_address == "127.0.0.1"
    return event


def _check(
    event: AuditEvent, action: str, subject: tuple[str, str], details: dict[str, Any]
) -> None:
    assert (event.action, event.subject_type, event.subject_id) == (action, *subject)
    for key, value in details.items():
        assert event.details.get(key) == value, (key, event.details)


# -- pages --------------------------------------------------------------------------------------

# (path, admin?, action, subject, details it must hold)
PAGES: list[tuple[str, bool, str, str, dict[str, Any]]] = [
    ("/patients", False, "patient.list", "patient:", {"count": 2}),
    ("/patients?q=Maya", False, "patient.search", "patient:", {"count": 1, "query": "Maya"}),
    ("/patients/{p}", False, "patient.view", "patient:{p}", {}),
    ("/patients/{p}/edit", True, "patient.view", "patient:{p}", {"page": "edit"}),
    ("/", False, "escalation.list", "patient:", {"count": 3, "status": ["open", "claimed"]}),
    ("/?severity=high", False, "escalation.list", "patient:", {"count": 1, "severity": "high"}),
    ("/?patient={p}", False, "escalation.list", "patient:{p}", {"count": 1}),
    ("/queue/rows", False, "escalation.list", "patient:", {"count": 3, "refresh": True}),
    ("/escalations/{e}", False, "escalation.view", "escalation:{e}", {"patient_id": "{p}"}),
]


@pytest.mark.parametrize(("path", "admin", "action", "subject", "details"), PAGES)
async def test_page_reads_are_audited(
    w: World, path: str, admin: bool, action: str, subject: str, details: dict[str, Any]
) -> None:
    await w.h.login(w.admin_email if admin else w.clinician_email)
    after = await _last_id(w.h)
    resp = await w.h.client.get(_fill(path, w), allow_redirects=False)
    assert resp.status == 200, (path, resp.status)
    event = await _one_event(w, after, w.admin if admin else w.clinician)
    _check(event, action, _subject(subject, w), _details(details, w))


DEMO_PAGES: list[tuple[str, str, dict[str, Any]]] = [
    ("/demo/phone", "patient:", {"patients": 2}),
    ("/demo/phone?phone={phone}", "patient:{p}", {"patients": 2}),
    ("/demo/phone/messages?phone={phone}", "patient:{p}", {"refresh": True}),
]


@pytest.mark.parametrize(("path", "subject", "details"), DEMO_PAGES)
async def test_demo_phone_reads_are_audited(
    demo_w: World, path: str, subject: str, details: dict[str, Any]
) -> None:
    w = demo_w
    await w.h.login(w.clinician_email)
    after = await _last_id(w.h)
    resp = await w.h.client.get(_fill(path, w), allow_redirects=False)
    assert resp.status == 200, (path, resp.status)
    event = await _one_event(w, after, w.clinician)
    _check(event, "demo.phone.view", _subject(subject, w), _details(details, w))
    if "phone=" in path:
        assert event.details["messages"] >= 1  # the check-in's first texts


async def test_demo_phone_masks_an_unknown_senders_number(demo_w: World) -> None:
    w = demo_w
    await w.h.login(w.clinician_email)
    after = await _last_id(w.h)
    resp = await w.h.client.get("/demo/phone?phone=%2B12025550999")
    assert resp.status == 200
    event = await _one_event(w, after, w.clinician)
    _check(event, "demo.phone.view", ("patient", ""), {"phone": "+*******0999"})
    assert "2025550999" not in json.dumps(event.details)


# -- the API ------------------------------------------------------------------------------------

# (path, admin token?, action, subject, details it must hold)
API: list[tuple[str, bool, str, str, dict[str, Any]]] = [
    ("/api/v1/patients", False, "patient.list", "patient:", {"count": 2}),
    (
        "/api/v1/patients?q=sam&status=active",
        False,
        "patient.search",
        "patient:",
        {"count": 1, "query": "sam", "status": "active"},
    ),
    ("/api/v1/patients/{p}", False, "patient.view", "patient:{p}", {}),
    ("/api/v1/patients/{p}/messages", False, "message.list", "patient:{p}", {}),
    ("/api/v1/patients/{p}/checkins", False, "checkin.list", "patient:{p}", {"count": 1}),
    ("/api/v1/escalations", False, "escalation.list", "patient:", {"count": 3}),
    (
        "/api/v1/escalations?status=open&severity=low",
        False,
        "escalation.list",
        "patient:",
        {"count": 1, "status": ["open"], "severity": "low"},
    ),
    ("/api/v1/escalations?patient_id={p}", False, "escalation.list", "patient:{p}", {"count": 1}),
    ("/api/v1/escalations?limit=1", False, "escalation.list", "patient:", {"count": 1}),
    (
        "/api/v1/escalations/{e}",
        False,
        "escalation.view",
        "escalation:{e}",
        {"patient_id": "{p}"},
    ),
    ("/api/v1/patients/{p}/fhir", False, "patient.export_fhir", "patient:{p}", {}),
    ("/api/v1/patients/{p}/scores.csv", True, "export.scores_csv", "patient:{p}", {}),
    ("/api/v1/exports/escalations.csv", True, "export.escalations_csv", "escalation:", {}),
]


@pytest.mark.parametrize(("path", "admin", "action", "subject", "details"), API)
async def test_api_reads_are_audited(
    w: World, path: str, admin: bool, action: str, subject: str, details: dict[str, Any]
) -> None:
    token = w.admin_token if admin else w.clinician_token
    after = await _last_id(w.h)
    resp = await w.h.client.get(_fill(path, w), headers=bearer(token))
    assert resp.status == 200, (path, resp.status, await resp.text())
    event = await _one_event(w, after, w.admin if admin else w.clinician)
    _check(event, action, _subject(subject, w), _details(details, w))
    if action in {"message.list", "checkin.list"}:
        assert event.details == {"count": len((await resp.json())["items"])}


async def test_refused_reads_are_not_audited(w: World) -> None:
    after = await _last_id(w.h)
    for path in ("/api/v1/patients/999999/messages", "/api/v1/patients/999999/checkins"):
        resp = await w.h.client.get(path, headers=bearer(w.clinician_token))
        assert resp.status == 404
    resp = await w.h.client.get(f"/api/v1/patients/{w.patient}/messages")
    assert resp.status == 401
    assert await _events_after(w.h, after) == []


# -- a search by phone --------------------------------------------------------------------------


def _clear_forms(phone: str) -> list[str]:
    digits = phone.lstrip("+")
    return [phone, digits, digits[1:], digits[1:-4], f"{digits[1:4]}-{digits[4:7]}"]


@pytest.mark.parametrize(
    ("query", "found"),
    [
        (PHONE, 1),
        (PHONE.lstrip("+"), 1),
        ("2025550142", 1),
        ("5550142", 1),
        ("555014", 1),
        ("202-555-0142", 1),  # however it is typed, a number finds its patient
        ("(202) 555 0142", 1),
    ],
)
async def test_a_phone_search_never_stores_the_number_in_clear(
    w: World, query: str, found: int
) -> None:
    await w.h.login(w.clinician_email)
    after = await _last_id(w.h)
    resp = await w.h.client.get("/patients", params={"q": query})
    assert resp.status == 200
    assert ("Maya" in await resp.text()) == bool(found)
    resp = await w.h.client.get(
        "/api/v1/patients", params={"q": query}, headers=bearer(w.clinician_token)
    )
    assert resp.status == 200
    assert [i["id"] for i in (await resp.json())["items"]] == [w.patient] * found
    events = await _events_after(w.h, after)
    assert [(e.action, e.subject_type, e.subject_id) for e in events] == [
        ("patient.search", "patient", ""),
        ("patient.search", "patient", ""),
    ]
    for event in events:
        assert set(event.details) == {"count", "query"}
        assert event.details["count"] == found
        kept = event.details["query"]
        assert kept == masked_query(query)
        # at most the last four digits of a full number; none of a partial one
        digits = re.sub(r"\D", "", query)
        assert len(re.sub(r"\D", "", kept)) == (4 if len(digits) >= 8 else 0), kept
        stored = json.dumps([event.action, event.subject_type, event.subject_id, event.details])
        for clear in _clear_forms(PHONE):
            assert clear not in stored, (clear, stored)


def test_masked_query() -> None:
    assert masked_query("+12025550142") == "+*******0142"
    assert masked_query("(202) 555-0142") == "(***) ***-0142"
    assert masked_query("555014") == "******"
    assert masked_query("MRN-00123") == "MRN-*****"
    assert masked_query("Maya") == "Maya"
    assert masked_query("") == ""


# -- events on a patient's escalations carry the patient ----------------------------------------


async def test_escalation_actions_name_the_patient(w: World) -> None:
    await w.h.login(w.clinician_email)
    csrf = await w.h.csrf()
    after = await _last_id(w.h)
    for action in ("claim", "release"):
        resp = await w.h.client.post(
            f"/escalations/{w.escalation}/{action}",
            data={"csrf_token": csrf},
            allow_redirects=False,
        )
        assert resp.status == 303
    resp = await w.h.client.post(
        f"/api/v1/escalations/{w.other_escalation}/claim", headers=bearer(w.clinician_token)
    )
    assert resp.status == 200
    events = [e for e in await _events_after(w.h, after) if e.subject_type == "escalation"]
    assert [(e.action, e.subject_id, e.details.get("patient_id")) for e in events] == [
        ("escalation.claim", str(w.escalation), w.patient),
        ("escalation.release", str(w.escalation), w.patient),
        ("escalation.claim", str(w.other_escalation), w.other),
    ]


# -- the audit page -----------------------------------------------------------------------------


def _audit_rows(page: str) -> list[tuple[str, str, str]]:
    """(actor, action, subject) of each row the audit page shows."""
    body = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    out = []
    for row in re.findall(r"<tr>(.*?)</tr>", body, re.S):
        cells = [
            html_lib.unescape(re.sub(r"<[^>]+>", "", c)).strip()
            for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        ]
        if len(cells) == 6:
            out.append((cells[1], cells[2], cells[3]))
    return out


async def _audit_page(w: World, query: str) -> list[tuple[str, str, str]]:
    resp = await w.h.client.get("/admin/audit" + query)
    assert resp.status == 200
    return _audit_rows(await resp.text())


async def _reads(w: World) -> None:
    """The clinician reads both patients, the admin one of them, by page and API."""
    await w.h.login(w.clinician_email)
    for path in (f"/patients/{w.patient}", f"/escalations/{w.escalation}", "/patients"):
        assert (await w.h.client.get(path)).status == 200
    for path in (
        f"/api/v1/patients/{w.other}",
        f"/api/v1/escalations/{w.other_escalation}",
        f"/api/v1/patients/{w.patient}/checkins",
    ):
        assert (await w.h.client.get(path, headers=bearer(w.clinician_token))).status == 200
    await w.h.login(w.admin_email)
    assert (await w.h.client.get(f"/patients/{w.other}")).status == 200
    for path in (f"/api/v1/patients/{w.patient}/messages", "/api/v1/escalations"):
        assert (await w.h.client.get(path, headers=bearer(w.admin_token))).status == 200


async def test_audit_page_has_a_patient_filter(w: World) -> None:
    await w.h.login(w.admin_email)
    page = await (await w.h.client.get("/admin/audit")).text()
    form = page.split('<form class="filters"', 1)[1].split("</form>", 1)[0]
    for name in ("action", "actor", "patient"):
        assert f'name="{name}"' in form, name


async def test_audit_page_filters_by_patient(w: World) -> None:
    await _reads(w)
    rows = await _audit_page(w, f"?patient={w.patient}")
    assert sorted((a, s) for _u, a, s in rows) == sorted(
        [
            ("patient.view", f"patient:{w.patient}"),
            ("escalation.view", f"escalation:{w.escalation}"),
            ("checkin.list", f"patient:{w.patient}"),
            ("message.list", f"patient:{w.patient}"),
        ]
    )
    # the other patient's events, including the view of their escalation
    rows = await _audit_page(w, f"?patient=patient:{w.other}")
    assert sorted((a, s) for _u, a, s in rows) == sorted(
        [
            ("patient.view", f"patient:{w.other}"),
            ("escalation.view", f"escalation:{w.other_escalation}"),
            ("patient.view", f"patient:{w.other}"),
        ]
    )
    # combined with the actor
    rows = await _audit_page(w, f"?patient={w.other}&actor={w.admin_email}")
    assert rows == [(w.admin_email, "patient.view", f"patient:{w.other}")]
    # not a number: an error, and no rows
    resp = await w.h.client.get("/admin/audit?patient=Maya")
    assert resp.status == 200
    text = await resp.text()
    assert "enter the patient" in text and _audit_rows(text) == []


async def test_audit_page_filters_by_user(w: World) -> None:
    await _reads(w)
    by_email = await _audit_page(w, f"?actor={w.clinician_email}&action=patient.")
    assert {u for u, _a, _s in by_email} == {w.clinician_email}
    assert sorted(a for _u, a, _s in by_email) == ["patient.list", "patient.view", "patient.view"]
    by_id = await _audit_page(w, f"?actor={w.clinician}&action=patient.")
    assert by_id == by_email
    admin = await _audit_page(w, f"?actor=user:{w.admin}&action=escalation.")
    assert admin == [(w.admin_email, "escalation.list", "patient")]


async def test_audit_page_filters_by_action(w: World) -> None:
    await _reads(w)
    rows = await _audit_page(w, "?action=escalation.view")
    assert sorted(rows) == sorted(
        [
            (w.clinician_email, "escalation.view", f"escalation:{w.escalation}"),
            (w.clinician_email, "escalation.view", f"escalation:{w.other_escalation}"),
        ]
    )
    rows = await _audit_page(w, "?action=escalation.list")
    assert rows == [(w.admin_email, "escalation.list", "patient")]
