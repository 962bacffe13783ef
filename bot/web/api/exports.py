"""Exports: a patient as a FHIR Bundle, flows as FHIR Questionnaires, CSV of scores and escalations.

Routes (registered by :func:`setup`):

- ``GET /api/v1/patients/{id}/fhir`` (staff; audited ``patient.export_fhir``)
- ``GET /api/v1/fhir/Questionnaire/{key}[?version=n]`` (staff; a flow definition, no PHI:
  not audited)
- ``GET /api/v1/patients/{id}/scores.csv`` (admin; audited ``export.scores_csv``)
- ``GET /api/v1/exports/escalations.csv?from=YYYY-MM-DD&to=YYYY-MM-DD`` (admin;
  audited ``export.escalations_csv``)

Errors keep the API's JSON shape (docs/interoperability.md), also on the FHIR routes.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import date
from typing import Any

from aiohttp import web
from fhir.resources.R4B.resource import Resource
from sqlalchemy import select

from bot.appkeys import CLOCK, DATABASE, SETTINGS
from bot.services import exports as csv_exports
from bot.services import fhir
from bot.web import audit_log, security
from bot.web.api import openapi
from bot.web.api.auth import ADMIN, STAFF, Principal, require
from bot.web.api.errors import invalid, not_found
from bot.web.api.patients import path_id
from db.models import Patient

FLOW_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

PATIENT_FHIR = "/api/v1/patients/{id}/fhir"
QUESTIONNAIRE = "/api/v1/fhir/Questionnaire/{key}"
SCORES_CSV = "/api/v1/patients/{id}/scores.csv"
ESCALATIONS_CSV = "/api/v1/exports/escalations.csv"


async def _record(
    request: web.Request,
    who: Principal,
    action: str,
    *,
    subject_type: str,
    subject_id: object,
    details: dict[str, Any],
) -> None:
    """The export's audit event, written (one INSERT, committed) before the body is sent."""
    await audit_log.write(request, who, action, subject_type, subject_id, details)


def _fhir_response(resource: Resource) -> web.Response:
    return web.Response(
        text=resource.model_dump_json(),
        content_type=fhir.FHIR_MEDIA_TYPE,
        charset="utf-8",
    )


# -- FHIR ----------------------------------------------------------------------------------------


async def patient_fhir(request: web.Request) -> web.Response:
    who = await require(request, *STAFF)
    patient_id = path_id(request)
    urls = fhir.Urls.of(request.app[SETTINGS].public_base_url)
    now = request.app[CLOCK].now()
    async with request.app[DATABASE].read() as session:
        record = await fhir.load_record(session=session, patient_id=patient_id)
        if record is None:
            raise not_found("patient")
        bundle = fhir.patient_bundle(urls=urls, record=record, now=now, bundle_id=str(uuid.uuid4()))
    await _record(
        request,
        who,
        "patient.export_fhir",
        subject_type="patient",
        subject_id=patient_id,
        details={
            "questionnaire_responses": len(record.checkins),
            "observations": len(record.scores),
        },
    )
    return _fhir_response(bundle)


def _version_param(request: web.Request) -> int | None:
    raw = request.query.get("version")
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9 or int(raw) < 1:
        raise invalid("version", "must be a published version number (1, 2, ...)")
    return int(raw)


async def questionnaire(request: web.Request) -> web.Response:
    await require(request, *STAFF)
    key = request.match_info["key"]
    version = _version_param(request)
    if not FLOW_KEY.match(key):
        raise not_found("questionnaire")
    async with request.app[DATABASE].read() as session:
        release = await fhir.load_release(session=session, key=key, version=version)
    if release is None:
        raise not_found("questionnaire")
    settings = request.app[SETTINGS]
    resource = fhir.questionnaire(
        urls=fhir.Urls.of(settings.public_base_url),
        flow=release.flow,
        version=release.version,
        retired=release.retired,
        published_at=release.published_at,
        publisher=settings.clinic_name,
    )
    return _fhir_response(resource)


# -- CSV ----------------------------------------------------------------------------------------


def _date_param(request: web.Request, name: str) -> date | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not DATE.match(raw):
        raise invalid(name, "must be a date as YYYY-MM-DD")
    try:
        value = date.fromisoformat(raw)
    except ValueError as exc:
        raise invalid(name, "must be a real calendar date (YYYY-MM-DD)") from exc
    if not 2000 <= value.year <= 2100:
        raise invalid(name, "must be a date between the years 2000 and 2100")
    return value


async def _stream_csv(
    request: web.Request,
    filename: str,
    header: Sequence[str],
    batches: AsyncIterator[list[Sequence[Any]]],
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )
    response.content_type = "text/csv"
    response.charset = "utf-8"
    # the security middleware runs after the body is sent; set its headers before
    security._apply(request, response)
    await response.prepare(request)
    await response.write(csv_exports.encode([header]))
    async for batch in batches:
        await response.write(csv_exports.encode(batch))
    await response.write_eof()
    return response


async def scores_csv(request: web.Request) -> web.StreamResponse:
    who = await require(request, *ADMIN)
    patient_id = path_id(request)
    db = request.app[DATABASE]
    async with db.read() as session:
        if await session.scalar(select(Patient.id).where(Patient.id == patient_id)) is None:
            raise not_found("patient")
    await _record(
        request,
        who,
        "export.scores_csv",
        subject_type="patient",
        subject_id=patient_id,
        details={"patient_id": patient_id},
    )
    return await _stream_csv(
        request,
        f"patient-{patient_id}-scores.csv",
        csv_exports.SCORE_COLUMNS,
        csv_exports.score_rows(db, patient_id),
    )


async def escalations_csv(request: web.Request) -> web.StreamResponse:
    who = await require(request, *ADMIN)
    start = _date_param(request, "from")
    end = _date_param(request, "to")
    if start is not None and end is not None and end < start:
        raise invalid("to", "must not be before from")
    lower, upper = csv_exports.day_range(start, end)
    await _record(
        request,
        who,
        "export.escalations_csv",
        subject_type="escalation",
        subject_id="",
        details={
            "from": start.isoformat() if start else None,
            "to": end.isoformat() if end else None,
        },
    )
    name = f"escalations-{start or 'start'}-to-{end or 'now'}.csv"
    return await _stream_csv(
        request,
        name,
        csv_exports.ESCALATION_COLUMNS,
        csv_exports.escalation_rows(
            request.app[DATABASE], created_from=lower, created_before=upper
        ),
    )


# -- routes and OpenAPI ----------------------------------------------------------------------------


def setup(app: web.Application) -> None:
    """Register the export routes; safe to call twice (the second call does nothing)."""
    r = app.router
    registered = {
        info.get("formatter") or info.get("path")
        for info in (res.get_info() for res in r.resources())
    }
    if PATIENT_FHIR in registered:
        return
    r.add_get(PATIENT_FHIR, patient_fhir)
    r.add_get(QUESTIONNAIRE, questionnaire)
    r.add_get(SCORES_CSV, scores_csv)
    r.add_get(ESCALATIONS_CSV, escalations_csv)


def _responses(status: int, media_type: str, description: str, *errors: int) -> dict[str, Any]:
    schema = {"type": "object" if media_type == fhir.FHIR_MEDIA_TYPE else "string"}
    ok = {"description": description, "content": {media_type: {"schema": schema}}}
    return {str(status): ok, **openapi._errors(401, 403, *errors)}


def _operation(
    summary: str,
    media_type: str,
    description: str,
    *,
    params: list[dict[str, Any]],
    errors: tuple[int, ...],
) -> dict[str, Any]:
    op = openapi._op(summary, {"type": "object"}, params=params, tag="exports")
    op["responses"] = _responses(200, media_type, description, *errors)
    return op


_DATE = openapi.DATE
PATHS: dict[str, dict[str, Any]] = {
    PATIENT_FHIR: {
        "get": _operation(
            "The patient as a FHIR R4 (R4B) Bundle: Patient, QuestionnaireResponses, "
            "Observations (staff; audited)",
            fhir.FHIR_MEDIA_TYPE,
            "a Bundle of type collection",
            params=[openapi._ID],
            errors=(404,),
        )
    },
    QUESTIONNAIRE: {
        "get": _operation(
            "A library flow as a FHIR Questionnaire (newest published version unless ?version)",
            fhir.FHIR_MEDIA_TYPE,
            "a Questionnaire",
            params=[
                openapi._KEY,
                openapi.query("version", {"type": "integer", "minimum": 1, "maximum": 999_999_999}),
            ],
            errors=(404, 422),
        )
    },
    SCORES_CSV: {
        "get": _operation(
            "The patient's scores as CSV (admin; audited)",
            "text/csv",
            "CSV, header row first: " + ",".join(csv_exports.SCORE_COLUMNS),
            params=[openapi._ID],
            errors=(404,),
        )
    },
    ESCALATIONS_CSV: {
        "get": _operation(
            "Escalations created in a date range (UTC days, both included) as CSV (admin; audited)",
            "text/csv",
            "CSV, header row first: " + ",".join(csv_exports.ESCALATION_COLUMNS),
            params=[openapi.query("from", _DATE), openapi.query("to", _DATE)],
            errors=(422,),
        )
    },
}
"""This module's operations for the OpenAPI document (also merged into EXTRA_PATHS)."""

openapi.EXTRA_PATHS.update(PATHS)
