"""Scheduling math: from a protocol and an anchor time to check-in due times.

Pure on purpose (no clock, no I/O): the scheduler in ``bot/`` passes "now"
and the patient's zone in, stores what comes out, and can therefore be
tested with exact datetimes. Every datetime in and out is timezone-aware;
results are UTC. Local wall-clock rules (``at: "10:00"``, quiet hours) are
applied in the patient's IANA zone, with the DST rules from issue 5: a local
time that does not exist moves to the next valid minute, one that exists
twice means its first occurrence.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from flows.protocol import WEEKDAYS, CheckinItem, Protocol, Recurring, Windows

_DAY = timedelta(days=1)
_MINUTE = timedelta(minutes=1)
_SECOND = timedelta(seconds=1)


def _aware_utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(UTC)


def local_to_utc(d: date, t: time, tz: ZoneInfo) -> datetime:
    """The UTC instant of local wall time ``t`` on ``d`` in ``tz``.

    In a spring-forward gap the result is the next valid minute (02:30 on the
    US spring-forward day in New York gives 03:00 EDT) so nothing is skipped
    a whole day; in a fall-back overlap it is the first occurrence (fold=0),
    so a check-in is never an hour later than the patient's clock suggests.
    """
    if t.tzinfo is not None:
        raise ValueError("t must be a naive local time; the zone is given by tz")
    wall = datetime.combine(d, t.replace(fold=0))
    instant = wall.replace(tzinfo=tz).astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) == wall:
        return instant
    return _gap_end(wall, tz)


def _gap_end(wall: datetime, tz: ZoneInfo) -> datetime:
    """The transition instant that ends the gap ``wall`` falls in, rounded up to a whole minute.

    zoneinfo maps a nonexistent wall time with the offset after the jump
    (fold=1, an instant before the transition) and with the one before it
    (fold=0, an instant after); the transition lies between, found by
    bisection on whole seconds because zoneinfo does not expose transitions.
    """
    lo = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    hi = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    before = lo.astimezone(tz).utcoffset()
    while hi - lo > _SECOND:
        mid = lo + ((hi - lo) // 2 // _SECOND) * _SECOND
        if mid.astimezone(tz).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    local = hi.astimezone(tz)
    extra = timedelta(seconds=local.second, microseconds=local.microsecond)
    return hi + (_MINUTE - extra if extra else timedelta(0))


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily local window in which check-ins and reminders are not sent.

    ``start`` to ``end`` is half-open and may wrap midnight (the default
    21:00-08:00 does); ``start == end`` means no quiet hours at all.
    """

    start: time = time(21, 0)
    end: time = time(8, 0)

    def __post_init__(self) -> None:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("quiet hours are naive local times; the patient's zone applies")

    @property
    def enabled(self) -> bool:
        return self.start != self.end

    @property
    def wraps_midnight(self) -> bool:
        return self.start > self.end

    def contains(self, t: time) -> bool:
        """Whether local wall time ``t`` is inside the window."""
        if not self.enabled:
            return False
        if self.wraps_midnight:
            return t >= self.start or t < self.end
        return self.start <= t < self.end


def defer_for_quiet_hours(due: datetime, tz: ZoneInfo, quiet: QuietHours | None) -> datetime:
    """``due`` moved to the end of the quiet window it falls in (UTC), else ``due`` in UTC.

    The window's end is a local wall time, so it goes through
    :func:`local_to_utc`; in a fall-back overlap the second occurrence is used
    when the first is already past. A window end that falls in a DST gap can
    land in the next window (only with windows of nearly 24 hours), hence the
    short loop.
    """
    result = _aware_utc(due, "due")
    if quiet is None or not quiet.enabled:
        return result
    for _ in range(4):
        local = result.astimezone(tz)
        if not quiet.contains(local.time()):
            return result
        day = local.date()
        if quiet.wraps_midnight and local.time() >= quiet.start:
            day += _DAY
        end = local_to_utc(day, quiet.end, tz)
        if end <= result:
            end = datetime.combine(day, quiet.end, tzinfo=tz).replace(fold=1).astimezone(UTC)
        if end <= result:
            return result
        result = end
    return result


@dataclass(frozen=True, slots=True)
class PlannedCheckin:
    """One check-in to materialise. ``(item_index, occurrence)`` identifies it within its anchor.

    The scheduler dedupes on it (with the treatment or enrollment it was
    planned from), so planning again never creates a second row.
    ``occurrence`` is 1 for one-offs and counts from 1 for recurring items.
    """

    flow: str
    due_at: datetime
    remind_at: datetime | None
    expires_at: datetime
    item_index: int
    occurrence: int
    anchor: Literal["treatment", "enrollment"]


def plan_for_treatment(
    protocol: Protocol, treatment_at: datetime, tz: ZoneInfo, quiet: QuietHours | None
) -> list[PlannedCheckin]:
    """The treatment-relative check-ins for one treatment, ordered by due time.

    Superseding the previous treatment's check-ins is the caller's job
    (``protocol.supersede_on_new_treatment``): it needs stored state.
    """
    anchor = _aware_utc(treatment_at, "treatment_at")
    out = [
        _planned(protocol, index, item, 1, _one_off_due(item, anchor, tz), tz, quiet)
        for index, item in enumerate(protocol.checkins)
        if item.after == "treatment"
    ]
    return sorted(out, key=_order)


def plan_for_enrollment(
    protocol: Protocol,
    start_at: datetime,
    tz: ZoneInfo,
    quiet: QuietHours | None,
    *,
    after: datetime,
    limit: int,
) -> list[PlannedCheckin]:
    """Enrollment-relative check-ins due strictly after ``after``, ordered by due time.

    One-offs are included when due after ``after``; each recurring item
    contributes its next ``limit`` occurrences after ``after`` (fewer when its
    ``count`` runs out). Calling again later with a later ``after`` tops the
    schedule up without ever materialising an unbounded list. To include a
    check-in due exactly at ``start_at``, pass ``after=start_at -
    timedelta.resolution``.
    """
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    start = _aware_utc(start_at, "start_at")
    floor = _aware_utc(after, "after")
    out: list[PlannedCheckin] = []
    for index, item in enumerate(protocol.checkins):
        if item.after == "enrollment":
            planned = _planned(protocol, index, item, 1, _one_off_due(item, start, tz), tz, quiet)
            if planned.due_at > floor:
                out.append(planned)
        elif item.recurring is not None:
            taken = 0
            for occurrence, raw in _recurrences(item.recurring, start, floor, tz):
                if taken >= limit:
                    break
                planned = _planned(protocol, index, item, occurrence, raw, tz, quiet)
                if planned.due_at > floor:
                    out.append(planned)
                    taken += 1
    return sorted(out, key=_order)


def recurrence_due(
    recurring: Recurring, start_at: datetime, tz: ZoneInfo, occurrence: int
) -> datetime:
    """The due time (before quiet hours) of occurrence ``occurrence`` (1-based), in UTC.

    The first occurrence is the first ``weekday`` at ``at`` on or after
    ``start_at``'s local date and not before ``start_at``; the next ones
    follow every N weeks on the calendar, so they stay at the same local time
    across DST changes.
    """
    if occurrence < 1:
        raise ValueError(f"occurrence counts from 1, got {occurrence}")
    start = _aware_utc(start_at, "start_at")
    first = _first_day(recurring, start, tz)
    return local_to_utc(first + (occurrence - 1) * recurring.every, recurring.at, tz)


def _first_day(recurring: Recurring, start: datetime, tz: ZoneInfo) -> date:
    local = start.astimezone(tz).date()
    day = local + timedelta(days=(WEEKDAYS[recurring.weekday] - local.weekday()) % 7)
    if local_to_utc(day, recurring.at, tz) < start:
        day += timedelta(weeks=1)
    return day


def _recurrences(
    recurring: Recurring, start: datetime, after: datetime, tz: ZoneInfo
) -> Iterator[tuple[int, datetime]]:
    """Occurrences (number, due before quiet hours), starting a little before ``after``.

    It jumps to two intervals before ``after``'s local date instead of
    walking from the first occurrence: quiet hours defer by less than two
    days and intervals are whole weeks, so nothing due after ``after`` is
    skipped, and a schedule years old costs no more than a new one.
    """
    first = _first_day(recurring, start, tz)
    step_days = recurring.every.days
    lag = (after.astimezone(tz).date() - first).days
    occurrence = max(1, lag // step_days - 1)
    while recurring.count is None or occurrence <= recurring.count:
        day = first + timedelta(days=(occurrence - 1) * step_days)
        yield occurrence, local_to_utc(day, recurring.at, tz)
        occurrence += 1


def _one_off_due(item: CheckinItem, anchor: datetime, tz: ZoneInfo) -> datetime:
    """Without ``at``: anchor plus offset in elapsed time. With ``at``: the local time on the
    calendar day ``offset`` (whole days) after the anchor's local date, never before the anchor.
    """
    offset = item.offset or timedelta(0)
    if item.at is None:
        return anchor + offset
    day = anchor.astimezone(tz).date() + timedelta(days=offset.days)
    due = local_to_utc(day, item.at, tz)
    if due < anchor:  # only possible without an offset: the first such time from the anchor on
        due = local_to_utc(day + _DAY, item.at, tz)
    return due


def _planned(
    protocol: Protocol,
    index: int,
    item: CheckinItem,
    occurrence: int,
    raw_due: datetime,
    tz: ZoneInfo,
    quiet: QuietHours | None,
) -> PlannedCheckin:
    windows: Windows = protocol.windows(item)
    due = defer_for_quiet_hours(raw_due, tz, quiet)
    remind = None
    expires = due + windows.expiry
    if windows.reminder is not None:
        remind = defer_for_quiet_hours(due + windows.reminder, tz, quiet)
        if expires <= remind:
            # quiet hours pushed the reminder to or past the expiry; the expiry follows
            # so the patient still has the usual reply window after the reminder
            expires = remind + (windows.expiry - windows.reminder)
    return PlannedCheckin(
        flow=item.flow,
        due_at=due,
        remind_at=remind,
        expires_at=expires,
        item_index=index,
        occurrence=occurrence,
        anchor="treatment" if item.after == "treatment" else "enrollment",
    )


def _order(p: PlannedCheckin) -> tuple[datetime, int, int]:
    return (p.due_at, p.item_index, p.occurrence)
