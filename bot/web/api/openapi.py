"""The OpenAPI 3.1 document of ``/api/v1``, served at ``/api/v1/openapi.json``.

Request schemas come from the pydantic models that validate the bodies, so
the document cannot drift from what the server accepts; a test checks that
every route the app registers is documented, and
``tests/web/test_openapi_conformance.py`` runs schemathesis over every operation
against a seeded app (answers and statuses as documented, what the document
forbids refused, what it allows accepted). Response objects list every key the
server sends, and only those.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cache
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from bot.web.api import schemas
from db.enums import (
    CheckinStatus,
    Direction,
    Disposition,
    EnrollmentStatus,
    EscalationStatus,
    MessageStatus,
    PatientStatus,
    Role,
    Severity,
    VersionStatus,
)
from flows.engine import Outcome
from flows.problems import Severity as ProblemSeverity

_NULLABLE_STR = {"type": ["string", "null"]}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
_NULLABLE_INT = {"type": ["integer", "null"]}
_TIME = {"type": "string", "format": "date-time"}


def _enum(values: type[StrEnum], *, nullable: bool = False) -> dict[str, Any]:
    names: list[str | None] = [str(v) for v in values]
    if nullable:
        return {"type": ["string", "null"], "enum": [*names, None]}
    return {"type": "string", "enum": names}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    """An object with exactly these keys, each one always present."""
    return {
        "type": "object",
        "required": list(properties),
        "properties": properties,
        "additionalProperties": False,
    }


def _array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


_CHECKINS = _array({"$ref": "#/components/schemas/Checkin"})

RESPONSES: dict[str, dict[str, Any]] = {
    "Error": _object(
        {
            "error": _object(
                {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "details": {
                        "description": "null, or a list: each wrong field (field, message),"
                        " or each problem of a definition (line, column, message, ...)"
                    },
                }
            )
        }
    ),
    "Patient": _object(
        {
            "id": {"type": "integer"},
            "first_name": {"type": "string"},
            "last_name": {"type": "string"},
            "date_of_birth": {"type": ["string", "null"], "format": "date"},
            "phone": {"type": "string"},
            "timezone": {"type": "string"},
            "language": {"type": "string"},
            "external_ref": _NULLABLE_STR,
            "quiet_hours": {
                "oneOf": [
                    {"type": "null"},
                    _object(
                        {
                            "start": {"type": "string", "pattern": schemas.HH_MM_PATTERN},
                            "end": {"type": "string", "pattern": schemas.HH_MM_PATTERN},
                        }
                    ),
                ]
            },
            "status": _enum(PatientStatus),
            "opted_out_at": _NULLABLE_TIME,
            "unreachable_at": _NULLABLE_TIME,
            "risk_hold": {
                "description": "Set while a high or critical escalation is open (unclaimed):"
                " the patient's routine check-ins wait until a clinician claims or resolves"
                " it. Hand-overs to the C-SSRS and crisis replies still go out.",
                "oneOf": [
                    {"type": "null"},
                    _object(
                        {
                            "escalation_id": {"type": "integer"},
                            "severity": {"type": "string", "enum": ["critical", "high"]},
                            "since": _TIME,
                            "lifted_by": {"type": "string"},
                        }
                    ),
                ],
            },
            "created_at": _NULLABLE_TIME,
            "updated_at": _NULLABLE_TIME,
        }
    ),
    "User": _object(
        {
            "id": {"type": "integer"},
            "email": {"type": "string"},
            "name": {"type": "string"},
            "role": _enum(Role),
            "active": {"type": "boolean"},
            "on_call": {"type": "boolean"},
        }
    ),
    "Message": _object(
        {
            "id": {"type": "integer"},
            "direction": _enum(Direction),
            "body": {"type": "string"},
            "status": _enum(MessageStatus),
            "created_at": _TIME,
            "checkin_id": _NULLABLE_INT,
            "purpose": {"type": "string"},
            "error_code": _NULLABLE_INT,
            "segments": {"type": "integer"},
        }
    ),
    "Checkin": _object(
        {
            "id": {"type": "integer"},
            "flow": {"type": "string"},
            "flow_version": _NULLABLE_INT,
            "status": _enum(CheckinStatus),
            "due_at": _TIME,
            "started_at": _NULLABLE_TIME,
            "completed_at": _NULLABLE_TIME,
            "expires_at": _NULLABLE_TIME,
            "outcome": _NULLABLE_STR,
            "scores": {"type": "object", "additionalProperties": {"type": "number"}},
        }
    ),
    "Treatment": _object(
        {
            "id": {"type": "integer"},
            "patient_id": {"type": "integer"},
            "kind": {"type": "string"},
            "administered_at": _TIME,
            "checkins": _CHECKINS,
        }
    ),
    "Enrollment": _object(
        {
            "id": {"type": "integer"},
            "patient_id": {"type": "integer"},
            "protocol": {"type": "string"},
            "protocol_version": {"type": "integer"},
            "start_at": _TIME,
            "status": _enum(EnrollmentStatus),
            "checkins": _CHECKINS,
        }
    ),
    "Escalation": _object(
        {
            "id": {"type": "integer"},
            "patient_id": _NULLABLE_INT,
            "checkin_id": _NULLABLE_INT,
            "severity": _enum(Severity),
            "reason": {"type": "string"},
            "summary": {"type": "string"},
            "status": _enum(EscalationStatus),
            "created_at": _TIME,
            "sla_due_at": _NULLABLE_TIME,
            "claimed_by": _NULLABLE_INT,
            "claimed_by_email": _NULLABLE_STR,
            "claimed_at": _NULLABLE_TIME,
            "resolved_at": _NULLABLE_TIME,
            "resolved_by": _NULLABLE_INT,
            "disposition": _enum(Disposition, nullable=True),
            "note": _NULLABLE_STR,
            "page_count": {"type": "integer"},
        }
    ),
    # flows and protocols (bot/web/api/flows.py)
    "Problem": _object(
        {
            "line": {"type": "integer"},
            "column": {"type": "integer"},
            "message": {"type": "string"},
            "severity": _enum(ProblemSeverity),
            "path": {"type": "string"},
        }
    ),
    "DefinitionVersion": _object(
        {
            "version": {"type": ["integer", "null"], "description": "null for the draft"},
            "status": _enum(VersionStatus),
            "published_at": _NULLABLE_TIME,
            "updated_at": _NULLABLE_TIME,
            "author": _NULLABLE_STR,
            "checksum": {"type": "string"},
            "running": {"type": "integer", "description": "check-ins open on this version"},
        }
    ),
}
_VERSION_OR_NULL = {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/DefinitionVersion"}]}
_DEFINITION = {
    "key": {"type": "string"},
    "title": {"type": "string"},
    "published": _VERSION_OR_NULL,
    "draft": _VERSION_OR_NULL,
    "retired": {"type": "boolean"},
    "versions": _array({"$ref": "#/components/schemas/DefinitionVersion"}),
}
RESPONSES["Definition"] = _object(_DEFINITION)
RESPONSES["DefinitionWithSources"] = _object(
    {**_DEFINITION, "draft_source": _NULLABLE_STR, "published_source": _NULLABLE_STR}
)
_PROBLEMS = _array({"$ref": "#/components/schemas/Problem"})
_KEY_TEXT = {"type": "string"}
RESPONSES["Simulation"] = _object(
    {
        "key": _KEY_TEXT,
        "version": {"oneOf": [{"type": "integer"}, {"const": "draft"}]},
        "transcript": _array(
            _object(
                {"who": {"type": "string", "enum": ["bot", "patient"]}, "text": {"type": "string"}}
            )
        ),
        "answers": _array(
            _object(
                {
                    "flow": {"type": "string"},
                    "key": {"type": "string"},
                    "raw": _NULLABLE_STR,
                    "value": {"type": ["boolean", "number", "string", "null"]},
                }
            )
        ),
        "scores": _array(
            _object(
                {
                    "flow": {"type": "string"},
                    "name": {"type": "string"},
                    "total": {"type": "number"},
                    "band": _NULLABLE_STR,
                    "flags": _array({"type": "string"}),
                    "complete": {"type": "boolean"},
                    "answered": {"type": "integer"},
                    "items": {"type": "integer"},
                }
            )
        ),
        "escalations": _array(
            _object(
                {
                    "flow": {"type": "string"},
                    "severity": _enum(Severity),
                    "reason": {"type": "string"},
                    "summary": {"type": "string"},
                }
            )
        ),
        "flows": _array({"type": "string"}),
        "outcome": _enum(Outcome, nullable=True),
        "unused_replies": {"type": "integer"},
    }
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _list_of(name: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": _ref(name)}},
    }


def _page_of(name: str) -> dict[str, Any]:
    page = _list_of(name)
    page["required"] = ["items", "next"]
    page["properties"]["next"] = {"type": ["string", "null"]}
    return page


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "malformed request",
        401: "missing or invalid token",
        403: "the caller's role may not do this",
        404: "not found",
        409: "conflict with the current state",
        413: "request body too large",
        422: "a field is invalid (details name it)",
    }
    return {str(c): _json(_ref("Error"), text[c]) for c in codes}


_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": schemas.MAX_ID},
}
_AUTH = (401, 403)


def _op(
    summary: str,
    ok: dict[str, Any],
    *,
    status: int = 200,
    body: type[BaseModel] | None = None,
    params: list[dict[str, Any]] | None = None,
    errors: tuple[int, ...] = (),
    tag: str = "patients",
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "tags": [tag],
        "responses": {str(status): _json(ok), **_errors(*_AUTH, *errors)},
    }
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(body.__name__)}},
        }
    return op


DATE = {"type": "string", "format": "date", "pattern": schemas.DATE_PATTERN}
"""A calendar day ``YYYY-MM-DD`` (the years the API accepts)."""


def query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


def _paths() -> dict[str, Any]:
    return {
        "/api/v1/patients": {
            "get": _op(
                "List and search patients",
                _list_of("Patient"),
                params=[
                    query("q", {"type": "string", "pattern": schemas.TEXT_PATTERN}),
                    query("status", {"type": "string", "enum": ["active", "paused", "discharged"]}),
                ],
                errors=(422,),
            ),
            "post": _op(
                "Create a patient (admin)",
                _ref("Patient"),
                status=201,
                body=schemas.PatientCreate,
                errors=(400, 409, 413, 422),
            ),
        },
        "/api/v1/patients/{id}": {
            "get": _op("A patient", _ref("Patient"), params=[_ID], errors=(404,)),
            "patch": _op(
                "Change a patient; status active|paused|discharged (admin)",
                _ref("Patient"),
                params=[_ID],
                body=schemas.PatientUpdate,
                errors=(400, 404, 409, 413, 422),
            ),
        },
        "/api/v1/patients/{id}/messages": {
            "get": _op(
                "A patient's messages, oldest first",
                _list_of("Message"),
                params=[_ID],
                errors=(404,),
            ),
            "post": _op(
                "Text the patient: a clinician's own message, sent through the outbox at once "
                "(quiet hours do not hold it); 409 after the patient sent STOP or was discharged",
                _ref("Message"),
                status=201,
                params=[_ID],
                body=schemas.PatientText,
                errors=(400, 404, 409, 413, 422),
            ),
        },
        "/api/v1/patients/{id}/checkins": {
            "get": _op(
                "A patient's check-ins with their scores",
                _list_of("Checkin"),
                params=[_ID],
                errors=(404,),
            ),
            "post": _op(
                "Schedule an ad-hoc check-in (due now by default; quiet hours apply)",
                _ref("Checkin"),
                status=201,
                params=[_ID],
                body=schemas.CheckinCreate,
                errors=(400, 404, 409, 413, 422),
            ),
        },
        "/api/v1/patients/{id}/treatments": {
            "post": _op(
                "Record a treatment; schedules the protocol's check-ins relative to it",
                _ref("Treatment"),
                status=201,
                params=[_ID],
                body=schemas.TreatmentCreate,
                errors=(400, 404, 413, 422),
            ),
        },
        "/api/v1/patients/{id}/enrollments": {
            "post": _op(
                "Enrol the patient in a protocol (admin)",
                _ref("Enrollment"),
                status=201,
                params=[_ID],
                body=schemas.EnrollmentCreate,
                errors=(400, 404, 409, 413, 422),
            ),
        },
        "/api/v1/escalations": {
            "get": _op(
                "The queue: most severe first, then oldest first; a page of `limit` items "
                "(200 by default), and `next` to pass as `after` for the following page "
                "(null on the last)",
                _page_of("Escalation"),
                params=[
                    {
                        **query(
                            "status",
                            {
                                "type": "string",
                                "pattern": "^(open|claimed|resolved)(,(open|claimed|resolved))*$",
                            },
                        ),
                        "description": "one or more of open, claimed, resolved, comma-separated",
                    },
                    query(
                        "severity",
                        {"type": "string", "enum": ["critical", "high", "moderate", "low"]},
                    ),
                    query(
                        "patient_id", {"type": "integer", "minimum": 0, "maximum": schemas.MAX_ID}
                    ),
                    query("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
                    {
                        **query("after", {"type": "string"}),
                        "description": "the `next` of the previous page (empty: the first page)",
                    },
                ],
                errors=(422,),
                tag="escalations",
            ),
        },
        "/api/v1/escalations/{id}": {
            "get": _op(
                "An escalation", _ref("Escalation"), params=[_ID], errors=(404,), tag="escalations"
            ),
        },
        "/api/v1/escalations/{id}/claim": {
            "post": _op(
                "Claim it for the caller",
                _ref("Escalation"),
                params=[_ID],
                errors=(404, 409),
                tag="escalations",
            ),
        },
        "/api/v1/escalations/{id}/release": {
            "post": _op(
                "Give a claimed escalation back to the queue",
                _ref("Escalation"),
                params=[_ID],
                errors=(404, 409),
                tag="escalations",
            ),
        },
        "/api/v1/escalations/{id}/assign": {
            "post": _op(
                "Hand it to another active clinician: the one holding the claim, or an admin, "
                "may (a clinician claims an open item first)",
                _ref("Escalation"),
                params=[_ID],
                body=schemas.Assign,
                errors=(400, 404, 409, 413, 422),
                tag="escalations",
            ),
        },
        "/api/v1/escalations/{id}/resolve": {
            "post": _op(
                "Resolve with a disposition and a note",
                _ref("Escalation"),
                params=[_ID],
                body=schemas.Resolve,
                errors=(400, 404, 409, 413, 422),
                tag="escalations",
            ),
        },
    }


_USERS = {
    "/api/v1/users": {
        "get": _op(
            "Users who can be assigned escalations or paged (admin)",
            _list_of("User"),
            tag="users",
        ),
    },
}


_KIND = {
    "name": "kind",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "enum": ["flows", "protocols"]},
}
_KEY = {
    "name": "key",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$"},
}
_YAML_DOCUMENT = {
    "type": "object",
    "description": "a flow or protocol definition as a YAML mapping (docs/flows.md, docs/protocols.md)",
}
_YAML_BODY = {"required": True, "content": {"application/yaml": {"schema": _YAML_DOCUMENT}}}
_ANY_YAML_BODY = {
    "required": False,
    "content": {
        "application/yaml": {
            "schema": {
                "description": "any YAML text (none: an empty document); 200 lists its problems"
            }
        }
    },
}
_OBJECT = {"type": "object"}


def with_body(op: dict[str, Any]) -> dict[str, Any]:
    return {**op, "requestBody": _YAML_BODY}


def _definition_paths() -> dict[str, Any]:
    base = "/api/v1/{kind}"
    item = base + "/{key}"
    return {
        base: {
            "get": _op(
                "Flows or protocols: published versions and drafts",
                _list_of("Definition"),
                params=[_KIND],
                errors=(404,),
                tag="flows",
            )
        },
        item: {
            "get": _op(
                "One flow or protocol with its versions and sources",
                _ref("DefinitionWithSources"),
                params=[_KIND, _KEY],
                errors=(404,),
                tag="flows",
            )
        },
        item + "/versions/{version}": {
            "get": {
                **_op(
                    "Download one version's YAML (a number, draft or latest)",
                    _OBJECT,
                    params=[
                        _KIND,
                        _KEY,
                        {
                            "name": "version",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                    ],
                    errors=(404,),
                    tag="flows",
                ),
                "responses": {
                    "200": {
                        "description": "YAML",
                        "content": {"application/yaml": {"schema": _YAML_DOCUMENT}},
                    },
                    **_errors(401, 403, 404),
                },
            }
        },
        item + "/draft": {
            "put": with_body(
                _op(
                    "Save the draft (YAML body); 422 lists problems with line and column (admin)",
                    _object(
                        {
                            "key": _KEY_TEXT,
                            "status": {"const": "draft"},
                            "checksum": {"type": "string"},
                            "problems": _PROBLEMS,
                        }
                    ),
                    params=[_KIND, _KEY],
                    errors=(400, 404, 409, 413, 422),
                    tag="flows",
                )
            )
        },
        item + "/validate": {
            "post": {
                **_op(
                    "Validate YAML without saving it (admin)",
                    _object({"valid": {"type": "boolean"}, "problems": _PROBLEMS}),
                    params=[_KIND, _KEY],
                    errors=(400, 404, 413),
                    tag="flows",
                ),
                "requestBody": _ANY_YAML_BODY,
            }
        },
        item + "/diff": {
            "get": _op(
                "Unified diff of the draft against the newest version",
                _object(
                    {
                        "diff": {"type": "string"},
                        "lines_added": {"type": "integer"},
                        "lines_removed": {"type": "integer"},
                    }
                ),
                params=[_KIND, _KEY],
                errors=(404,),
                tag="flows",
            )
        },
        item + "/publish": {
            "post": _op(
                "Publish the draft as the next version (admin)",
                _object(
                    {
                        "key": _KEY_TEXT,
                        "version": {"type": "integer"},
                        "status": {"const": "published"},
                    }
                ),
                status=201,
                params=[_KIND, _KEY],
                errors=(404, 409, 422),
                tag="flows",
            )
        },
        item + "/rollback": {
            "post": {
                **_op(
                    "Publish a copy of an older version as the newest (admin)",
                    _object(
                        {
                            "key": _KEY_TEXT,
                            "version": {"type": "integer"},
                            "status": {"const": "published"},
                            "copied_from": {"type": "integer"},
                        }
                    ),
                    status=201,
                    params=[_KIND, _KEY],
                    errors=(400, 404, 409, 422),
                    tag="flows",
                ),
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["version"],
                                "properties": {
                                    "version": {
                                        "type": "integer",
                                        "minimum": 1,
                                        "maximum": schemas.MAX_VERSION,
                                    }
                                },
                            }
                        }
                    },
                },
            }
        },
        item + "/retire": {
            "post": _op(
                "Retire: no new check-ins use it (admin)",
                _object(
                    {
                        "key": _KEY_TEXT,
                        "status": {"const": "retired"},
                        "warnings": _array({"type": "string"}),
                    }
                ),
                params=[_KIND, _KEY],
                errors=(404, 409),
                tag="flows",
            )
        },
        "/api/v1/flows/{key}/simulate": {
            "post": _op(
                "Simulate a conversation with scripted answers",
                _ref("Simulation"),
                params=[_KEY],
                body=schemas.Simulate,
                errors=(400, 404, 413, 422),
                tag="flows",
            )
        },
    }


EXTRA_PATHS: dict[str, dict[str, Any]] = {}
"""Other API modules add their operations here at import time (exports)."""

REQUEST_MODELS: list[type[BaseModel]] = [
    schemas.PatientCreate,
    schemas.PatientUpdate,
    schemas.CheckinCreate,
    schemas.TreatmentCreate,
    schemas.EnrollmentCreate,
    schemas.Resolve,
    schemas.Assign,
    schemas.PatientText,
    schemas.Simulate,
]


@cache
def document() -> dict[str, Any]:
    components: dict[str, Any] = dict(RESPONSES)
    for model in REQUEST_MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            components[name] = sub
        components[model.__name__] = schema
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "aftercare API",
            "version": "1",
            "description": "Patients, check-ins, the escalation queue and flow definitions. "
            "Authenticate with `Authorization: Bearer <token>` (`aftercare create-token`).",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": {**_paths(), **_USERS, **_definition_paths(), **EXTRA_PATHS},
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


async def serve(_request: web.Request) -> web.Response:
    return web.json_response(document())


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/openapi.json", serve)
