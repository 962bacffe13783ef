"""From protocols to check-in rows through the services, on SQLite and PostgreSQL.

Exact due times for every shipped protocol in New York and Berlin, across both
DST transitions, with quiet hours on (21:00-08:00) and off. 2026 transitions:
New York springs forward Mar 8 (07:00 UTC) and falls back Nov 1 (06:00 UTC);
Berlin Mar 29 and Oct 25 (01:00 UTC).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from bot.services import dispatch, scheduling
from bot.services.library_seed import seed_library
from db.enums import CheckinStatus, PatientStatus, Role
from db.models import Checkin, Enrollment, Patient
from db.session import Database
from tests.web.harness import Harness, harness

NY = "America/New_York"
BERLIN = "Europe/Berlin"
SEEDED_AT = datetime(2026, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)

Row = tuple[str, datetime, datetime | None, datetime | None, int | None]


def utc(month: int, day: int, hour: int, minute: int = 0, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.fixture
async def db(database: Database) -> AsyncIterator[Database]:
    async with database.write() as s:
        await seed_library(session=s, now=SEEDED_AT)
    yield database


_phones = iter(range(1000, 9999))


async def new_patient(
    db: Database,
    tz: str,
    *,
    quiet: bool = True,
    quiet_hours: tuple[time, time] = (time(21), time(8)),
) -> Patient:
    async with db.write() as s:
        p = Patient(
            first_name="Ana",
            phone=f"+1202555{next(_phones):04d}",
            timezone=tz,
            language="en",
            quiet_start=quiet_hours[0] if quiet else None,
            quiet_end=quiet_hours[1] if quiet else None,
            created_at=SEEDED_AT,
            updated_at=SEEDED_AT,
        )
        s.add(p)
    return p


async def rows_of(db: Database, patient_id: int, **where: Any) -> list[Checkin]:
    async with db.read() as s:
        q = select(Checkin).where(Checkin.patient_id == patient_id)
        for name, value in where.items():
            column = getattr(Checkin, name)
            q = q.where(column.is_(None) if value is None else column == value)
        return list((await s.scalars(q.order_by(Checkin.due_at, Checkin.id))).all())


def shape(rows: list[Checkin]) -> list[Row]:
    return [(c.flow_key, c.due_at, c.reminder_at, c.expires_at, c.occurrence) for c in rows]


async def enroll(db: Database, p: Patient, protocol: str, start: datetime) -> list[Checkin]:
    async with db.write() as s:
        patient = await s.get(Patient, p.id)
        assert patient is not None
        _e, created = await scheduling.enroll(
            session=s, patient=patient, protocol_key=protocol, start_at=start, now=start
        )
    return created


async def treat(db: Database, p: Patient, at: datetime, now: datetime | None = None) -> int:
    async with db.write() as s:
        patient = await s.get(Patient, p.id)
        assert patient is not None
        t, _created = await scheduling.record_treatment(
            session=s, patient=patient, kind="ketamine", administered_at=at, now=now or at
        )
    return t.id


# --- treatment-relative items -------------------------------------------------------------

# (protocol, zone, quiet hours on, treatment time, expected rows of that treatment)
TREATMENT_CASES: list[tuple[str, str, bool, datetime, list[Row]]] = [
    # ketamine: +24h/+48h elapsed, so across spring-forward the wall clock moves 10:00 -> 11:00
    (
        "ketamine_induction",
        NY,
        True,
        utc(3, 7, 15),
        [
            ("post_session", utc(3, 8, 15), utc(3, 8, 19), utc(3, 9, 15), 1),
            ("daily_mood", utc(3, 9, 15), utc(3, 9, 19), utc(3, 10, 15), 1),
        ],
    ),
    # 22:30 EDT Oct 30: +24h is 22:30 EDT (quiet) -> 08:00 EST Nov 1, after the fall-back
    (
        "ketamine_induction",
        NY,
        True,
        utc(10, 31, 2, 30),
        [
            ("post_session", utc(11, 1, 13), utc(11, 1, 17), utc(11, 2, 13), 1),
            ("daily_mood", utc(11, 2, 13), utc(11, 2, 17), utc(11, 3, 13), 1),
        ],
    ),
    (
        "ketamine_induction",
        NY,
        False,
        utc(10, 31, 2, 30),
        [
            ("post_session", utc(11, 1, 2, 30), utc(11, 1, 6, 30), utc(11, 2, 2, 30), 1),
            ("daily_mood", utc(11, 2, 2, 30), utc(11, 2, 6, 30), utc(11, 3, 2, 30), 1),
        ],
    ),
    # 18:00 CEST Oct 24: due 17:00 CET; the +4h reminder (21:00 CET) waits until 08:00 CET
    (
        "ketamine_induction",
        BERLIN,
        True,
        utc(10, 24, 16),
        [
            ("post_session", utc(10, 25, 16), utc(10, 26, 7), utc(10, 26, 16), 1),
            ("daily_mood", utc(10, 26, 16), utc(10, 27, 7), utc(10, 27, 16), 1),
        ],
    ),
    (
        "ketamine_induction",
        BERLIN,
        False,
        utc(10, 24, 16),
        [
            ("post_session", utc(10, 25, 16), utc(10, 25, 20), utc(10, 26, 16), 1),
            ("daily_mood", utc(10, 26, 16), utc(10, 26, 20), utc(10, 27, 16), 1),
        ],
    ),
    # esketamine: 10:00 local the next calendar day, whatever the offset that day
    (
        "esketamine_maintenance",
        BERLIN,
        True,
        utc(3, 28, 15),
        [("post_session", utc(3, 29, 8), utc(3, 29, 12), utc(3, 30, 8), 1)],
    ),
    (
        "esketamine_maintenance",
        BERLIN,
        False,
        utc(3, 28, 15),
        [("post_session", utc(3, 29, 8), utc(3, 29, 12), utc(3, 30, 8), 1)],
    ),
    (
        "esketamine_maintenance",
        NY,
        True,
        utc(10, 31, 14),
        [("post_session", utc(11, 1, 15), utc(11, 1, 19), utc(11, 2, 15), 1)],
    ),
    (
        "esketamine_maintenance",
        NY,
        False,
        utc(10, 31, 14),
        [("post_session", utc(11, 1, 15), utc(11, 1, 19), utc(11, 2, 15), 1)],
    ),
    # monthly: +24h with its own 24h expiry; 22:30 CET Mar 28 -> 23:30 CEST (quiet) -> 08:00
    (
        "maintenance_monthly",
        BERLIN,
        True,
        utc(3, 28, 21, 30),
        [("post_session", utc(3, 30, 6), utc(3, 30, 10), utc(3, 31, 6), 1)],
    ),
    (
        "maintenance_monthly",
        BERLIN,
        False,
        utc(3, 28, 21, 30),
        [("post_session", utc(3, 29, 21, 30), utc(3, 30, 1, 30), utc(3, 30, 21, 30), 1)],
    ),
    (
        "maintenance_monthly",
        NY,
        True,
        utc(3, 7, 15),
        [("post_session", utc(3, 8, 15), utc(3, 8, 19), utc(3, 9, 15), 1)],
    ),
]


@pytest.mark.parametrize(
    ("protocol", "tz", "quiet", "at", "expected"),
    TREATMENT_CASES,
    ids=[f"{c[0]}-{c[1].split('/')[1]}-{'quiet' if c[2] else 'noquiet'}" for c in TREATMENT_CASES],
)
async def test_record_treatment_materialises_exact_due_times(
    db: Database, protocol: str, tz: str, quiet: bool, at: datetime, expected: list[Row]
) -> None:
    p = await new_patient(db, tz, quiet=quiet)
    await enroll(db, p, protocol, at - timedelta(days=1))
    treatment_id = await treat(db, p, at)
    rows = await rows_of(db, p.id, treatment_id=treatment_id)
    assert shape(rows) == expected
    for c in rows:
        assert c.status is CheckinStatus.SCHEDULED
        assert (c.reminder_after_s, c.expiry_after_s) == (4 * 3600, 24 * 3600)
        assert c.enrollment_id is not None and c.item_index is not None


# --- enrollment-relative (recurring) items ------------------------------------------------

ENROLL_CASES: list[tuple[str, str, datetime, list[Row]]] = [
    # Sunday Mar 1 in New York: Mondays 10:00 EST then 10:00 EDT
    (
        "ketamine_induction",
        NY,
        utc(3, 1, 12),
        [
            ("phq9", utc(3, 2, 15), utc(3, 2, 19), utc(3, 3, 15), 1),
            ("gad7", utc(3, 2, 15), utc(3, 2, 19), utc(3, 3, 15), 1),
            ("phq9", utc(3, 9, 14), utc(3, 9, 18), utc(3, 10, 14), 2),
            ("gad7", utc(3, 9, 14), utc(3, 9, 18), utc(3, 10, 14), 2),
        ],
    ),
    # Tuesday Oct 13 in Berlin: Monday 10:00 CEST then 10:00 CET
    (
        "ketamine_induction",
        BERLIN,
        utc(10, 13, 8),
        [
            ("phq9", utc(10, 19, 8), utc(10, 19, 12), utc(10, 20, 8), 1),
            ("gad7", utc(10, 19, 8), utc(10, 19, 12), utc(10, 20, 8), 1),
            ("phq9", utc(10, 26, 9), utc(10, 26, 13), utc(10, 27, 9), 2),
            ("gad7", utc(10, 26, 9), utc(10, 26, 13), utc(10, 27, 9), 2),
        ],
    ),
    # esketamine: PHQ-9 every 2 weeks, GAD-7 every 4, 48 h expiry
    (
        "esketamine_maintenance",
        BERLIN,
        utc(10, 13, 8),
        [
            ("phq9", utc(10, 19, 8), utc(10, 19, 12), utc(10, 21, 8), 1),
            ("gad7", utc(10, 19, 8), utc(10, 19, 12), utc(10, 21, 8), 1),
            ("phq9", utc(11, 2, 9), utc(11, 2, 13), utc(11, 4, 9), 2),
            ("gad7", utc(11, 16, 9), utc(11, 16, 13), utc(11, 18, 9), 2),
            ("substance_use", utc(10, 15, 8), utc(10, 15, 12), utc(10, 17, 8), 1),
            ("dissociation", utc(10, 15, 8), utc(10, 15, 12), utc(10, 17, 8), 1),
            ("alcohol_sedatives", utc(10, 15, 8), utc(10, 15, 12), utc(10, 17, 8), 1),
            ("substance_use", utc(11, 12, 9), utc(11, 12, 13), utc(11, 14, 9), 2),
            ("dissociation", utc(11, 12, 9), utc(11, 12, 13), utc(11, 14, 9), 2),
            ("alcohol_sedatives", utc(11, 12, 9), utc(11, 12, 13), utc(11, 14, 9), 2),
        ],
    ),
    (
        "esketamine_maintenance",
        NY,
        utc(3, 1, 12),
        [
            ("phq9", utc(3, 2, 15), utc(3, 2, 19), utc(3, 4, 15), 1),
            ("gad7", utc(3, 2, 15), utc(3, 2, 19), utc(3, 4, 15), 1),
            ("phq9", utc(3, 16, 14), utc(3, 16, 18), utc(3, 18, 14), 2),
            ("gad7", utc(3, 30, 14), utc(3, 30, 18), utc(4, 1, 14), 2),
            ("substance_use", utc(3, 5, 15), utc(3, 5, 19), utc(3, 7, 15), 1),
            ("dissociation", utc(3, 5, 15), utc(3, 5, 19), utc(3, 7, 15), 1),
            ("alcohol_sedatives", utc(3, 5, 15), utc(3, 5, 19), utc(3, 7, 15), 1),
            ("substance_use", utc(4, 2, 14), utc(4, 2, 18), utc(4, 4, 14), 2),
            ("dissociation", utc(4, 2, 14), utc(4, 2, 18), utc(4, 4, 14), 2),
            ("alcohol_sedatives", utc(4, 2, 14), utc(4, 2, 18), utc(4, 4, 14), 2),
        ],
    ),
    # monthly: Thursdays and Mondays every 4 weeks
    (
        "maintenance_monthly",
        NY,
        utc(10, 20, 14),
        [
            ("dissociation", utc(10, 22, 14), utc(10, 22, 18), utc(10, 24, 14), 1),
            ("substance_use", utc(10, 22, 14), utc(10, 22, 18), utc(10, 24, 14), 1),
            ("phq9", utc(10, 26, 14), utc(10, 26, 18), utc(10, 28, 14), 1),
            ("gad7", utc(10, 26, 14), utc(10, 26, 18), utc(10, 28, 14), 1),
            ("dissociation", utc(11, 19, 15), utc(11, 19, 19), utc(11, 21, 15), 2),
            ("substance_use", utc(11, 19, 15), utc(11, 19, 19), utc(11, 21, 15), 2),
            ("phq9", utc(11, 23, 15), utc(11, 23, 19), utc(11, 25, 15), 2),
            ("gad7", utc(11, 23, 15), utc(11, 23, 19), utc(11, 25, 15), 2),
        ],
    ),
    (
        "maintenance_monthly",
        BERLIN,
        utc(3, 24, 9),
        [
            ("dissociation", utc(3, 26, 9), utc(3, 26, 13), utc(3, 28, 9), 1),
            ("substance_use", utc(3, 26, 9), utc(3, 26, 13), utc(3, 28, 9), 1),
            ("phq9", utc(3, 30, 8), utc(3, 30, 12), utc(4, 1, 8), 1),
            ("gad7", utc(3, 30, 8), utc(3, 30, 12), utc(4, 1, 8), 1),
            ("dissociation", utc(4, 23, 8), utc(4, 23, 12), utc(4, 25, 8), 2),
            ("substance_use", utc(4, 23, 8), utc(4, 23, 12), utc(4, 25, 8), 2),
            ("phq9", utc(4, 27, 8), utc(4, 27, 12), utc(4, 29, 8), 2),
            ("gad7", utc(4, 27, 8), utc(4, 27, 12), utc(4, 29, 8), 2),
        ],
    ),
]


def _sorted(rows: list[Row]) -> list[Row]:
    return sorted(rows, key=lambda r: (r[1], r[0]))


@pytest.mark.parametrize("quiet", [True, False], ids=["quiet", "noquiet"])
@pytest.mark.parametrize(
    ("protocol", "tz", "start", "expected"),
    ENROLL_CASES,
    ids=[f"{c[0]}-{c[1].split('/')[1]}" for c in ENROLL_CASES],
)
async def test_enroll_materialises_next_two_occurrences(
    db: Database, protocol: str, tz: str, start: datetime, expected: list[Row], quiet: bool
) -> None:
    # every recurring item is at 10:00, outside quiet hours: on and off give the same times
    p = await new_patient(db, tz, quiet=quiet)
    created = await enroll(db, p, protocol, start)
    rows = await rows_of(db, p.id)
    assert _sorted(shape(rows)) == _sorted(expected)
    assert {c.id for c in created} == {c.id for c in rows}
    assert all(c.treatment_id is None and c.status is CheckinStatus.SCHEDULED for c in rows)


async def test_quiet_hours_end_in_spring_forward_gap_moves_to_next_valid_minute(
    db: Database,
) -> None:
    # quiet 22:00-02:30; 02:30 does not exist on Mar 8 in New York -> 03:00 EDT (07:00 UTC)
    p = await new_patient(db, NY, quiet_hours=(time(22), time(2, 30)))
    await enroll(db, p, "ketamine_induction", utc(3, 6, 12))
    t = await treat(db, p, utc(3, 7, 6))  # +24h = 01:00 EST Mar 8, inside quiet hours
    rows = await rows_of(db, p.id, treatment_id=t)
    assert [(c.flow_key, c.due_at) for c in rows] == [
        ("post_session", utc(3, 8, 7)),
        ("daily_mood", utc(3, 9, 6, 30)),  # 02:00 EDT Mar 9, inside quiet -> 02:30 EDT
    ]


async def test_quiet_hours_end_in_fall_back_overlap_uses_first_occurrence(db: Database) -> None:
    # quiet 22:00-01:30; 01:30 happens twice on Nov 1 in New York: the first is 05:30 UTC (EDT)
    p = await new_patient(db, NY, quiet_hours=(time(22), time(1, 30)))
    await enroll(db, p, "ketamine_induction", utc(10, 29, 12))
    t = await treat(db, p, utc(10, 31, 4))  # +24h = 00:00 EDT Nov 1
    rows = await rows_of(db, p.id, treatment_id=t)
    assert [(c.flow_key, c.due_at) for c in rows] == [
        ("post_session", utc(11, 1, 5, 30)),
        ("daily_mood", utc(11, 2, 6, 30)),  # 01:30 EST Nov 2
    ]


# --- replenishing recurring items ---------------------------------------------------------


async def _finish(db: Database, ids: list[int], now: datetime) -> None:
    async with db.write() as s:
        await s.execute(
            update(Checkin)
            .where(Checkin.id.in_(ids))
            .values(status=CheckinStatus.COMPLETED, outcome="completed", completed_at=now)
        )


async def _replenish(db: Database, p: Patient, now: datetime) -> list[Checkin]:
    async with db.write() as s:
        patient = await s.get(Patient, p.id)
        enrollment = await s.scalar(select(Enrollment).where(Enrollment.patient_id == p.id))
        assert patient is not None and enrollment is not None
        return await scheduling.replenish(
            session=s, enrollment=enrollment, patient=patient, now=now
        )


async def test_replenish_keeps_two_ahead_and_stops_at_count(db: Database) -> None:
    p = await new_patient(db, NY)
    await enroll(db, p, "ketamine_induction", utc(3, 1, 12))
    # nothing new while the two occurrences of each item are still pending
    assert await _replenish(db, p, utc(3, 2, 16)) == []
    mondays = [
        utc(3, 2, 15),
        utc(3, 9, 14),
        utc(3, 16, 14),
        utc(3, 23, 14),
        utc(3, 30, 14),
        utc(4, 6, 14),
    ]
    for week in range(6):
        now = mondays[week] + 2 * H
        due = await rows_of(db, p.id, status=CheckinStatus.SCHEDULED)
        assert len(due) == min(4, 2 * (6 - week))
        assert {c.due_at for c in due} == set(mondays[week : week + 2])
        # this week's two are answered; the top-up adds the occurrence two weeks out
        await _finish(db, [c.id for c in due if c.due_at == mondays[week]], now)
        created = await _replenish(db, p, now)
        expect = [(f, mondays[week + 2], week + 3) for f in ("phq9", "gad7")] if week < 4 else []
        assert sorted((c.flow_key, c.due_at, c.occurrence) for c in created) == sorted(expect)
    rows = await rows_of(db, p.id)
    assert len(rows) == 12  # count: 6 for each of the two items, no more
    assert sorted({c.occurrence for c in rows if c.occurrence}) == [1, 2, 3, 4, 5, 6]


async def test_replenish_indefinite_schedule_stays_bounded_and_never_backfills(
    db: Database,
) -> None:
    p = await new_patient(db, BERLIN)
    await enroll(db, p, "esketamine_maintenance", utc(10, 13, 8))
    # a year passes with nothing answered: the worker marks the old ones missed, never re-adds
    # them, and the top-up only ever holds the next two of each item
    async with db.write() as s:
        await s.execute(
            update(Checkin)
            .where(Checkin.patient_id == p.id)
            .values(status=CheckinStatus.MISSED, completed_at=utc(11, 20, 0))
        )
    now = utc(10, 14, 12, year=2027)  # a Thursday; Berlin falls back on Oct 31 2027
    created = await _replenish(db, p, now)
    found = sorted((c.flow_key, c.occurrence, c.due_at) for c in created)
    # dissociation and alcohol_sedatives share the substance-use Thursdays
    for twin in ("alcohol_sedatives", "dissociation"):
        assert [(o, d) for f, o, d in found if f == twin] == [
            (o, d) for f, o, d in found if f == "substance_use"
        ]
    assert [x for x in found if x[0] not in ("alcohol_sedatives", "dissociation")] == [
        ("gad7", 14, utc(10, 18, 8, year=2027)),
        ("gad7", 15, utc(11, 15, 9, year=2027)),
        ("phq9", 27, utc(10, 18, 8, year=2027)),
        ("phq9", 28, utc(11, 1, 9, year=2027)),
        # the monthly Thursday screens: this morning's is still inside its 48 h window
        ("substance_use", 14, utc(10, 14, 8, year=2027)),
        ("substance_use", 15, utc(11, 11, 9, year=2027)),
    ]
    assert await _replenish(db, p, now + H) == []


# --- superseding --------------------------------------------------------------------------


async def test_new_treatment_supersedes_unsent_checkins_of_previous_one(db: Database) -> None:
    p = await new_patient(db, NY)
    await enroll(db, p, "ketamine_induction", utc(3, 1, 12))
    first = await treat(db, p, utc(3, 3, 15))
    post, mood = await rows_of(db, p.id, treatment_id=first)
    # the day-after check-in went out; the +48h one had not yet when the next infusion came
    async with db.write() as s:
        await s.execute(
            update(Checkin)
            .where(Checkin.id == post.id)
            .values(status=CheckinStatus.ACTIVE, started_at=utc(3, 4, 15))
        )
    second = await treat(db, p, utc(3, 5, 14), now=utc(3, 5, 14))
    by_id = {c.id: c for c in await rows_of(db, p.id)}
    assert by_id[post.id].status is CheckinStatus.ACTIVE  # started: never superseded
    assert by_id[mood.id].status is CheckinStatus.CANCELLED
    assert by_id[mood.id].outcome == "superseded"
    assert [(c.flow_key, c.due_at) for c in await rows_of(db, p.id, treatment_id=second)] == [
        ("post_session", utc(3, 6, 14)),
        ("daily_mood", utc(3, 7, 14)),
    ]
    enrollment_rows = await rows_of(db, p.id, treatment_id=None)
    assert len(enrollment_rows) == 4
    assert all(c.status is CheckinStatus.SCHEDULED for c in enrollment_rows)


async def test_backdated_treatment_does_not_materialise_checkins_already_past(
    db: Database,
) -> None:
    # recorded three days late: texting now would be wrong, and a row that is only ever
    # "missed" would count towards the not-responding streak without the patient being asked
    p = await new_patient(db, NY)
    await enroll(db, p, "ketamine_induction", utc(3, 1, 12))
    t = await treat(db, p, utc(3, 3, 15), now=utc(3, 5, 20))
    assert [(c.flow_key, c.due_at) for c in await rows_of(db, p.id, treatment_id=t)] == [
        ("daily_mood", utc(3, 5, 15))  # due 3/5 15:00, expires 3/6 15:00: still answerable
    ]


# --- pausing, discharge, opt-out, reactivation (through the web API and SMS) ----------------


@pytest.fixture
async def h(db_url: str) -> AsyncIterator[Harness]:
    async with harness(db_url) as hh:
        yield hh


async def _setup_schedule(h: Harness) -> tuple[Patient, list[Checkin]]:
    """Harness clock: Mon Mar 2 2026 10:00 EST. Enrolled now, treated now."""
    p = await h.patient()
    now = h.clock.now()
    async with h.db.write() as s:
        patient = await s.get(Patient, p.id)
        assert patient is not None
        await scheduling.enroll(
            session=s, patient=patient, protocol_key="ketamine_induction", start_at=now, now=now
        )
        await scheduling.record_treatment(
            session=s, patient=patient, kind="ketamine", administered_at=now, now=now
        )
    return p, await h.checkins(p)


async def _patch(h: Harness, patient_id: int, body: dict[str, Any]) -> None:
    token = await h.token(Role.ADMIN)
    resp = await h.client.patch(
        f"/api/v1/patients/{patient_id}",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status == 200, await resp.text()


def _states(rows: list[Checkin]) -> dict[int, tuple[CheckinStatus, str | None]]:
    return {c.id: (c.status, c.outcome) for c in rows}


@pytest.mark.parametrize("stop", [PatientStatus.PAUSED, PatientStatus.DISCHARGED])
async def test_pause_or_discharge_cancels_pending_and_reactivation_restores_future(
    h: Harness, stop: PatientStatus
) -> None:
    p, before = await _setup_schedule(h)
    # phq9+gad7 Mar 2 15:00 and Mar 9 14:00; post_session Mar 3 15:00; daily_mood Mar 4 15:00
    assert len(before) == 6
    started = await dispatch.start_due(h.db, h.settings, h.clock.now())
    assert started.started == 1 and started.waiting == 1  # one conversation at a time
    active = next(c for c in await h.checkins(p) if c.status is CheckinStatus.ACTIVE)

    h.clock.advance(hours=1)
    await _patch(h, p.id, {"status": str(stop)})
    after = await h.checkins(p)
    assert {c.status for c in after} == {CheckinStatus.CANCELLED}
    assert {c.outcome for c in after} == {str(stop)}
    # nothing is started while stopped
    h.clock.advance(days=2)
    assert (await dispatch.start_due(h.db, h.settings, h.clock.now())).started == 0

    # back on Wed Mar 4 16:00 UTC: only what is still in the future comes back
    await _patch(h, p.id, {"status": "active"})
    restored = _states(await h.checkins(p))
    for c in before:
        if c.id == active.id or c.due_at <= h.clock.now():
            assert restored[c.id] == (CheckinStatus.CANCELLED, str(stop)), c.flow_key
        else:
            assert restored[c.id] == (CheckinStatus.SCHEDULED, None), c.flow_key
    back = sorted((c.flow_key, c.due_at) for c in before if restored[c.id][1] is None)
    assert back == [("gad7", utc(3, 9, 14)), ("phq9", utc(3, 9, 14))]
    # and the recurring items are topped up to two ahead again
    scheduled = [c for c in await h.checkins(p) if c.status is CheckinStatus.SCHEDULED]
    assert sorted((c.flow_key, c.occurrence) for c in scheduled) == [
        ("gad7", 2),
        ("gad7", 3),
        ("phq9", 2),
        ("phq9", 3),
    ]


async def test_stop_cancels_pending_and_start_brings_the_future_back(h: Harness) -> None:
    p, before = await _setup_schedule(h)
    await dispatch.start_due(h.db, h.settings, h.clock.now())
    await h.send_outbox()
    h.clock.advance(minutes=5)
    await h.sms(p.phone, "STOP")
    after = await h.checkins(p)
    assert {(c.status, c.outcome) for c in after} == {(CheckinStatus.CANCELLED, "opted_out")}
    assert (await dispatch.start_due(h.db, h.settings, h.clock.now() + 2 * H)).started == 0

    h.clock.advance(hours=1)
    await h.sms(p.phone, "START")
    restored = _states(await h.checkins(p))
    back = sorted(
        (c.flow_key, c.due_at) for c in before if restored[c.id][0] is CheckinStatus.SCHEDULED
    )
    assert back == sorted(
        (c.flow_key, c.due_at) for c in before if c.due_at > h.clock.now() and c.started_at is None
    )
    assert len(back) == 4  # post_session, daily_mood and the second phq9/gad7
    # and they are dispatched normally again
    h.clock.set(datetime(2026, 3, 3, 15, tzinfo=UTC))
    assert (await dispatch.start_due(h.db, h.settings, h.clock.now())).started == 1
