"""Patient pages: admins create and edit (validated), clinicians act on a patient."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from db.enums import CheckinStatus, PatientStatus, Role
from db.models import Checkin, Patient, Treatment
from tests.web.harness import Harness, harness


@pytest.fixture
async def h(db_url: str):  # type: ignore[no-untyped-def]
    async with harness(db_url) as hh:
        yield hh


def _form(token: str, **fields: str) -> dict[str, str]:
    base = {
        "csrf_token": token,
        "first_name": "Rosa",
        "phone": "+12025550161",
        "timezone": "America/Chicago",
        "language": "es",
        "quiet_enabled": "on",
        "quiet_start": "22:00",
        "quiet_end": "07:30",
    }
    return {**base, **fields}


async def test_admin_creates_and_edits_a_patient(h: Harness) -> None:
    await h.login(await h.user(Role.ADMIN))
    token = await h.csrf("/patients/new")
    resp = await h.client.post("/patients", data=_form(token), allow_redirects=False)
    assert resp.status == 303
    async with h.db.read() as s:
        p = await s.scalar(select(Patient).where(Patient.phone == "+12025550161"))
    assert p is not None and p.language == "es" and p.quiet_start is not None
    assert p.quiet_start.strftime("%H:%M") == "22:00"
    token = await h.csrf(f"/patients/{p.id}/edit")
    resp = await h.client.post(
        f"/patients/{p.id}/edit",
        data=_form(token, first_name="Rosita", quiet_enabled=""),
        allow_redirects=False,
    )
    assert resp.status == 303
    async with h.db.read() as s:
        p2 = await s.get(Patient, p.id)
    assert p2 is not None and p2.first_name == "Rosita" and p2.quiet_start is None


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("phone", "555-1234", "Enter a valid mobile number"),
        ("timezone", "Mars/Olympus", "IANA"),
        ("first_name", "", "first name"),
        ("quiet_start", "25:99", "Quiet hours"),
    ],
)
async def test_invalid_patient_form_says_what_is_wrong(
    h: Harness, field: str, value: str, message: str
) -> None:
    await h.login(await h.user(Role.ADMIN))
    token = await h.csrf("/patients/new")
    resp = await h.client.post("/patients", data=_form(token, **{field: value}))
    assert resp.status == 422
    assert message in await resp.text()


async def test_duplicate_phone_is_refused_on_the_page(h: Harness) -> None:
    existing = await h.patient(phone="+12025550161")
    assert existing.id
    await h.login(await h.user(Role.ADMIN))
    token = await h.csrf("/patients/new")
    resp = await h.client.post("/patients", data=_form(token))
    assert resp.status == 422
    assert "Another patient has this phone number" in await resp.text()


async def test_clinician_records_treatment_and_sends_checkin(h: Harness) -> None:
    p = await h.patient()
    await h.login(await h.user(Role.CLINICIAN))
    token = await h.csrf(f"/patients/{p.id}")
    resp = await h.client.post(
        f"/patients/{p.id}/treatments",
        data={
            "csrf_token": token,
            "kind": "ketamine infusion",
            "administered_at": "2026-03-02T09:30",
        },
        allow_redirects=False,
    )
    assert resp.status == 303 and "notice=" in resp.headers["Location"]
    resp = await h.client.post(
        f"/patients/{p.id}/checkins",
        data={"csrf_token": token, "flow": "phq9"},
        allow_redirects=False,
    )
    assert resp.status == 303
    async with h.db.read() as s:
        treatment = await s.scalar(select(Treatment).where(Treatment.patient_id == p.id))
        checkin = await s.scalar(select(Checkin).where(Checkin.patient_id == p.id))
    assert (
        treatment is not None and treatment.administered_at.hour == 14
    )  # 09:30 New York = 14:30 UTC
    assert checkin is not None and checkin.status is CheckinStatus.SCHEDULED
    # clinicians cannot change status or enrol
    for path, data in (
        (f"/patients/{p.id}/status", {"status": "paused"}),
        (f"/patients/{p.id}/enrollments", {"protocol": "ketamine_induction"}),
    ):
        assert (await h.client.post(path, data={"csrf_token": token, **data})).status == 403


async def test_admin_pauses_and_resumes(h: Harness) -> None:
    p = await h.patient()
    await h.login(await h.user(Role.ADMIN))
    token = await h.csrf(f"/patients/{p.id}")
    await h.client.post(
        f"/patients/{p.id}/enrollments",
        data={"csrf_token": token, "protocol": "ketamine_induction"},
    )
    await h.client.post(f"/patients/{p.id}/status", data={"csrf_token": token, "status": "paused"})
    async with h.db.read() as s:
        statuses = set(
            (await s.scalars(select(Checkin.status).where(Checkin.patient_id == p.id))).all()
        )
        patient = await s.get(Patient, p.id)
    assert patient is not None and patient.status is PatientStatus.PAUSED
    assert statuses == {CheckinStatus.CANCELLED}
    await h.client.post(f"/patients/{p.id}/status", data={"csrf_token": token, "status": "active"})
    async with h.db.read() as s:
        statuses = set(
            (await s.scalars(select(Checkin.status).where(Checkin.patient_id == p.id))).all()
        )
    assert CheckinStatus.SCHEDULED in statuses
    html = await (await h.client.get(f"/patients/{p.id}")).text()
    assert "ketamine_induction" in html and "Conversations" in html


async def test_treatment_date_out_of_range_is_a_clear_error(h: Harness) -> None:
    p = await h.patient()
    await h.login(await h.user(Role.CLINICIAN))
    token = await h.csrf(f"/patients/{p.id}")
    resp = await h.client.post(
        f"/patients/{p.id}/treatments",
        data={
            "csrf_token": token,
            "kind": "ketamine infusion",
            "administered_at": "9999-12-31T23:00",
        },
        allow_redirects=False,
    )
    assert resp.status == 422
    assert "2100" in await resp.text()
    async with h.db.read() as s:
        assert await s.scalar(select(Treatment).where(Treatment.patient_id == p.id)) is None


async def test_patients_have_a_last_name_birth_date_and_record_number(h: Harness) -> None:
    await h.login(await h.user(Role.ADMIN))
    token = await h.csrf("/patients/new")
    form = {
        "csrf_token": token,
        "first_name": "Maya",
        "last_name": "Okafor",
        "date_of_birth": "1984-07-21",
        "phone": "(202) 555-0143",  # national form, read as DEFAULT_REGION (US)
        "timezone": "America/Chicago",
        "language": "en",
        "external_ref": "MRN-0042",
    }
    resp = await h.client.post("/patients", data=form, allow_redirects=False)
    assert resp.status == 303
    async with h.db.read() as s:
        p = await s.scalar(select(Patient).where(Patient.last_name == "Okafor"))
    assert p is not None and p.phone == "+12025550143" and str(p.date_of_birth) == "1984-07-21"
    html = await (await h.client.get(f"/patients/{p.id}")).text()
    assert "Maya Okafor" in html and "1984-07-21" in html and "MRN-0042" in html
    listing = await (await h.client.get("/patients", params={"q": "okafor"})).text()
    assert f'href="/patients/{p.id}"' in listing
    by_phone = await (await h.client.get("/patients", params={"q": "(202) 555-0143"})).text()
    assert f'href="/patients/{p.id}"' in by_phone


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("phone", "555-123-4567", "Enter a valid mobile number"),
        ("date_of_birth", "2999-01-01", "must be in the past"),
        ("date_of_birth", "21/07/1984", "like 1984-07-21"),
    ],
)
async def test_bad_patient_fields_are_422_with_the_reason(
    h: Harness, field: str, value: str, message: str
) -> None:
    await h.login(await h.user(Role.ADMIN))
    token = await h.csrf("/patients/new")
    form = {
        "csrf_token": token,
        "first_name": "Ana",
        "phone": "+12025550150",
        "timezone": "America/Chicago",
        "language": "en",
        field: value,
    }
    resp = await h.client.post("/patients", data=form, allow_redirects=False)
    assert resp.status == 422
    assert message in await resp.text()


async def test_a_duplicate_record_number_on_edit_is_a_form_error_not_a_500(h: Harness) -> None:
    a = await h.patient("Ana")
    b = await h.patient("Bea")
    async with h.db.write() as s:
        row = await s.get(Patient, a.id)
        assert row is not None
        row.external_ref = "MRN-1"
    await h.login(await h.user(Role.ADMIN))
    token = await h.csrf(f"/patients/{b.id}/edit")
    resp = await h.client.post(
        f"/patients/{b.id}/edit",
        data={
            "csrf_token": token,
            "first_name": "Bea",
            "phone": b.phone,
            "timezone": "America/New_York",
            "language": "en",
            "external_ref": "MRN-1",
        },
        allow_redirects=False,
    )
    assert resp.status == 422
    assert "Another patient has this record number." in await resp.text()
