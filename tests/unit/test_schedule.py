"""Scheduling math with exact datetimes, in New York, Berlin and Lord Howe, across DST.

2025 transitions: New York springs forward Mar 9 02:00 EST -> 03:00 EDT and
falls back Nov 2 02:00 EDT -> 01:00 EST; Berlin Mar 30 02:00 CET -> 03:00
CEST and Oct 26 03:00 CEST -> 02:00 CET; Lord Howe (half-hour DST) Apr 6
02:00 -> 01:30 and Oct 5 02:00 -> 02:30.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from flows import protocol as protocol_module
from flows.protocol import Protocol, load_protocol
from flows.schedule import (
    PlannedCheckin,
    QuietHours,
    defer_for_quiet_hours,
    local_to_utc,
    plan_for_enrollment,
    plan_for_treatment,
    recurrence_due,
)

NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
QUIET = QuietHours()  # 21:00-08:00
PROTOCOLS = Path(protocol_module.__file__).parent / "library" / "protocols"
JUST_BEFORE = timedelta.resolution


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def shipped(key: str) -> Protocol:
    return load_protocol((PROTOCOLS / f"{key}.yaml").read_text("utf-8"))


def rows(plan: list[PlannedCheckin]) -> list[tuple[str, datetime, datetime | None, datetime, int]]:
    return [(p.flow, p.due_at, p.remind_at, p.expires_at, p.occurrence) for p in plan]


def dues(plan: list[PlannedCheckin]) -> list[tuple[str, datetime, int]]:
    return [(p.flow, p.due_at, p.occurrence) for p in plan]


def protocol(checkins: str, defaults: str = "") -> Protocol:
    return load_protocol(f"key: t\ntitle: T\n{defaults}checkins:\n{checkins}")


# --- local_to_utc --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "day", "wall", "expected"),
    [
        # ordinary days
        (NY, date(2025, 1, 15), time(10, 0), utc(2025, 1, 15, 15, 0)),
        (NY, date(2025, 7, 15), time(10, 0), utc(2025, 7, 15, 14, 0)),
        (BERLIN, date(2025, 1, 15), time(10, 0), utc(2025, 1, 15, 9, 0)),
        (BERLIN, date(2025, 7, 15), time(10, 0), utc(2025, 7, 15, 8, 0)),
        # spring-forward gap -> the next valid minute (the gap's end)
        (NY, date(2025, 3, 9), time(2, 0), utc(2025, 3, 9, 7, 0)),
        (NY, date(2025, 3, 9), time(2, 30), utc(2025, 3, 9, 7, 0)),
        (NY, date(2025, 3, 9), time(2, 59, 59), utc(2025, 3, 9, 7, 0)),
        (NY, date(2025, 3, 9), time(1, 59), utc(2025, 3, 9, 6, 59)),
        (NY, date(2025, 3, 9), time(3, 0), utc(2025, 3, 9, 7, 0)),
        (BERLIN, date(2025, 3, 30), time(2, 15), utc(2025, 3, 30, 1, 0)),
        (LORD_HOWE, date(2025, 10, 5), time(2, 10), utc(2025, 10, 4, 15, 30)),
        # fall-back overlap -> the first occurrence (daylight time)
        (NY, date(2025, 11, 2), time(1, 30), utc(2025, 11, 2, 5, 30)),
        (NY, date(2025, 11, 2), time(2, 0), utc(2025, 11, 2, 7, 0)),
        (BERLIN, date(2025, 10, 26), time(2, 30), utc(2025, 10, 26, 0, 30)),
        (BERLIN, date(2025, 10, 26), time(3, 0), utc(2025, 10, 26, 2, 0)),
        (LORD_HOWE, date(2025, 4, 6), time(1, 45), utc(2025, 4, 5, 14, 45)),
    ],
)
def test_local_to_utc(tz: ZoneInfo, day: date, wall: time, expected: datetime) -> None:
    got = local_to_utc(day, wall, tz)
    assert got == expected
    assert got.tzinfo is UTC


def test_local_to_utc_ignores_a_fold_on_the_time() -> None:
    assert local_to_utc(date(2025, 11, 2), time(1, 30, fold=1), NY) == utc(2025, 11, 2, 5, 30)


def test_local_to_utc_skipped_day() -> None:
    # Samoa skipped Dec 30 2011 entirely: the next valid minute is Dec 31 00:00 local
    got = local_to_utc(date(2011, 12, 30), time(10, 0), ZoneInfo("Pacific/Apia"))
    assert got == utc(2011, 12, 30, 10, 0)
    assert got.astimezone(ZoneInfo("Pacific/Apia")).replace(tzinfo=None) == datetime(2011, 12, 31)


def test_local_to_utc_rejects_an_aware_time() -> None:
    with pytest.raises(ValueError, match="naive"):
        local_to_utc(date(2025, 1, 1), time(10, 0, tzinfo=UTC), NY)


# --- quiet hours ---------------------------------------------------------------------------


def test_quiet_hours_contains() -> None:
    wrapping = QuietHours()
    assert [
        wrapping.contains(time(h, m)) for h, m in [(20, 59), (21, 0), (0, 0), (7, 59), (8, 0)]
    ] == [
        False,
        True,
        True,
        True,
        False,
    ]
    day = QuietHours(time(13, 0), time(14, 30))
    assert [day.contains(time(h, m)) for h, m in [(12, 59), (13, 0), (14, 29), (14, 30)]] == [
        False,
        True,
        True,
        False,
    ]
    off = QuietHours(time(22, 0), time(22, 0))
    assert not off.enabled
    assert not off.contains(time(22, 0))


def test_quiet_hours_reject_aware_times() -> None:
    with pytest.raises(ValueError, match="naive"):
        QuietHours(time(21, 0, tzinfo=UTC), time(8, 0))


@pytest.mark.parametrize(
    ("due", "tz", "quiet", "expected"),
    [
        # outside: unchanged (and normalised to UTC)
        (utc(2025, 1, 15, 17, 0), NY, QUIET, utc(2025, 1, 15, 17, 0)),
        (utc(2025, 1, 15, 13, 0), NY, QUIET, utc(2025, 1, 15, 13, 0)),  # 08:00 exactly
        # evening part of a window that wraps midnight: the next morning
        (utc(2025, 1, 16, 2, 0), NY, QUIET, utc(2025, 1, 16, 13, 0)),  # 21:00 EST
        (utc(2025, 1, 15, 20, 0), BERLIN, QUIET, utc(2025, 1, 16, 7, 0)),  # 21:00 CET
        # morning part: the same day
        (utc(2025, 1, 15, 12, 59), NY, QUIET, utc(2025, 1, 15, 13, 0)),  # 07:59 EST
        (utc(2025, 7, 15, 3, 0), BERLIN, QUIET, utc(2025, 7, 15, 6, 0)),  # 05:00 CEST
        # no quiet hours, or disabled ones
        (utc(2025, 1, 16, 2, 0), NY, None, utc(2025, 1, 16, 2, 0)),
        (utc(2025, 1, 16, 2, 0), NY, QuietHours(time(0, 0), time(0, 0)), utc(2025, 1, 16, 2, 0)),
        # a window that does not wrap (13:00-14:30 Berlin)
        (
            utc(2025, 1, 15, 12, 10),
            BERLIN,
            QuietHours(time(13), time(14, 30)),
            utc(2025, 1, 15, 13, 30),
        ),
        (
            utc(2025, 1, 15, 11, 59),
            BERLIN,
            QuietHours(time(13), time(14, 30)),
            utc(2025, 1, 15, 11, 59),
        ),
        # across spring forward: Sat 23:00 EST -> Sun 08:00 EDT
        (utc(2025, 3, 9, 4, 0), NY, QUIET, utc(2025, 3, 9, 12, 0)),
        (utc(2025, 3, 29, 22, 0), BERLIN, QUIET, utc(2025, 3, 30, 6, 0)),
        # across fall back: Sat 23:00 EDT -> Sun 08:00 EST; 01:30 EST (second pass) -> 08:00 EST
        (utc(2025, 11, 2, 3, 0), NY, QUIET, utc(2025, 11, 2, 13, 0)),
        (utc(2025, 11, 2, 6, 30), NY, QUIET, utc(2025, 11, 2, 13, 0)),
        (utc(2025, 10, 25, 21, 0), BERLIN, QUIET, utc(2025, 10, 26, 7, 0)),
        # Lord Howe, half-hour DST: Sat 22:00 (+10:30) -> Sun 08:00 (+11)
        (utc(2025, 10, 4, 11, 30), LORD_HOWE, QUIET, utc(2025, 10, 4, 21, 0)),
        # the window ends inside the spring gap: the gap's end
        (utc(2025, 3, 9, 6, 30), NY, QuietHours(time(1, 0), time(2, 30)), utc(2025, 3, 9, 7, 0)),
        # the window ends at a doubled time and due is its second pass: the second end
        (utc(2025, 11, 2, 6, 30), NY, QuietHours(time(1, 0), time(1, 45)), utc(2025, 11, 2, 6, 45)),
        # first pass of 01:30 EDT -> first 01:45 EDT
        (utc(2025, 11, 2, 5, 30), NY, QuietHours(time(1, 0), time(1, 45)), utc(2025, 11, 2, 5, 45)),
    ],
)
def test_defer_for_quiet_hours(
    due: datetime, tz: ZoneInfo, quiet: QuietHours | None, expected: datetime
) -> None:
    got = defer_for_quiet_hours(due, tz, quiet)
    assert got == expected
    assert got.tzinfo is UTC


def test_defer_accepts_any_aware_datetime_and_rejects_naive() -> None:
    local = datetime(2025, 1, 15, 22, 0, tzinfo=NY)
    assert defer_for_quiet_hours(local, NY, QUIET) == utc(2025, 1, 16, 13, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        defer_for_quiet_hours(datetime(2025, 1, 15, 22, 0), NY, QUIET)


# --- reminders and expiry ------------------------------------------------------------------


def test_reminder_deferred_and_expiry_kept_after_it() -> None:
    p = protocol("  - {flow: a, after: treatment, offset: 1d, reminder: 4h, expiry: 6h}\n")
    # due 18:00 EST; reminder 22:00 -> 08:00 next day; expiry 00:00 would precede it,
    # so it keeps the 2h reply window after the reminder: 10:00
    [planned] = plan_for_treatment(p, utc(2025, 1, 14, 23, 0), NY, QUIET)
    assert rows([planned]) == [
        ("a", utc(2025, 1, 15, 23, 0), utc(2025, 1, 16, 13, 0), utc(2025, 1, 16, 15, 0), 1)
    ]
    [plain] = plan_for_treatment(p, utc(2025, 1, 14, 23, 0), NY, None)
    assert rows([plain]) == [
        ("a", utc(2025, 1, 15, 23, 0), utc(2025, 1, 16, 3, 0), utc(2025, 1, 16, 5, 0), 1)
    ]


def test_no_reminder() -> None:
    p = protocol("  - {flow: a, after: treatment, offset: 2h, reminder: null, expiry: 3h}\n")
    [planned] = plan_for_treatment(p, utc(2025, 1, 15, 15, 0), NY, QUIET)
    assert rows([planned]) == [("a", utc(2025, 1, 15, 17, 0), None, utc(2025, 1, 15, 20, 0), 1)]


def test_due_in_quiet_hours_moves_reminder_and_expiry_with_it() -> None:
    p = protocol("  - {flow: a, after: treatment, offset: 3h}\n")
    # treatment 19:00 CET, due 22:00 -> 08:00; reminder 12:00; expiry 08:00 next day
    [planned] = plan_for_treatment(p, utc(2025, 1, 15, 18, 0), BERLIN, QUIET)
    assert rows([planned]) == [
        ("a", utc(2025, 1, 16, 7, 0), utc(2025, 1, 16, 11, 0), utc(2025, 1, 17, 7, 0), 1)
    ]


# --- one-off items -------------------------------------------------------------------------


def test_offset_without_at_is_elapsed_time_across_dst() -> None:
    p = protocol("  - {flow: a, after: treatment, offset: 24h}\n")
    # 14:00 EST on Saturday + 24h = 15:00 EDT on Sunday
    [planned] = plan_for_treatment(p, utc(2025, 3, 8, 19, 0), NY, None)
    assert planned.due_at == utc(2025, 3, 9, 19, 0)


def test_offset_with_at_is_calendar_days() -> None:
    p = protocol("  - {flow: a, after: treatment, offset: 1d, at: '10:00'}\n")
    # Saturday 23:30 EST is 04:30Z on Sunday; the next local day is Sunday, 10:00 EDT
    [planned] = plan_for_treatment(p, utc(2025, 3, 9, 4, 30), NY, QUIET)
    assert planned.due_at == utc(2025, 3, 9, 14, 0)


def test_at_inside_a_gap_moves_to_the_gap_end() -> None:
    p = protocol("  - {flow: a, after: treatment, offset: 1d, at: '02:30'}\n")
    [planned] = plan_for_treatment(p, utc(2025, 3, 8, 15, 0), NY, None)
    assert planned.due_at == utc(2025, 3, 9, 7, 0)  # 03:00 EDT
    [fall] = plan_for_treatment(p, utc(2025, 10, 25, 12, 0), BERLIN, None)
    assert fall.due_at == utc(2025, 10, 26, 0, 30)  # the first 02:30 (CEST)


def test_at_without_offset_is_the_first_such_time_from_the_anchor() -> None:
    p = protocol("  - {flow: a, after: enrollment, at: '18:00'}\n")
    before = plan_for_enrollment(
        p, utc(2025, 1, 15, 15, 0), NY, QUIET, after=utc(2025, 1, 1), limit=1
    )
    after = plan_for_enrollment(
        p, utc(2025, 1, 15, 23, 30), NY, QUIET, after=utc(2025, 1, 1), limit=1
    )
    assert [x.due_at for x in before] == [utc(2025, 1, 15, 23, 0)]  # same day 18:00 EST
    assert [x.due_at for x in after] == [utc(2025, 1, 16, 23, 0)]  # the next day


def test_enrollment_one_off_at_the_start_needs_after_just_before_start() -> None:
    p = protocol("  - {flow: a, after: enrollment}\n")
    start = utc(2025, 1, 15, 15, 0)
    assert plan_for_enrollment(p, start, NY, QUIET, after=start, limit=1) == []
    [planned] = plan_for_enrollment(p, start, NY, QUIET, after=start - JUST_BEFORE, limit=1)
    assert (planned.due_at, planned.anchor, planned.occurrence) == (start, "enrollment", 1)


def test_treatment_plan_ignores_enrollment_items_and_vice_versa() -> None:
    p = protocol(
        "  - {flow: t, after: treatment, offset: 1h}\n"
        "  - {flow: e, after: enrollment, offset: 1h}\n"
        "  - {flow: r, recurring: {every: 1w, weekday: monday, at: '10:00', count: 1}}\n"
    )
    anchor = utc(2025, 1, 15, 15, 0)
    assert [(x.flow, x.anchor, x.item_index) for x in plan_for_treatment(p, anchor, NY, None)] == [
        ("t", "treatment", 0)
    ]
    plan = plan_for_enrollment(p, anchor, NY, None, after=anchor, limit=5)
    assert [(x.flow, x.anchor, x.item_index) for x in plan] == [
        ("e", "enrollment", 1),
        ("r", "enrollment", 2),
    ]


def test_naive_inputs_are_rejected() -> None:
    p = shipped("ketamine_induction")
    with pytest.raises(ValueError, match="treatment_at must be timezone-aware"):
        plan_for_treatment(p, datetime(2025, 1, 1), NY, QUIET)
    with pytest.raises(ValueError, match="after must be timezone-aware"):
        plan_for_enrollment(p, utc(2025, 1, 1), NY, QUIET, after=datetime(2025, 1, 1), limit=1)
    with pytest.raises(ValueError, match="limit"):
        plan_for_enrollment(p, utc(2025, 1, 1), NY, QUIET, after=utc(2025, 1, 1), limit=-1)


# --- recurring items -----------------------------------------------------------------------


def test_recurring_first_occurrence_rules() -> None:
    p = protocol("  - {flow: r, recurring: {every: 1w, weekday: monday, at: '10:00'}}\n")
    rec = p.checkins[0].recurring
    assert rec is not None
    # Monday 09:00 CET: the same day's 10:00
    assert recurrence_due(rec, utc(2025, 1, 13, 8, 0), BERLIN, 1) == utc(2025, 1, 13, 9, 0)
    # Monday exactly 10:00: counts ("not before start_at")
    assert recurrence_due(rec, utc(2025, 1, 13, 9, 0), BERLIN, 1) == utc(2025, 1, 13, 9, 0)
    # Monday 10:01: the next Monday
    assert recurrence_due(rec, utc(2025, 1, 13, 9, 1), BERLIN, 1) == utc(2025, 1, 20, 9, 0)
    # Tuesday: the next Monday; occurrence 3 two weeks later
    assert recurrence_due(rec, utc(2025, 1, 14, 9, 0), BERLIN, 1) == utc(2025, 1, 20, 9, 0)
    assert recurrence_due(rec, utc(2025, 1, 14, 9, 0), BERLIN, 3) == utc(2025, 2, 3, 9, 0)
    # the local date decides: Sunday 23:30 UTC is already Monday 00:30 in Berlin
    assert recurrence_due(rec, utc(2025, 1, 12, 23, 30), BERLIN, 1) == utc(2025, 1, 13, 9, 0)
    with pytest.raises(ValueError, match="counts from 1"):
        recurrence_due(rec, utc(2025, 1, 14), BERLIN, 0)


def test_recurring_in_quiet_hours_is_deferred_per_occurrence() -> None:
    p = protocol("  - {flow: r, recurring: {every: 1w, weekday: friday, at: '22:00', count: 2}}\n")
    plan = plan_for_enrollment(p, utc(2025, 1, 13), NY, QUIET, after=utc(2025, 1, 1), limit=5)
    # Friday 22:00 EST -> Saturday 08:00 EST
    assert dues(plan) == [("r", utc(2025, 1, 18, 13, 0), 1), ("r", utc(2025, 1, 25, 13, 0), 2)]
    plain = plan_for_enrollment(p, utc(2025, 1, 13), NY, None, after=utc(2025, 1, 1), limit=5)
    assert dues(plain) == [("r", utc(2025, 1, 18, 3, 0), 1), ("r", utc(2025, 1, 25, 3, 0), 2)]


def test_recurring_limit_and_top_up() -> None:
    p = protocol("  - {flow: r, recurring: {every: 2w, weekday: wednesday, at: '09:30'}}\n")
    start = utc(2025, 1, 1, 12, 0)  # Wednesday 07:00 EST -> first at 09:30 that day
    first = plan_for_enrollment(p, start, NY, QUIET, after=start, limit=2)
    assert dues(first) == [("r", utc(2025, 1, 1, 14, 30), 1), ("r", utc(2025, 1, 15, 14, 30), 2)]
    # the scheduler tops up after the first one went out: the same numbering continues
    more = plan_for_enrollment(p, start, NY, QUIET, after=first[0].due_at, limit=2)
    assert dues(more) == [("r", utc(2025, 1, 15, 14, 30), 2), ("r", utc(2025, 1, 29, 14, 30), 3)]
    assert plan_for_enrollment(p, start, NY, QUIET, after=start, limit=0) == []


def test_recurring_far_in_the_future_keeps_numbering_and_local_time() -> None:
    p = protocol("  - {flow: r, recurring: {every: 4w, weekday: monday, at: '10:00'}}\n")
    start = utc(2025, 1, 6, 12, 0)  # Monday 07:00 EST: first is that day
    plan = plan_for_enrollment(p, start, NY, QUIET, after=utc(2030, 6, 1), limit=2)
    # 2030-06-17 is 1988 days = 71 periods of 4 weeks after 2025-01-06
    assert dues(plan) == [("r", utc(2030, 6, 17, 14, 0), 72), ("r", utc(2030, 7, 15, 14, 0), 73)]


def test_count_stops_the_series() -> None:
    p = protocol("  - {flow: r, recurring: {every: 1w, weekday: monday, at: '10:00', count: 2}}\n")
    start = utc(2025, 1, 6, 12, 0)
    assert [
        x.occurrence for x in plan_for_enrollment(p, start, NY, None, after=start, limit=9)
    ] == [
        1,
        2,
    ]
    assert plan_for_enrollment(p, start, NY, None, after=utc(2025, 1, 13, 15, 0), limit=9) == []


# --- the shipped protocols -----------------------------------------------------------------


def test_ketamine_induction_after_an_infusion_new_york_spring_forward() -> None:
    # Saturday Mar 8 14:00 EST; +24h and +48h are elapsed time, so 15:00 EDT after the jump
    plan = plan_for_treatment(shipped("ketamine_induction"), utc(2025, 3, 8, 19, 0), NY, QUIET)
    assert rows(plan) == [
        (
            "post_session",
            utc(2025, 3, 9, 19, 0),
            utc(2025, 3, 9, 23, 0),
            utc(2025, 3, 10, 19, 0),
            1,
        ),
        (
            "daily_mood",
            utc(2025, 3, 10, 19, 0),
            utc(2025, 3, 10, 23, 0),
            utc(2025, 3, 11, 19, 0),
            1,
        ),
    ]
    assert {(p.anchor, p.item_index) for p in plan} == {("treatment", 0), ("treatment", 1)}


def test_ketamine_induction_late_infusion_quiet_hours_on_and_off() -> None:
    # Saturday Mar 8 19:30 EST: post_session 20:30 EDT Sunday, reminder 00:30 -> 08:00 EDT
    p = shipped("ketamine_induction")
    treated = utc(2025, 3, 9, 0, 30)
    assert rows(plan_for_treatment(p, treated, NY, QUIET)) == [
        (
            "post_session",
            utc(2025, 3, 10, 0, 30),
            utc(2025, 3, 10, 12, 0),
            utc(2025, 3, 11, 0, 30),
            1,
        ),
        (
            "daily_mood",
            utc(2025, 3, 11, 0, 30),
            utc(2025, 3, 11, 12, 0),
            utc(2025, 3, 12, 0, 30),
            1,
        ),
    ]
    assert rows(plan_for_treatment(p, treated, NY, None)) == [
        (
            "post_session",
            utc(2025, 3, 10, 0, 30),
            utc(2025, 3, 10, 4, 30),
            utc(2025, 3, 11, 0, 30),
            1,
        ),
        (
            "daily_mood",
            utc(2025, 3, 11, 0, 30),
            utc(2025, 3, 11, 4, 30),
            utc(2025, 3, 12, 0, 30),
            1,
        ),
    ]


def test_ketamine_induction_berlin_fall_back() -> None:
    # Saturday Oct 25 08:30 CEST; +24h = Sunday 07:30 CET, inside quiet hours -> 08:00 CET
    p = shipped("ketamine_induction")
    assert dues(plan_for_treatment(p, utc(2025, 10, 25, 6, 30), BERLIN, QUIET)) == [
        ("post_session", utc(2025, 10, 26, 7, 0), 1),
        ("daily_mood", utc(2025, 10, 27, 7, 0), 1),
    ]
    assert dues(plan_for_treatment(p, utc(2025, 10, 25, 6, 30), BERLIN, None)) == [
        ("post_session", utc(2025, 10, 26, 6, 30), 1),
        ("daily_mood", utc(2025, 10, 27, 6, 30), 1),
    ]


def test_ketamine_induction_enrollment_new_york_spring() -> None:
    # enrolled Wednesday Mar 5 15:00 EST: six Mondays at 10:00, the first already EDT
    start = utc(2025, 3, 5, 20, 0)
    plan = plan_for_enrollment(
        shipped("ketamine_induction"), start, NY, QUIET, after=start - JUST_BEFORE, limit=10
    )
    mondays = [utc(2025, 3, d, 14, 0) for d in (10, 17, 24, 31)] + [
        utc(2025, 4, d, 14, 0) for d in (7, 14)
    ]
    assert dues(plan) == [
        (flow, due, n) for n, due in enumerate(mondays, 1) for flow in ("phq9", "gad7")
    ]
    assert plan[0].remind_at == utc(2025, 3, 10, 18, 0)
    assert plan[0].expires_at == utc(2025, 3, 11, 14, 0)
    assert {p.anchor for p in plan} == {"enrollment"}


def test_ketamine_induction_enrollment_new_york_fall_and_berlin() -> None:
    p = shipped("ketamine_induction")
    # Wednesday Oct 22: Mondays Oct 27 (EDT) then Nov 3 onwards (EST): 10:00 local throughout
    ny = plan_for_enrollment(
        p, utc(2025, 10, 22, 16, 0), NY, QUIET, after=utc(2025, 10, 1), limit=3
    )
    assert [(x.flow, x.due_at) for x in ny if x.flow == "phq9"] == [
        ("phq9", utc(2025, 10, 27, 14, 0)),
        ("phq9", utc(2025, 11, 3, 15, 0)),
        ("phq9", utc(2025, 11, 10, 15, 0)),
    ]
    # Berlin, enrolled Monday Mar 24 09:00 CET: that day 10:00 CET, then CEST
    be = plan_for_enrollment(
        p, utc(2025, 3, 24, 8, 0), BERLIN, QUIET, after=utc(2025, 3, 1), limit=3
    )
    assert [(x.flow, x.due_at, x.occurrence) for x in be if x.flow == "gad7"] == [
        ("gad7", utc(2025, 3, 24, 9, 0), 1),
        ("gad7", utc(2025, 3, 31, 8, 0), 2),
        ("gad7", utc(2025, 4, 7, 8, 0), 3),
    ]


def test_esketamine_maintenance_after_a_session() -> None:
    p = shipped("esketamine_maintenance")
    # Saturday Mar 8 11:00 EST -> Sunday 10:00 EDT (after the jump)
    assert rows(plan_for_treatment(p, utc(2025, 3, 8, 16, 0), NY, QUIET)) == [
        ("post_session", utc(2025, 3, 9, 14, 0), utc(2025, 3, 9, 18, 0), utc(2025, 3, 10, 14, 0), 1)
    ]
    # Saturday Oct 25 23:30 CEST -> Sunday 10:00 CET (after the fall back)
    assert dues(plan_for_treatment(p, utc(2025, 10, 25, 21, 30), BERLIN, QUIET)) == [
        ("post_session", utc(2025, 10, 26, 9, 0), 1)
    ]
    # Sunday Oct 26 00:30 CEST is already Sunday locally -> Monday 10:00 CET
    assert dues(plan_for_treatment(p, utc(2025, 10, 25, 22, 30), BERLIN, None)) == [
        ("post_session", utc(2025, 10, 27, 9, 0), 1)
    ]


def questionnaires(plan: list[PlannedCheckin]) -> list[PlannedCheckin]:
    """The Monday PHQ-9/GAD-7 series (the monthly Thursday screens are tested apart)."""
    return [x for x in plan if x.flow in ("phq9", "gad7")]


def test_esketamine_maintenance_enrollment_berlin_fall_back() -> None:
    p = shipped("esketamine_maintenance")
    start = utc(2025, 10, 20, 10, 0)  # Monday 12:00 CEST: 10:00 has passed, so next Monday
    plan = questionnaires(plan_for_enrollment(p, start, BERLIN, QUIET, after=start, limit=3))
    assert dues(plan) == [
        ("phq9", utc(2025, 10, 27, 9, 0), 1),
        ("gad7", utc(2025, 10, 27, 9, 0), 1),
        ("phq9", utc(2025, 11, 10, 9, 0), 2),
        ("phq9", utc(2025, 11, 24, 9, 0), 3),
        ("gad7", utc(2025, 11, 24, 9, 0), 2),
        ("gad7", utc(2025, 12, 22, 9, 0), 3),
    ]
    assert plan[0].expires_at == utc(2025, 10, 29, 9, 0)  # 48h for questionnaires
    assert plan[0].remind_at == utc(2025, 10, 27, 13, 0)
    top_up = questionnaires(
        plan_for_enrollment(p, start, BERLIN, QUIET, after=utc(2025, 11, 10, 9, 0), limit=2)
    )
    assert dues(top_up) == [
        ("phq9", utc(2025, 11, 24, 9, 0), 3),
        ("gad7", utc(2025, 11, 24, 9, 0), 2),
        ("phq9", utc(2025, 12, 8, 9, 0), 4),
        ("gad7", utc(2025, 12, 22, 9, 0), 3),
    ]


def test_esketamine_maintenance_enrollment_new_york_spring() -> None:
    p = shipped("esketamine_maintenance")
    start = utc(2025, 3, 1, 15, 0)  # Saturday
    plan = questionnaires(plan_for_enrollment(p, start, NY, None, after=start, limit=2))
    assert dues(plan) == [
        ("phq9", utc(2025, 3, 3, 15, 0), 1),  # 10:00 EST
        ("gad7", utc(2025, 3, 3, 15, 0), 1),
        ("phq9", utc(2025, 3, 17, 14, 0), 2),  # 10:00 EDT
        ("gad7", utc(2025, 3, 31, 14, 0), 2),
    ]


def test_esketamine_maintenance_adds_the_monthly_thursday_screens() -> None:
    p = shipped("esketamine_maintenance")
    start = utc(2025, 3, 1, 15, 0)  # Saturday
    plan = plan_for_enrollment(p, start, NY, None, after=start, limit=1)
    thursday = [(x.flow, x.due_at) for x in plan if x.flow not in ("phq9", "gad7")]
    assert thursday == [
        ("substance_use", utc(2025, 3, 6, 15, 0)),
        ("dissociation", utc(2025, 3, 6, 15, 0)),
        ("alcohol_sedatives", utc(2025, 3, 6, 15, 0)),
    ]


def test_maintenance_monthly_after_a_treatment() -> None:
    p = shipped("maintenance_monthly")
    # Saturday Oct 25 09:00 CEST + 24h = Sunday 08:00 CET: not quiet (the window ends at 08:00)
    assert rows(plan_for_treatment(p, utc(2025, 10, 25, 7, 0), BERLIN, QUIET)) == [
        (
            "post_session",
            utc(2025, 10, 26, 7, 0),
            utc(2025, 10, 26, 11, 0),
            utc(2025, 10, 27, 7, 0),
            1,
        )
    ]
    # Saturday Nov 1 21:00 EDT + 24h = Sunday 20:00 EST; reminder 00:00 -> 08:00 EST
    assert rows(plan_for_treatment(p, utc(2025, 11, 2, 1, 0), NY, QUIET)) == [
        ("post_session", utc(2025, 11, 3, 1, 0), utc(2025, 11, 3, 13, 0), utc(2025, 11, 4, 1, 0), 1)
    ]


def test_maintenance_monthly_enrollment_new_york_fall() -> None:
    p = shipped("maintenance_monthly")
    start = utc(2025, 10, 15, 13, 0)  # Wednesday 09:00 EDT
    plan = plan_for_enrollment(p, start, NY, QUIET, after=start, limit=2)
    assert dues(plan) == [
        ("dissociation", utc(2025, 10, 16, 14, 0), 1),  # Thursday 10:00 EDT
        ("substance_use", utc(2025, 10, 16, 14, 0), 1),
        ("phq9", utc(2025, 10, 20, 14, 0), 1),  # Monday 10:00 EDT
        ("gad7", utc(2025, 10, 20, 14, 0), 1),
        ("dissociation", utc(2025, 11, 13, 15, 0), 2),  # 10:00 EST
        ("substance_use", utc(2025, 11, 13, 15, 0), 2),
        ("phq9", utc(2025, 11, 17, 15, 0), 2),
        ("gad7", utc(2025, 11, 17, 15, 0), 2),
    ]
    assert plan[0].expires_at == utc(2025, 10, 18, 14, 0)  # 48h default


def test_maintenance_monthly_enrollment_berlin_spring() -> None:
    p = shipped("maintenance_monthly")
    start = utc(2025, 3, 10, 8, 0)  # Monday 09:00 CET
    plan = plan_for_enrollment(p, start, BERLIN, QUIET, after=start, limit=2)
    assert dues(plan) == [
        ("phq9", utc(2025, 3, 10, 9, 0), 1),
        ("gad7", utc(2025, 3, 10, 9, 0), 1),
        ("dissociation", utc(2025, 3, 13, 9, 0), 1),
        ("substance_use", utc(2025, 3, 13, 9, 0), 1),
        ("phq9", utc(2025, 4, 7, 8, 0), 2),  # 10:00 CEST
        ("gad7", utc(2025, 4, 7, 8, 0), 2),
        ("dissociation", utc(2025, 4, 10, 8, 0), 2),
        ("substance_use", utc(2025, 4, 10, 8, 0), 2),
    ]


def test_lord_howe_recurring_across_its_half_hour_change() -> None:
    p = shipped("maintenance_monthly")
    start = utc(2025, 9, 14, 23, 0)  # Monday Sep 15 09:30 (+10:30)
    plan = plan_for_enrollment(p, start, LORD_HOWE, QUIET, after=start, limit=2)
    assert [(x.due_at, x.occurrence) for x in plan if x.flow == "phq9"] == [
        (utc(2025, 9, 14, 23, 30), 1),  # 10:00 +10:30
        (utc(2025, 10, 12, 23, 0), 2),  # 10:00 +11
    ]
