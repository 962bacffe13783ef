"""FHIR export: a patient's check-ins and scores as a Bundle, flows as Questionnaires.

Resources are built with the ``fhir.resources.R4B`` models (FHIR 4.3, wire-compatible
with R4 for every element used here), so constructing them validates cardinality,
primitive formats and choice types; docs/interoperability.md has the mapping.

Exported:

- ``Patient``: id, first name, phone and ``external_ref``; nothing else (minimum PHI).
- one ``QuestionnaireResponse`` per completed (``completed``) or expired
  (``stopped``) check-in, its ``questionnaire`` the canonical
  ``<PUBLIC_BASE_URL>/api/v1/fhir/Questionnaire/<flow_key>|<version>``;
- one ``Observation`` per score, coded with LOINC where a total has a code, always
  also with the local score code system, the band as its interpretation.

Question texts are the flow's English text with ``{placeholders}`` kept as written:
a Questionnaire describes the template, not one patient's message.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from fhir.resources.R4B.annotation import Annotation
from fhir.resources.R4B.bundle import Bundle, BundleEntry
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.contactpoint import ContactPoint
from fhir.resources.R4B.extension import Extension
from fhir.resources.R4B.humanname import HumanName
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.observation import Observation, ObservationComponent
from fhir.resources.R4B.patient import Patient as FhirPatient
from fhir.resources.R4B.quantity import Quantity
from fhir.resources.R4B.questionnaire import (
    Questionnaire,
    QuestionnaireItem,
    QuestionnaireItemAnswerOption,
)
from fhir.resources.R4B.questionnaireresponse import (
    QuestionnaireResponse,
    QuestionnaireResponseItem,
    QuestionnaireResponseItemAnswer,
)
from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.resource import Resource
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services.flow_store import parse_cached, pinned
from db.enums import CheckinStatus, VersionStatus
from db.models import Answer, Checkin, FlowVersion, Patient, Score
from flows.model import (
    AskNode,
    ChoiceOption,
    ChoiceSpec,
    Flow,
    IntegerSpec,
    ScaleOption,
    ScaleSpec,
    TextSpec,
    YesNoSpec,
)
from flows.text import pick

log = logging.getLogger(__name__)

FHIR_MEDIA_TYPE = "application/fhir+json"

LOINC = "http://loinc.org"
LOINC_TOTALS: dict[str, str] = {
    "phq9": "44261-6",  # PHQ-9 total score [Reported]
    "gad7": "69737-5",  # GAD-7 total score [Reported.PHQ]
    "phq2": "55758-7",  # PHQ-2 total score [Reported]
    "gad2": "70272-0",  # GAD-2 total score [Reported.PHQ]
}
"""LOINC codes of the totals we score, by score name in the flow library."""

OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
UCUM = "http://unitsofmeasure.org"
ORDINAL_VALUE = "http://hl7.org/fhir/StructureDefinition/ordinalValue"
MIN_VALUE = "http://hl7.org/fhir/StructureDefinition/minValue"
MAX_VALUE = "http://hl7.org/fhir/StructureDefinition/maxValue"

EXPORTED_STATUSES = (CheckinStatus.COMPLETED, CheckinStatus.EXPIRED)
_QR_STATUS = {CheckinStatus.COMPLETED: "completed", CheckinStatus.EXPIRED: "stopped"}

NOT_VALIDATED_NOTE = (
    "Not a validated instrument: a structured check-in defined in this clinic's flow "
    "library. Its answers and any totals are not scores of a validated rating scale."
)
VALIDATED_NOTE = (
    "A validated instrument delivered by text message; wording as in the flow library, "
    "one item per message."
)

Spec = ScaleSpec | ChoiceSpec | IntegerSpec | YesNoSpec | TextSpec


@dataclass(frozen=True, slots=True)
class Urls:
    """Every URL and code system the export mints, from ``PUBLIC_BASE_URL``."""

    base: str

    @classmethod
    def of(cls, public_base_url: str) -> Urls:
        return cls(public_base_url.rstrip("/"))

    @property
    def fhir_base(self) -> str:
        return f"{self.base}/api/v1/fhir"

    def full_url(self, resource_type: str, resource_id: str) -> str:
        return f"{self.fhir_base}/{resource_type}/{resource_id}"

    def questionnaire(self, key: str) -> str:
        return f"{self.fhir_base}/Questionnaire/{key}"

    def questionnaire_canonical(self, key: str, version: int | None) -> str:
        url = self.questionnaire(key)
        return url if version is None else f"{url}|{version}"

    @property
    def scores_system(self) -> str:
        return f"{self.base}/fhir/CodeSystem/scores"

    @property
    def bands_system(self) -> str:
        return f"{self.base}/fhir/CodeSystem/score-bands"

    @property
    def flags_system(self) -> str:
        return f"{self.base}/fhir/CodeSystem/score-flags"

    @property
    def external_ref_system(self) -> str:
        return f"{self.base}/fhir/sid/external-ref"

    def answers_system(self, flow_key: str, answer_set: str) -> str:
        return f"{self.base}/fhir/CodeSystem/answers/{flow_key}/{answer_set}"


# -- questions of a flow -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Question:
    """One ``ask`` node as a questionnaire item: ``answer_set`` names its code system."""

    link_id: str
    text: str
    spec: Spec
    answer_set: str


def questions(flow: Flow) -> list[Question]:
    """The flow's questions in node order, one per answer key (the first ask wins)."""
    out: list[Question] = []
    seen: set[str] = set()
    for node in flow.nodes:
        if not isinstance(node, AskNode) or node.answer_key in seen:
            continue
        if isinstance(node.answer, str):
            found = flow.answer_sets.get(node.answer)
            if found is None:  # the validator rejects this; never export a guess
                continue
            spec: Spec = found
            answer_set = node.answer
        else:
            spec = node.answer
            answer_set = node.id
        seen.add(node.answer_key)
        out.append(Question(node.answer_key, pick(node.text, "en"), spec, answer_set))
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "band"


def _computable_name(key: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in key.split("_"))


def _option_coding(
    urls: Urls, flow_key: str, q: Question, option: ScaleOption | ChoiceOption
) -> Coding:
    extension = None
    if isinstance(q.spec, ScaleSpec) and isinstance(option.value, int):
        extension = [Extension(url=ORDINAL_VALUE, valueDecimal=Decimal(option.value))]
    return Coding(
        extension=extension,
        system=urls.answers_system(flow_key, q.answer_set),
        code=str(option.value),
        display=pick(option.label, "en"),
    )


def _item_type(spec: Spec) -> str:
    if isinstance(spec, ScaleSpec | ChoiceSpec):
        return "choice"
    if isinstance(spec, IntegerSpec):
        return "integer"
    if isinstance(spec, YesNoSpec):
        return "boolean"
    return "string"


def questionnaire_item(urls: Urls, flow_key: str, q: Question) -> QuestionnaireItem:
    options = None
    extension = None
    max_length = None
    spec = q.spec
    if isinstance(spec, ScaleSpec | ChoiceSpec):
        options = [
            QuestionnaireItemAnswerOption(valueCoding=_option_coding(urls, flow_key, q, o))
            for o in spec.options
        ]
    elif isinstance(spec, IntegerSpec):
        extension = [
            Extension(url=MIN_VALUE, valueInteger=spec.min),
            Extension(url=MAX_VALUE, valueInteger=spec.max),
        ]
    elif isinstance(spec, TextSpec):
        max_length = spec.max_length
    return QuestionnaireItem(
        extension=extension,
        linkId=q.link_id,
        text=q.text,
        type=_item_type(spec),
        answerOption=options,
        maxLength=max_length,
    )


def questionnaire(
    *,
    urls: Urls,
    flow: Flow,
    version: int,
    retired: bool,
    published_at: datetime | None,
    publisher: str = "",
) -> Questionnaire:
    """The flow as a FHIR Questionnaire: one item per question, choice items coded."""
    return Questionnaire(
        id=flow.key.replace("_", "-"),
        url=urls.questionnaire(flow.key),
        version=str(version),
        name=_computable_name(flow.key),
        title=flow.title,
        status="retired" if retired else "active",
        experimental=False,
        subjectType=["Patient"],
        date=published_at,
        publisher=publisher or None,
        description=flow.description.strip() or None,
        purpose=VALIDATED_NOTE if flow.validated else NOT_VALIDATED_NOTE,
        item=[questionnaire_item(urls, flow.key, q) for q in questions(flow)] or None,
    )


# -- a patient's record --------------------------------------------------------------------------


@dataclass
class PatientRecord:
    """Everything a patient's Bundle is made of, loaded in one read."""

    patient: Patient
    checkins: list[Checkin]
    """Completed or expired check-ins, oldest first."""
    answers: dict[int, list[Answer]] = field(default_factory=dict)
    scores: list[Score] = field(default_factory=list)
    flow_of_checkin: dict[int, Flow] = field(default_factory=dict)
    """Each check-in's pinned flow version, where it still parses."""


async def load_record(*, session: AsyncSession, patient_id: int) -> PatientRecord | None:
    """The patient's exportable data, or None for an unknown patient."""
    patient = await session.get(Patient, patient_id)
    if patient is None:
        return None
    checkins = list(
        (
            await session.scalars(
                select(Checkin)
                .where(Checkin.patient_id == patient_id, Checkin.status.in_(EXPORTED_STATUSES))
                .order_by(Checkin.completed_at, Checkin.id)
            )
        ).all()
    )
    record = PatientRecord(patient=patient, checkins=checkins)
    for answer in await session.scalars(
        select(Answer)
        .join(Checkin, Checkin.id == Answer.checkin_id)
        .where(Checkin.patient_id == patient_id, Checkin.status.in_(EXPORTED_STATUSES))
        .order_by(Answer.id)
    ):
        record.answers.setdefault(answer.checkin_id, []).append(answer)
    record.scores = list(
        (
            await session.scalars(
                select(Score)
                .where(Score.patient_id == patient_id)
                .order_by(Score.created_at, Score.id)
            )
        ).all()
    )
    versions: dict[int, tuple[str, int | None]] = {
        c.id: (c.flow_key, c.flow_version) for c in checkins
    }
    missing = {s.checkin_id for s in record.scores} - versions.keys()
    if missing:
        for checkin_id, key, version in await session.execute(
            select(Checkin.id, Checkin.flow_key, Checkin.flow_version).where(
                Checkin.id.in_(missing)
            )
        ):
            versions[checkin_id] = (key, version)
    flows: dict[tuple[str, int], Flow | None] = {}
    for checkin_id, (key, version) in versions.items():
        if version is None:
            continue
        if (key, version) not in flows:
            try:
                flows[(key, version)] = await pinned(session=session, key=key, version=version)
            except Exception:
                log.warning("flow %s v%s is unavailable for the FHIR export", key, version)
                flows[(key, version)] = None
        found = flows[(key, version)]
        if found is not None:
            record.flow_of_checkin[checkin_id] = found
    return record


def patient_resource(urls: Urls, patient: Patient) -> FhirPatient:
    identifier = None
    if patient.external_ref:
        identifier = [Identifier(system=urls.external_ref_system, value=patient.external_ref)]
    return FhirPatient(
        id=str(patient.id),
        identifier=identifier,
        name=[HumanName(given=[patient.first_name])],
        telecom=[ContactPoint(system="phone", value=patient.phone, use="mobile")],
    )


def answer_value(
    urls: Urls, flow_key: str, q: Question | None, value: Any
) -> QuestionnaireResponseItemAnswer | None:
    """One recorded value as a FHIR answer; None for "unanswered after the re-asks"."""
    if value is None:
        return None
    if isinstance(value, bool):
        return QuestionnaireResponseItemAnswer(valueBoolean=value)
    if q is not None and isinstance(q.spec, ScaleSpec | ChoiceSpec):
        for option in q.spec.options:
            if option.value == value and type(option.value) is type(value):
                return QuestionnaireResponseItemAnswer(
                    valueCoding=_option_coding(urls, flow_key, q, option)
                )
    if isinstance(value, int):
        return QuestionnaireResponseItemAnswer(valueInteger=value)
    if isinstance(value, float):
        return QuestionnaireResponseItemAnswer(valueDecimal=Decimal(str(value)))
    return QuestionnaireResponseItemAnswer(valueString=str(value))


def questionnaire_response(
    urls: Urls, checkin: Checkin, answers: Sequence[Answer], flow: Flow | None
) -> QuestionnaireResponse:
    """A check-in's answers; questions left unanswered have no item (FHIR: no answer)."""
    by_key: dict[str, Any] = {}
    for answer in answers:  # oldest first: a later answer to the same key wins
        by_key[answer.question_key] = answer.value
    known = {q.link_id: q for q in questions(flow)} if flow is not None else {}
    order = [k for k in known if k in by_key] + [k for k in by_key if k not in known]
    items: list[QuestionnaireResponseItem] = []
    for key in order:
        q = known.get(key)
        fhir_answer = answer_value(urls, checkin.flow_key, q, by_key[key])
        if fhir_answer is None:
            continue
        items.append(
            QuestionnaireResponseItem(
                linkId=key, text=q.text if q is not None else None, answer=[fhir_answer]
            )
        )
    authored = checkin.completed_at or checkin.expires_at or checkin.started_at
    return QuestionnaireResponse(
        id=str(checkin.id),
        questionnaire=urls.questionnaire_canonical(checkin.flow_key, checkin.flow_version),
        status=_QR_STATUS[checkin.status],
        subject=Reference(reference=f"Patient/{checkin.patient_id}"),
        authored=authored,
        item=items or None,
    )


def _score_title(flow: Flow | None, name: str) -> str | None:
    if flow is None:
        return None
    for score in flow.scores:
        if score.name == name:
            return score.title
    return None


def observation(
    urls: Urls, score: Score, *, title: str | None, derived_from: str | None
) -> Observation:
    """A score: LOINC-coded where the total has a code, band as interpretation."""
    codings: list[Coding] = []
    loinc = LOINC_TOTALS.get(score.instrument)
    if loinc is not None:
        codings.append(Coding(system=LOINC, code=loinc))
    codings.append(Coding(system=urls.scores_system, code=score.instrument, display=title))
    interpretation = None
    if score.band:
        interpretation = [
            CodeableConcept(
                coding=[
                    Coding(
                        system=urls.bands_system,
                        code=f"{score.instrument}-{_slug(score.band)}",
                        display=score.band,
                    )
                ],
                text=score.band,
            )
        ]
    components = [
        ObservationComponent(
            code=CodeableConcept(coding=[Coding(system=urls.flags_system, code=flag)], text=flag),
            valueBoolean=True,
        )
        for flag in score.flags or []
    ]
    note = None
    if not score.complete:
        note = [
            Annotation(
                text="Incomplete: items were left unanswered; the total follows the "
                "flow's missing-item rule (prorated or counted as zero)."
            )
        ]
    total = float(score.total)
    value_integer = int(total) if total.is_integer() else None
    value_quantity = (
        None
        if value_integer is not None
        else Quantity(value=Decimal(str(total)), unit="{score}", system=UCUM, code="{score}")
    )
    return Observation(
        id=str(score.id),
        status="final",
        category=[
            CodeableConcept(
                coding=[Coding(system=OBSERVATION_CATEGORY, code="survey", display="Survey")]
            )
        ],
        code=CodeableConcept(coding=codings, text=title or score.instrument),
        subject=Reference(reference=f"Patient/{score.patient_id}"),
        effectiveDateTime=score.created_at,
        issued=score.created_at,
        valueInteger=value_integer,
        valueQuantity=value_quantity,
        interpretation=interpretation,
        note=note,
        derivedFrom=[Reference(reference=derived_from)] if derived_from else None,
        component=components or None,
    )


def _entries(urls: Urls, resources: Iterable[Resource]) -> list[BundleEntry]:
    return [
        BundleEntry(
            fullUrl=urls.full_url(r.get_resource_type(), str(r.id)),
            resource=r,
        )
        for r in resources
    ]


def patient_bundle(*, urls: Urls, record: PatientRecord, now: datetime, bundle_id: str) -> Bundle:
    """A ``collection`` Bundle: the Patient, then QuestionnaireResponses, then Observations."""
    resources: list[Resource] = [patient_resource(urls, record.patient)]
    exported: set[int] = set()
    for checkin in record.checkins:
        resources.append(
            questionnaire_response(
                urls,
                checkin,
                record.answers.get(checkin.id, []),
                record.flow_of_checkin.get(checkin.id),
            )
        )
        exported.add(checkin.id)
    for score in record.scores:
        flow = record.flow_of_checkin.get(score.checkin_id)
        resources.append(
            observation(
                urls,
                score,
                title=_score_title(flow, score.instrument),
                derived_from=(
                    f"QuestionnaireResponse/{score.checkin_id}"
                    if score.checkin_id in exported
                    else None
                ),
            )
        )
    return Bundle(id=bundle_id, type="collection", timestamp=now, entry=_entries(urls, resources))


# -- a library flow as a Questionnaire ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FlowRelease:
    flow: Flow
    version: int
    retired: bool
    published_at: datetime | None


async def load_release(
    *, session: AsyncSession, key: str, version: int | None
) -> FlowRelease | None:
    """Version ``version`` (newest when None) of a flow; drafts are never served."""
    base = select(
        FlowVersion.version,
        FlowVersion.checksum,
        FlowVersion.source,
        FlowVersion.status,
        FlowVersion.published_at,
    ).where(FlowVersion.key == key, FlowVersion.version.is_not(None))
    newest = (await session.execute(base.order_by(FlowVersion.version.desc()).limit(1))).first()
    if newest is None:
        return None
    row = newest
    if version is not None and version != newest.version:
        found = (await session.execute(base.where(FlowVersion.version == version))).first()
        if found is None:
            return None
        row = found
    assert row.version is not None
    flow = parse_cached(key, row.version, row.checksum, row.source, session=session)
    retired = VersionStatus.RETIRED in (row.status, newest.status)
    return FlowRelease(flow, row.version, retired, row.published_at)
