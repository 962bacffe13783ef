"""The served OpenAPI document equals the server: schemathesis over every operation.

The app runs on a migrated database (SQLite; PostgreSQL too when there is one) through
``tests.web.harness`` (Twilio is the harness's fake, on loopback), in a thread with its own
event loop because schemathesis calls it synchronously over ``requests``. The database holds the flow library, an admin with an API
token (sent as ``Authorization: Bearer``), a patient with a started check-in and an escalation;
``{id}`` and ``{key}`` name those rows in most generated requests, so cases reach past the 404.

Every operation of ``/api/v1/openapi.json`` gets schemathesis' pytest phases (examples,
coverage: boundary values, missing and unexpected parts, undeclared methods; fuzzing: positive
and negative) and its default check set, among them:

- ``not_a_server_error``: never a 5xx;
- ``status_code_conformance``: the status is one the operation documents;
- ``content_type_conformance`` and ``response_schema_conformance``: the body is what it says;
- ``negative_data_rejection``: what the document forbids is refused (4xx);
- ``positive_data_acceptance``: what the document allows is not refused with 400/422;
- ``ignored_auth``: no token or a wrong one is refused; ``unsupported_method``: 405 with Allow.

Then short sequences along the links schemathesis infers between operations (a patient
created, then read, changed, given a treatment...), with the same checks.

Two settings on top of schemathesis' defaults, both narrow:

- 413 counts as a refusal: a body over the size limit is refused whatever its schema says
  (each body operation documents its 413);
- a 422 for a rule the document can state in words but not in JSON Schema (``INEXPRESSIBLE``:
  a phone number that no numbering plan has, a time zone the database does not know, a date
  in the future (a treatment, a date of birth), a user id that names no active clinician, a flow
  key that is not published, ``to`` before ``from``, a queue cursor not from a previous
  page, a definition with errors) is not a refused valid request. Any other 422 is.

A failure is a mismatch: fix the document (``bot/web/api/openapi.py``, the pydantic models in
``bot/web/api/schemas.py``) or the server, not this test. Runs the same every time: a fixed
seed, derandomized Hypothesis, no deadlines, no example database.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.openapi.checks import RejectedPositiveData

import bot.web.api  # noqa: F401  (registers every module's operations in the document)
from bot.migrations import upgrade
from bot.services.escalations import raise_escalation
from bot.web.api import openapi
from db.enums import Role, Severity
from tests.conftest import drop_pg_database, new_pg_database, pg_url_for
from tests.web.harness import Harness, harness

SEEDED_ID = 1
"""The seeded patient's and escalation's id: each is the first row of its table."""
SEEDED_KEY = "phq9"
"""A library flow that the database has published."""

MAX_EXAMPLES = 25
"""Fuzzed requests per operation (the coverage phase adds its own, a few dozen at most)."""
# schemathesis' defaults (4.x) and 413
REFUSED = [
    "400",
    "401",
    "403",
    "404",
    "405",
    "406",
    "409",
    "413",
    "415",
    "422",
    "428",
    "429",
    "5xx",
]
NOT_REFUSED = ["2xx", "3xx", "401", "403", "404", "409", "413", "429", "5xx"]
REQUEST_TIMEOUT_S = 60.0
"""Only for a request that never gets an answer; not a speed limit."""

# the rules the document states in words only: a 422 naming one of these fields, with this
# message, is the server applying the rule to a request whose shape was valid
_PHONE = ("phone", r"must be a valid phone number")
_ZONE = ("timezone", r"must be an IANA time zone")
_BORN = ("date_of_birth", r"a date of birth cannot be in the future$")
INEXPRESSIBLE: dict[str, dict[str, str]] = {
    "POST /api/v1/patients": dict([_PHONE, _ZONE, _BORN]),
    "PATCH /api/v1/patients/{id}": dict([_PHONE, _ZONE, _BORN]),
    "POST /api/v1/escalations/{id}/assign": {"user_id": r"^no active clinician with this id$"},
    "POST /api/v1/patients/{id}/treatments": {
        "administered_at": r"^a treatment cannot be in the future$"
    },
    "POST /api/v1/patients/{id}/checkins": {"flow": r"^flow '[a-z0-9_]+' "},
    "POST /api/v1/patients/{id}/enrollments": {"protocol": r"^protocol '[a-z0-9_]+' "},
    "GET /api/v1/escalations": {"after": r"^must be the next value of a previous page$"},
    "GET /api/v1/exports/escalations.csv": {"to": r"^must not be before from$"},
}
DEFINITION_SOURCES = {
    "PUT /api/v1/{kind}/{key}/draft",
    "POST /api/v1/{kind}/{key}/publish",
    "POST /api/v1/{kind}/{key}/rollback",
    "POST /api/v1/flows/{key}/simulate",
}
"""Operations whose 422 may list problems (line, column) of a flow or protocol source."""


def is_inexpressible(label: str, response: schemathesis.Response) -> bool:
    """Whether a 422 to a valid request applies only rules the document cannot state."""
    if response.status_code != 422:
        return False
    try:
        details = response.json()["error"]["details"]
    except (ValueError, KeyError, TypeError):
        return False
    if not isinstance(details, list) or not details:
        return False
    if label in DEFINITION_SOURCES and all(
        isinstance(d, dict) and {"line", "column", "message"} <= d.keys() for d in details
    ):
        return True
    rules = INEXPRESSIBLE.get(label, {})
    return all(
        isinstance(d, dict)
        and d.get("field") in rules
        and re.search(rules[d["field"]], str(d.get("message", ""))) is not None
        for d in details
    )


CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20260302,
        # the token is sent with every request; ``ignored_auth`` sends none and a wrong one
        "generation": {
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "with-security-parameters": False,
        },
        "dictionaries": {
            "ids": {"values": [SEEDED_ID]},
            "keys": {"values": [SEEDED_KEY]},
            "flows": {"values": [SEEDED_KEY, "gad7", "daily_mood", "cssrs_screen"]},
            "protocols": {"values": ["ketamine_induction", "relapse_watch"]},
            "phones": {"values": ["+12025550143", "+442079460958", "+4930901820"]},
            "zones": {"values": ["America/New_York", "Europe/Berlin", "UTC"]},
        },
        # mostly rows that exist and values the server knows; now and then generated ones
        "parameters": {
            "path.id": {"dictionary": "ids", "probability": 0.8},
            "path.key": {"dictionary": "keys", "probability": 0.8},
            "body.flow": {"dictionary": "flows", "probability": 0.7},
            "body.protocol": {"dictionary": "protocols", "probability": 0.7},
            "body.phone": {"dictionary": "phones", "probability": 0.7},
            "body.timezone": {"dictionary": "zones", "probability": 0.7},
        },
        "checks": {
            "negative_data_rejection": {"expected-statuses": REFUSED},
            "positive_data_acceptance": {"expected-statuses": NOT_REFUSED},
        },
    }
)
schema = schemathesis.openapi.from_dict(openapi.document(), config=CONFIG)


@schema.hook
def filter_failure(
    context: schemathesis.HookContext,
    failure: Exception,
    case: schemathesis.Case[Any],
    response: schemathesis.Response,
) -> bool:
    """Keep every failure but a 422 that ``INEXPRESSIBLE`` explains."""
    return not (
        isinstance(failure, RejectedPositiveData)
        and is_inexpressible(case.operation.label, response)
    )


@dataclass
class Live:
    base_url: str
    token: str
    http: requests.Session

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def app_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated database of its own (PostgreSQL found what SQLite let pass: 32-bit ids,
    NUL in a search)."""
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("conformance") / "app.db"
        url = f"sqlite+aiosqlite:///{path}"
        upgrade(url)
        yield url
        return
    name = new_pg_database(request.getfixturevalue("pg_template"))
    try:
        yield pg_url_for(name)
    finally:
        drop_pg_database(name)


@pytest.fixture(scope="module")
def live(app_database: str) -> Iterator[Live]:
    url = app_database
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="conformance-app", daemon=True)
    thread.start()
    app: AbstractAsyncContextManager[Harness] = harness(url)

    def run(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(120)

    entered = False

    async def start() -> tuple[Harness, str]:
        nonlocal entered
        h = await app.__aenter__()
        entered = True
        token = await h.token(Role.ADMIN)
        patient = await h.patient()
        await h.start(patient, SEEDED_KEY)
        async with h.db.write() as s:
            escalation = raise_escalation(
                session=s,
                severity=Severity.HIGH,
                reason="phq9_severe",
                summary="PHQ-9 22",
                now=h.clock.now(),
                patient_id=patient.id,
            )
            await s.flush()
            assert (patient.id, escalation.id) == (SEEDED_ID, SEEDED_ID)
        return h, token

    try:
        h, token = run(start())
        with requests.Session() as http:
            yield Live(str(h.client.make_url("")).rstrip("/"), token, http)
    finally:
        try:
            if entered:
                run(app.__aexit__(None, None, None))
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


def test_the_served_document_is_the_one_tested(live: Live) -> None:
    resp = live.http.get(f"{live.base_url}/api/v1/openapi.json", timeout=REQUEST_TIMEOUT_S)
    assert resp.status_code == 200
    assert resp.json() == openapi.document()
    operations = {(m.upper(), p) for p, ops in openapi.document()["paths"].items() for m in ops}
    assert ("PUT", "/api/v1/{kind}/{key}/draft") in operations
    assert ("GET", "/api/v1/exports/escalations.csv") in operations


@schema.parametrize()
@settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_operation_conforms(case: schemathesis.Case[Any], live: Live) -> None:
    case.call_and_validate(
        base_url=live.base_url,
        session=live.http,
        headers=live.auth,
        timeout=REQUEST_TIMEOUT_S,
    )


def test_stateful_sequences_conform(live: Live) -> None:
    """Sequences along the links schemathesis infers (an id one answer gives, used by the next
    request), with the same checks: a created patient can be read back, and so on."""

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: schemathesis.Case[Any]) -> dict[str, Any]:
            return {
                "base_url": live.base_url,
                "session": live.http,
                "headers": live.auth,
                "timeout": REQUEST_TIMEOUT_S,
            }

    Workflow.run(
        settings=settings(
            max_examples=MAX_EXAMPLES,
            stateful_step_count=6,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
