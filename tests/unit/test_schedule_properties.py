"""Properties of the scheduling math over arbitrary instants, zones and quiet windows."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from flows import protocol as protocol_module
from flows.protocol import Protocol, load_protocol
from flows.schedule import (
    QuietHours,
    defer_for_quiet_hours,
    local_to_utc,
    plan_for_enrollment,
    plan_for_treatment,
    recurrence_due,
)

ZONES = [
    ZoneInfo(name)
    for name in (
        "America/New_York",
        "Europe/Berlin",
        "Australia/Lord_Howe",
        "America/Sao_Paulo",
        "Asia/Kolkata",
        "UTC",
    )
]
PROTOCOLS = {
    p.stem: load_protocol(p.read_text("utf-8"))
    for p in (Path(protocol_module.__file__).parent / "library" / "protocols").glob("*.yaml")
}

zones = st.sampled_from(ZONES)
instants = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC)
)
minutes = st.builds(time, st.integers(0, 23), st.integers(0, 59))
quiet_hours = st.one_of(
    st.none(),
    st.just(QuietHours()),
    st.builds(QuietHours, minutes, minutes),
)
protocols = st.sampled_from(sorted(PROTOCOLS.items()))


def inside(instant: datetime, tz: ZoneInfo, quiet: QuietHours | None) -> bool:
    return quiet is not None and quiet.contains(instant.astimezone(tz).time())


@given(st.dates(date(2020, 1, 1), date(2035, 12, 31)), minutes, zones)
def test_local_to_utc_is_the_wall_time_or_the_first_minute_after_a_gap(
    day: date, wall: time, tz: ZoneInfo
) -> None:
    got = local_to_utc(day, wall, tz)
    local = got.astimezone(tz).replace(tzinfo=None)
    wanted = datetime.combine(day, wall)
    assert local >= wanted
    assert got.second == 0 and got.microsecond == 0
    if local != wanted:  # a gap: nothing valid in between
        gap_start = datetime.combine(day, wall).replace(tzinfo=tz)
        assert gap_start.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != wanted
        assert local - wanted < timedelta(hours=24)
        earlier = (got - timedelta(minutes=1)).astimezone(tz).replace(tzinfo=None)
        assert earlier < wanted
    else:  # the first occurrence: one hour earlier in UTC never shows the same wall time
        before = (got - timedelta(hours=1)).astimezone(tz).replace(tzinfo=None)
        assert before != wanted


@given(instants, zones, quiet_hours)
def test_deferred_time_is_never_inside_quiet_hours_nor_earlier(
    due: datetime, tz: ZoneInfo, quiet: QuietHours | None
) -> None:
    got = defer_for_quiet_hours(due, tz, quiet)
    assert got >= due
    assert not inside(got, tz, quiet)
    assert defer_for_quiet_hours(got, tz, quiet) == got
    if not inside(due, tz, quiet):
        assert got == due
    else:
        assert got - due <= timedelta(hours=25)


@given(protocols, instants, zones, quiet_hours)
def test_treatment_plan_is_deterministic_ordered_and_outside_quiet_hours(
    named: tuple[str, Protocol], treated: datetime, tz: ZoneInfo, quiet: QuietHours | None
) -> None:
    _, protocol = named
    plan = plan_for_treatment(protocol, treated, tz, quiet)
    assert plan == plan_for_treatment(protocol, treated.astimezone(tz), tz, quiet)
    assert [p.due_at for p in plan] == sorted(p.due_at for p in plan)
    for p in plan:
        assert p.due_at > treated
        assert not inside(p.due_at, tz, quiet)
        assert p.remind_at is None or (
            p.remind_at > p.due_at and not inside(p.remind_at, tz, quiet)
        )
        assert p.expires_at > (p.remind_at or p.due_at)


@settings(deadline=None)
@given(protocols, instants, st.integers(0, 3000), zones, quiet_hours, st.integers(0, 4))
def test_enrollment_plan_occurrences_strictly_increase_and_tops_up_consistently(
    named: tuple[str, Protocol],
    start: datetime,
    later_days: int,
    tz: ZoneInfo,
    quiet: QuietHours | None,
    limit: int,
) -> None:
    _, protocol = named
    after = start + timedelta(days=later_days)
    plan = plan_for_enrollment(protocol, start, tz, quiet, after=after, limit=limit)
    assert plan == plan_for_enrollment(protocol, start, tz, quiet, after=after, limit=limit)
    by_item: dict[int, list[tuple[int, datetime]]] = {}
    for p in plan:
        assert p.due_at > after
        assert not inside(p.due_at, tz, quiet)
        by_item.setdefault(p.item_index, []).append((p.occurrence, p.due_at))
    for index, series in by_item.items():
        item = protocol.checkins[index]
        assert item.recurring is not None
        assert len(series) <= limit
        numbers = [n for n, _ in series]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
        assert all(a[1] < b[1] for a, b in itertools.pairwise(series))
        if item.recurring.count is not None:
            assert numbers[-1] <= item.recurring.count
        for n, due in series:
            expected = defer_for_quiet_hours(
                recurrence_due(item.recurring, start, tz, n), tz, quiet
            )
            assert due == expected
        if numbers[0] > 1:  # nothing skipped: the previous occurrence is not after `after`
            previous = recurrence_due(item.recurring, start, tz, numbers[0] - 1)
            assert defer_for_quiet_hours(previous, tz, quiet) <= after
    # every open-ended recurring item yields exactly `limit` occurrences
    for index, item in enumerate(protocol.checkins):
        if item.recurring is not None and item.recurring.count is None:
            assert len(by_item.get(index, [])) == limit


@given(instants, zones)
def test_recurring_occurrences_keep_their_weekday_and_local_time(
    start: datetime, tz: ZoneInfo
) -> None:
    protocol = PROTOCOLS["maintenance_monthly"]
    for item in protocol.checkins:
        if item.recurring is None:
            continue
        first = recurrence_due(item.recurring, start, tz, 1)
        assert first >= start
        assert first - start < timedelta(days=8)
        for n in (1, 2, 13):
            local = recurrence_due(item.recurring, start, tz, n).astimezone(tz)
            assert local.strftime("%A").lower() == item.recurring.weekday
            assert local.time() == item.recurring.at  # 10:00 exists every day in these zones
