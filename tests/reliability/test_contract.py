"""Case 8: the API against its own OpenAPI document, fuzzed with schemathesis.

A real server (aiohttp ``AppRunner``/``TCPSite`` on a free port, in a thread with its
own event loop, because schemathesis calls it synchronously over ``requests``) runs on
a migrated SQLite database with the flow library seeded, two users with API tokens, a
patient and an escalation, so generated cases hit real rows as well as missing ones.

For every operation in ``/api/v1/openapi.json`` and for an admin's and a clinician's
token, schemathesis generates ``EXAMPLES`` requests from the document (half of them
with the path parameters pinned to rows that exist) and checks each answer:

- ``not_a_server_error``: never a 5xx;
- ``status_code_conformance``: the status is one the operation documents;
- ``content_type_conformance``: the media type is the documented one;
- ``response_schema_conformance``: the body matches the documented schema.

Anything else the server answers is a finding: either the document is wrong (fixed in
``bot/web/api/openapi.py``) or the server is (a failing test here, reported).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import web
from aiohttp.test_utils import unused_port
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bot.app import create_app
from bot.clock import SystemClock
from bot.migrations import upgrade
from bot.services.accounts import NewUser, create_token, create_user
from bot.services.escalations import raise_escalation
from bot.services.library_seed import seed_library
from bot.settings import load_settings
from bot.web.api import exports, openapi
from db.enums import Role, Severity
from db.models import Patient
from db.session import Database

EXAMPLES = 60
"""Generated requests per operation and role (~30 operations x 2 roles x 20 = ~1,200)."""

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

# importing exports registers its operations in the document, as the app does
assert set(exports.PATHS) <= set(openapi.EXTRA_PATHS)
OPERATIONS: list[tuple[str, str]] = sorted(
    (method.upper(), path)
    for path, ops in openapi.document()["paths"].items()
    for method in ops
)


@dataclass
class Live:
    base_url: str
    tokens: dict[str, str]
    ids: dict[str, int]
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    runner: web.AppRunner
    db: Database
    http: requests.Session = field(default_factory=requests.Session)
    schema: Any = None


async def _prepare(url: str, port: int) -> tuple[web.AppRunner, Database, dict[str, str], dict]:
    clock = SystemClock()
    now = clock.now()
    db = Database(url)
    tokens: dict[str, str] = {}
    ids: dict[str, int] = {}
    async with db.write() as s:
        await seed_library(session=s, now=now)
        for role in (Role.ADMIN, Role.CLINICIAN):
            email = f"{role}@contract.example.org"
            await create_user(
                session=s, new=NewUser(email, role, "a-long-enough-passphrase", "C"), now=now
            )
            _user, tokens[str(role)] = await create_token(
                session=s, email=email, label="contract", now=now
            )
        patient = Patient(
            first_name="Contract",
            phone="+12025550177",
            timezone="America/New_York",
            language="en",
            created_at=now,
            updated_at=now,
        )
        s.add(patient)
        await s.flush()
        escalation = raise_escalation(
            session=s,
            severity=Severity.HIGH,
            reason="phq9_severe",
            summary="PHQ-9 22",
            now=now,
            patient_id=patient.id,
        )
        await s.flush()
        ids["patient"], ids["escalation"] = patient.id, escalation.id
    settings = load_settings(
        {
            "DATABASE_URL": url,
            "SMS_TRANSPORT": "console",
            "SECRET_KEY": "c" * 40,
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            "CLINIC_NAME": "Contract Clinic",
            "CLINIC_PHONE": "+12025550100",
        }
    )
    app = create_app(settings, database=db, clock=clock)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, db, tokens, ids


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    path: Path = tmp_path_factory.mktemp("contract") / "contract.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url)
    port = unused_port()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="contract-server", daemon=True)
    thread.start()
    runner, db, tokens, ids = asyncio.run_coroutine_threadsafe(
        _prepare(url, port), loop
    ).result(60)
    server = Live(f"http://127.0.0.1:{port}", tokens, ids, loop, thread, runner, db)
    try:
        server.schema = schemathesis.openapi.from_url(
            f"{server.base_url}/api/v1/openapi.json", timeout=10
        )
        yield server
    finally:
        server.http.close()

        async def stop() -> None:
            await runner.cleanup()
            await db.dispose()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _pinned(live: Live, path: str) -> dict[str, Any]:
    """Path parameters naming rows that exist, so cases reach past the 404."""
    fixed: dict[str, Any] = {}
    if "{id}" in path:
        fixed["id"] = live.ids["escalation" if "/escalations/" in path else "patient"]
    if "{kind}" in path:
        fixed["kind"] = "flows"
    if "{key}" in path:
        fixed["key"] = "phq9"
    if "{version}" in path:
        fixed["version"] = "1"
    return fixed


def test_every_operation_is_fuzzed(live: Live) -> None:
    """The parametrization below covers exactly the operations the live document lists."""
    served = {
        (method.upper(), path)
        for path, ops in live.schema.raw_schema["paths"].items()
        for method in ops
    }
    assert served == set(OPERATIONS)
    # the flows/protocols and export operations are among them
    assert ("PUT", "/api/v1/{kind}/{key}/draft") in served
    assert ("GET", exports.ESCALATIONS_CSV) in served


@pytest.mark.parametrize("role", ["admin", "clinician"])
@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_operation_conforms_to_the_document(live: Live, method: str, path: str, role: str) -> None:
    operation = live.schema[path][method]
    pinned = _pinned(live, path)
    strategy = operation.as_strategy()
    if pinned:
        strategy = st.one_of(strategy, operation.as_strategy(path_parameters=pinned))
    headers = {"Authorization": f"Bearer {live.tokens[role]}"}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(
            base_url=live.base_url,
            session=live.http,
            headers=headers,
            checks=CHECKS,
            timeout=10,
        )

    run()
