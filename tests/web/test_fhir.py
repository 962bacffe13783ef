"""FHIR export through the real app on both backends: a patient answers a PHQ-9 and a GAD-7
over SMS, one PHQ-9 expires half-answered, and the Bundle must validate with the
``fhir.resources`` R4B models and carry the right codes, answers and references."""

from __future__ import annotations

import functools
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient as FhirPatient
from fhir.resources.R4B.questionnaire import Questionnaire
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse
from sqlalchemy import select

from bot.app import create_app
from bot.services import fhir
from bot.services.dispatch import expire_due
from bot.web.api import exports
from db.enums import CheckinStatus, Role
from db.models import Answer, AuditEvent, Checkin, Patient, Score
from tests.web import harness as harness_module
from tests.web.harness import PUBLIC_BASE, Harness, harness

PHQ9_ANSWERS = [1, 2, 0, 1, 3, 0, 1, 2, 0]  # total 10: moderate
GAD7_ANSWERS = [2, 2, 1, 1, 0, 3, 1]  # total 10: moderate
EXPIRED_PHQ9 = [2, 1, 1, 1, 1, 1, 1, 1]  # q9 never answered: 9 * 9 / 8 = 10.125, stored 10.12
FREQUENCY = {
    0: "Not at all",
    1: "Several days",
    2: "More than half the days",
    3: "Nearly every day",
}
RESOURCE_CLASSES: dict[str, Any] = {
    "Patient": FhirPatient,
    "QuestionnaireResponse": QuestionnaireResponse,
    "Observation": Observation,
}


def with_exports(monkeypatch: pytest.MonkeyPatch) -> None:
    """Build the harness app with the export routes (``setup`` is idempotent)."""
    monkeypatch.setattr(
        harness_module, "create_app", functools.partial(create_app, extra_setup=exports.setup)
    )


@pytest.fixture
async def h(db_url: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    with_exports(monkeypatch)
    async with harness(db_url) as hh:
        yield hh


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def iso(value: datetime) -> str:
    return value.isoformat()


async def answer_all(h: Harness, patient: Patient, flow: str, answers: list[int]) -> Checkin:
    checkin = await h.start(patient, flow)
    for value in answers:
        h.clock.advance(minutes=1)
        resp = await h.sms(patient.phone, str(value))
        assert resp.status == 200
    return checkin


async def patient_with_history(h: Harness) -> tuple[Patient, list[Checkin]]:
    """PHQ-9 and GAD-7 completed over SMS, then a PHQ-9 left unfinished until it expires."""
    p = await h.patient("Maya")
    phq9 = await answer_all(h, p, "phq9", PHQ9_ANSWERS)
    h.clock.advance(hours=1)
    gad7 = await answer_all(h, p, "gad7", GAD7_ANSWERS)
    h.clock.advance(hours=1)
    late = await answer_all(h, p, "phq9", EXPIRED_PHQ9)
    h.clock.advance(hours=25)
    result = await expire_due(h.db, h.settings, h.clock.now())
    assert result.expired == 1
    rows = {c.id: c for c in await h.checkins(p)}
    assert rows[phq9.id].status is CheckinStatus.COMPLETED
    assert rows[gad7.id].status is CheckinStatus.COMPLETED
    assert rows[late.id].status is CheckinStatus.EXPIRED
    return p, [rows[phq9.id], rows[gad7.id], rows[late.id]]


async def get_bundle(h: Harness, patient_id: int, token: str) -> dict[str, Any]:
    resp = await h.client.get(f"/api/v1/patients/{patient_id}/fhir", headers=bearer(token))
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/fhir+json"
    assert resp.charset == "utf-8"
    assert resp.headers["Cache-Control"] == "no-store"
    text = await resp.text()
    # the library's own validation: parse the whole Bundle back, and each resource alone
    bundle = Bundle.model_validate_json(text)
    again = Bundle.model_validate_json(bundle.model_dump_json())
    assert again.model_dump() == bundle.model_dump()
    data: dict[str, Any] = bundle.model_dump(mode="json")
    for entry in data.get("entry", []):
        resource = entry["resource"]
        cls = RESOURCE_CLASSES[resource["resourceType"]]
        cls.model_validate(resource)
        assert entry["fullUrl"] == (
            f"{PUBLIC_BASE}/api/v1/fhir/{resource['resourceType']}/{resource['id']}"
        )
    return data


def of_type(bundle: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    return [
        e["resource"]
        for e in bundle.get("entry", [])
        if e["resource"]["resourceType"] == resource_type
    ]


async def db_rows(h: Harness, patient_id: int) -> tuple[list[Answer], list[Score]]:
    async with h.db.read() as s:
        answers = list(
            (
                await s.scalars(
                    select(Answer)
                    .join(Checkin, Checkin.id == Answer.checkin_id)
                    .where(Checkin.patient_id == patient_id)
                    .order_by(Answer.id)
                )
            ).all()
        )
        scores = list(
            (
                await s.scalars(
                    select(Score).where(Score.patient_id == patient_id).order_by(Score.id)
                )
            ).all()
        )
    return answers, scores


# -- the Bundle --------------------------------------------------------------------------------


async def test_bundle_of_sms_answers_validates_and_maps_every_row(h: Harness) -> None:
    p, (phq9, gad7, late) = await patient_with_history(h)
    clinician = await h.token(Role.CLINICIAN)
    bundle = await get_bundle(h, p.id, clinician)
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "collection"
    assert datetime.fromisoformat(bundle["timestamp"]) == h.clock.now()
    assert [e["resource"]["resourceType"] for e in bundle["entry"]] == [
        "Patient",
        *["QuestionnaireResponse"] * 3,
        *["Observation"] * 3,
    ]

    # Patient: minimal
    (patient,) = of_type(bundle, "Patient")
    assert patient == {
        "resourceType": "Patient",
        "id": str(p.id),
        "name": [{"given": ["Maya"]}],
        "telecom": [{"system": "phone", "value": p.phone, "use": "mobile"}],
    }

    # QuestionnaireResponses: one per completed or expired check-in, answers = Answer rows
    answers, scores = await db_rows(h, p.id)
    responses = {r["id"]: r for r in of_type(bundle, "QuestionnaireResponse")}
    assert list(responses) == [str(phq9.id), str(gad7.id), str(late.id)]
    for checkin, status in ((phq9, "completed"), (gad7, "completed"), (late, "stopped")):
        qr = responses[str(checkin.id)]
        assert checkin.completed_at is not None
        assert qr["status"] == status
        assert qr["questionnaire"] == (
            f"{PUBLIC_BASE}/api/v1/fhir/Questionnaire/{checkin.flow_key}|{checkin.flow_version}"
        )
        assert checkin.flow_version == 1
        assert qr["subject"] == {"reference": f"Patient/{p.id}"}
        assert datetime.fromisoformat(qr["authored"]) == checkin.completed_at
        expected = {
            a.question_key: a.value
            for a in answers
            if a.checkin_id == checkin.id and a.value is not None
        }
        got: dict[str, int] = {}
        for item in qr["item"]:
            (ans,) = item["answer"]
            coding = ans["valueCoding"]
            assert coding["system"] == (
                f"{PUBLIC_BASE}/fhir/CodeSystem/answers/{checkin.flow_key}/frequency"
            )
            assert coding["display"] == FREQUENCY[int(coding["code"])]
            got[item["linkId"]] = int(coding["code"])
        assert got == expected
    assert [i["linkId"] for i in responses[str(phq9.id)]["item"]] == [f"q{n}" for n in range(1, 10)]
    assert {
        i["linkId"]: int(i["answer"][0]["valueCoding"]["code"])
        for i in responses[str(phq9.id)]["item"]
    } == {f"q{n}": v for n, v in enumerate(PHQ9_ANSWERS, 1)}
    assert {
        i["linkId"]: int(i["answer"][0]["valueCoding"]["code"])
        for i in responses[str(gad7.id)]["item"]
    } == {f"q{n}": v for n, v in enumerate(GAD7_ANSWERS, 1)}
    # the expired PHQ-9: q9 never answered, so no item for it
    assert [i["linkId"] for i in responses[str(late.id)]["item"]] == [f"q{n}" for n in range(1, 9)]

    # Observations: one per Score row, LOINC-coded, band as interpretation
    observations = {o["id"]: o for o in of_type(bundle, "Observation")}
    assert list(observations) == [str(s.id) for s in scores]
    loinc = {"phq9": "44261-6", "gad7": "69737-5"}
    titles = {"phq9": "PHQ-9 total", "gad7": "GAD-7 total"}
    for score in scores:
        obs = observations[str(score.id)]
        assert obs["status"] == "final"
        assert obs["category"] == [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "survey",
                        "display": "Survey",
                    }
                ]
            }
        ]
        assert obs["code"] == {
            "coding": [
                {"system": "http://loinc.org", "code": loinc[score.instrument]},
                {
                    "system": f"{PUBLIC_BASE}/fhir/CodeSystem/scores",
                    "code": score.instrument,
                    "display": titles[score.instrument],
                },
            ],
            "text": titles[score.instrument],
        }
        assert obs["subject"] == {"reference": f"Patient/{p.id}"}
        assert obs["derivedFrom"] == [{"reference": f"QuestionnaireResponse/{score.checkin_id}"}]
        assert str(score.checkin_id) in responses
        assert datetime.fromisoformat(obs["effectiveDateTime"]) == score.created_at
        (interpretation,) = obs["interpretation"]
        assert score.band is not None
        assert interpretation["text"] == score.band
        assert interpretation["coding"] == [
            {
                "system": f"{PUBLIC_BASE}/fhir/CodeSystem/score-bands",
                "code": f"{score.instrument}-{score.band.replace(' ', '-')}",
                "display": score.band,
            }
        ]
    by_checkin = {s.checkin_id: s for s in scores}
    assert observations[str(by_checkin[phq9.id].id)]["valueInteger"] == 10
    assert observations[str(by_checkin[phq9.id].id)]["interpretation"][0]["text"] == "moderate"
    assert "note" not in observations[str(by_checkin[phq9.id].id)]
    assert observations[str(by_checkin[gad7.id].id)]["valueInteger"] == 10
    # the expired PHQ-9 is prorated: a decimal total, so a Quantity, and marked incomplete
    prorated = by_checkin[late.id]
    assert prorated.complete is False
    assert prorated.total == round(sum(EXPIRED_PHQ9) * 9 / 8, 2) == 10.12
    obs = observations[str(prorated.id)]
    assert "valueInteger" not in obs
    assert Decimal(str(obs["valueQuantity"]["value"])) == Decimal(str(prorated.total))
    assert obs["valueQuantity"]["system"] == "http://unitsofmeasure.org"
    assert obs["valueQuantity"]["code"] == "{score}"
    assert obs["note"][0]["text"].startswith("Incomplete")


async def test_export_is_audited_and_keeps_the_contract_errors(h: Harness) -> None:
    p = await h.patient("Ana")
    clinician = await h.token(Role.CLINICIAN)
    await get_bundle(h, p.id, clinician)
    async with h.db.read() as s:
        events = list(
            (
                await s.scalars(
                    select(AuditEvent).where(AuditEvent.action == "patient.export_fhir")
                )
            ).all()
        )
    assert len(events) == 1
    assert events[0].subject_type == "patient"
    assert events[0].subject_id == str(p.id)
    assert events[0].actor_id is not None
    assert events[0].details == {"questionnaire_responses": 0, "observations": 0}

    resp = await h.client.get("/api/v1/patients/999999/fhir", headers=bearer(clinician))
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"
    resp = await h.client.get(f"/api/v1/patients/{p.id}/fhir")
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "unauthorized"
    async with h.db.read() as s:
        count = len(
            (
                await s.scalars(
                    select(AuditEvent).where(AuditEvent.action == "patient.export_fhir")
                )
            ).all()
        )
    assert count == 1  # failures are not recorded as exports


async def test_patient_without_data_is_a_bundle_with_just_the_patient(h: Harness) -> None:
    p = await h.patient("Lee")
    async with h.db.write() as s:
        row = await s.get(Patient, p.id)
        assert row is not None
        row.external_ref = "MRN-0042"
    bundle = await get_bundle(h, p.id, await h.token(Role.ADMIN))
    assert len(bundle["entry"]) == 1
    assert bundle["entry"][0]["resource"] == {
        "resourceType": "Patient",
        "id": str(p.id),
        "identifier": [{"system": f"{PUBLIC_BASE}/fhir/sid/external-ref", "value": "MRN-0042"}],
        "name": [{"given": ["Lee"]}],
        "telecom": [{"system": "phone", "value": p.phone, "use": "mobile"}],
    }


# -- Questionnaires ----------------------------------------------------------------------------


async def get_questionnaire(h: Harness, key: str, token: str, query: str = "") -> dict[str, Any]:
    resp = await h.client.get(f"/api/v1/fhir/Questionnaire/{key}{query}", headers=bearer(token))
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/fhir+json"
    text = await resp.text()
    q = Questionnaire.model_validate_json(text)
    assert Questionnaire.model_validate_json(q.model_dump_json()).model_dump() == q.model_dump()
    data: dict[str, Any] = q.model_dump(mode="json")
    return data


async def test_phq9_questionnaire_has_nine_coded_items(h: Harness) -> None:
    q = await get_questionnaire(h, "phq9", await h.token(Role.CLINICIAN))
    assert q["url"] == f"{PUBLIC_BASE}/api/v1/fhir/Questionnaire/phq9"
    assert q["version"] == "1"
    assert q["name"] == "Phq9"
    assert q["title"] == "PHQ-9 depression questionnaire"
    assert q["status"] == "active"
    assert q["subjectType"] == ["Patient"]
    assert q["purpose"] == fhir.VALIDATED_NOTE
    assert q["publisher"] == "Test Clinic"
    items = q["item"]
    assert len(items) == 9
    assert [i["linkId"] for i in items] == [f"q{n}" for n in range(1, 10)]
    assert items[0]["text"].startswith("1/9 Little interest or pleasure in doing things?")
    for item in items:
        assert item["type"] == "choice"
        assert len(item["answerOption"]) == 4
        assert [o["valueCoding"]["code"] for o in item["answerOption"]] == ["0", "1", "2", "3"]
        assert [o["valueCoding"]["display"] for o in item["answerOption"]] == [
            FREQUENCY[n] for n in range(4)
        ]
        for n, option in enumerate(item["answerOption"]):
            assert option["valueCoding"]["system"] == (
                f"{PUBLIC_BASE}/fhir/CodeSystem/answers/phq9/frequency"
            )
            assert option["valueCoding"]["extension"] == [
                {"url": fhir.ORDINAL_VALUE, "valueDecimal": n}
            ]


async def test_unvalidated_flow_maps_every_answer_type(h: Harness) -> None:
    q = await get_questionnaire(h, "post_session", await h.token(Role.CLINICIAN))
    assert q["purpose"] == fhir.NOT_VALIDATED_NOTE
    assert q["id"] == "post-session"
    assert q["name"] == "PostSession"
    items = {i["linkId"]: i for i in q["item"]}
    assert list(items) == [
        "bp_now",
        "bp_since",
        "dissociation",
        "dissociation_now",
        "dissociation_duration",
        "dissociation_severity",
        "sedation",
        "nausea",
        "drove",
        "mood",
        "q9",
        "anything",
    ]
    assert items["bp_now"]["type"] == "boolean"
    assert "answerOption" not in items["bp_now"]
    assert items["dissociation_duration"]["type"] == "choice"
    assert [
        (o["valueCoding"]["code"], o["valueCoding"]["display"])
        for o in items["dissociation_duration"]["answerOption"]
    ] == [
        ("under_2h", "Less than 2 hours"),
        ("evening", "Most of the evening"),
        ("overnight", "Until I went to sleep or later"),
    ]
    assert "extension" not in items["dissociation_duration"]["answerOption"][0]["valueCoding"]
    assert items["mood"]["type"] == "integer"
    assert items["mood"]["extension"] == [
        {"url": fhir.MIN_VALUE, "valueInteger": 0},
        {"url": fhir.MAX_VALUE, "valueInteger": 10},
    ]
    assert items["anything"]["type"] == "string"
    assert items["anything"]["maxLength"] == 1000


async def test_questionnaire_versions_retirement_and_errors(h: Harness) -> None:
    clinician = await h.token(Role.CLINICIAN)
    admin = await h.token(Role.ADMIN)
    q = await get_questionnaire(h, "gad7", clinician, "?version=1")
    assert q["version"] == "1"
    assert len(q["item"]) == 7

    for path, status, field in (
        ("/api/v1/fhir/Questionnaire/nope", 404, None),
        ("/api/v1/fhir/Questionnaire/phq9?version=99", 404, None),
        ("/api/v1/fhir/Questionnaire/phq9?version=abc", 422, "version"),
        ("/api/v1/fhir/Questionnaire/phq9?version=0", 422, "version"),
        ("/api/v1/fhir/Questionnaire/Bad-Key", 404, None),
    ):
        resp = await h.client.get(path, headers=bearer(clinician))
        assert resp.status == status, path
        body = await resp.json()
        assert set(body["error"]) == {"code", "message", "details"}
        if field is not None:
            assert body["error"]["details"][0]["field"] == field
    assert (await h.client.get("/api/v1/fhir/Questionnaire/phq9")).status == 401

    resp = await h.client.post("/api/v1/flows/gad7/retire", headers=bearer(admin))
    assert resp.status == 200, await resp.text()
    q = await get_questionnaire(h, "gad7", clinician)
    assert q["status"] == "retired"


# -- mapping details without a server ----------------------------------------------------------


@pytest.mark.parametrize(
    ("instrument", "loinc"),
    [("phq9", "44261-6"), ("gad7", "69737-5"), ("phq2", "55758-7"), ("gad2", "70272-0")],
)
def test_loinc_codes_of_the_four_totals(instrument: str, loinc: str) -> None:
    urls = fhir.Urls.of("https://care.example.org/")
    score = Score(
        id=7,
        checkin_id=3,
        patient_id=5,
        instrument=instrument,
        total=3.0,
        band="positive",
        flags=["item9_positive"],
        complete=True,
        created_at=datetime.fromisoformat("2026-03-02T15:00:00+00:00"),
    )
    obs = fhir.observation(urls, score, title=None, derived_from=None)
    data = Observation.model_validate_json(obs.model_dump_json()).model_dump(mode="json")
    assert data["code"]["coding"][0] == {"system": "http://loinc.org", "code": loinc}
    assert data["valueInteger"] == 3
    assert "derivedFrom" not in data
    assert data["component"] == [
        {
            "code": {
                "coding": [
                    {
                        "system": "https://care.example.org/fhir/CodeSystem/score-flags",
                        "code": "item9_positive",
                    }
                ],
                "text": "item9_positive",
            },
            "valueBoolean": True,
        }
    ]


def test_other_scores_use_the_local_code_system_only() -> None:
    urls = fhir.Urls.of("https://care.example.org")
    score = Score(
        id=1,
        checkin_id=2,
        patient_id=3,
        instrument="des_total",
        total=12.5,
        band=None,
        flags=[],
        complete=True,
        created_at=datetime.fromisoformat("2026-03-02T15:00:00+00:00"),
    )
    data = fhir.observation(urls, score, title="DES total", derived_from=None).model_dump(
        mode="json"
    )
    assert data["code"] == {
        "coding": [
            {
                "system": "https://care.example.org/fhir/CodeSystem/scores",
                "code": "des_total",
                "display": "DES total",
            }
        ],
        "text": "DES total",
    }
    assert data["valueQuantity"]["value"] == 12.5
    assert "interpretation" not in data
