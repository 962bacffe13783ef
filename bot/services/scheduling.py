"""From protocols to check-in rows: treatments, enrollments, ad-hoc check-ins, pausing.

Due times are computed by the pure ``flows.schedule`` in the patient's zone
and stored in UTC. Recurring schedules keep only the next few occurrences as
rows; ``replenish`` tops them up as time passes.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services import protocol_store
from bot.services.flow_store import latest_published as latest_flow
from db.enums import CheckinStatus, EnrollmentStatus, PatientStatus
from db.models import Checkin, Enrollment, Patient, Treatment
from flows.durations import parse_duration
from flows.schedule import (
    PlannedCheckin,
    QuietHours,
    defer_for_quiet_hours,
    plan_for_enrollment,
    plan_for_treatment,
)

AHEAD = 2
"""Occurrences of each recurring item kept materialised ahead of time."""
# a treatment "now" typed on a device whose clock runs a little ahead is still not future
FUTURE_TOLERANCE = timedelta(minutes=10)
DEFAULT_REMINDER = timedelta(hours=4)
DEFAULT_EXPIRY = timedelta(hours=24)


class PatientLike(Protocol):
    """What scheduling and conversations read of a patient: an ORM row, or the plain
    snapshot the dispatcher reads with Core (loading ORM objects is its largest cost)."""

    @property
    def id(self) -> int: ...
    @property
    def first_name(self) -> str: ...
    @property
    def phone(self) -> str: ...
    @property
    def language(self) -> str: ...
    @property
    def timezone(self) -> str: ...
    @property
    def quiet_start(self) -> time | None: ...
    @property
    def quiet_end(self) -> time | None: ...
    @property
    def status(self) -> PatientStatus: ...
    @property
    def opted_out_at(self) -> datetime | None: ...


def quiet_hours(patient: PatientLike) -> QuietHours | None:
    if patient.quiet_start is None or patient.quiet_end is None:
        return None
    return QuietHours(patient.quiet_start, patient.quiet_end)


def zone(patient: PatientLike) -> ZoneInfo:
    return ZoneInfo(patient.timezone)


def start_windows(
    patient: PatientLike, now: datetime, reminder_s: int | None, expiry_s: int | None
) -> tuple[datetime | None, datetime]:
    """Reminder and expiry of a check-in that starts ``now``; the reminder respects quiet hours
    and the expiry never comes before it (the patient keeps a reply window after a reminder)."""
    expiry = timedelta(seconds=expiry_s) if expiry_s else DEFAULT_EXPIRY
    expires = now + expiry
    if not reminder_s:
        return None, expires
    reminder = timedelta(seconds=reminder_s)
    remind = defer_for_quiet_hours(now + reminder, zone(patient), quiet_hours(patient))
    if remind >= expires:
        expires = remind + max(expiry - reminder, timedelta(hours=1))
    return remind, expires


def quiet_now(patient: PatientLike, now: datetime) -> bool:
    """Whether ``now`` falls in the patient's quiet hours (check-ins and reminders wait)."""
    return defer_for_quiet_hours(now, zone(patient), quiet_hours(patient)) != now


def patient_can_receive(patient: PatientLike) -> bool:
    return patient.status is PatientStatus.ACTIVE and patient.opted_out_at is None


def _row(
    patient: Patient,
    plan: PlannedCheckin,
    *,
    enrollment: Enrollment,
    treatment_id: int | None,
    reminder: timedelta | None,
    expiry: timedelta,
    now: datetime,
) -> Checkin:
    return Checkin(
        patient_id=patient.id,
        flow_key=plan.flow,
        enrollment_id=enrollment.id,
        treatment_id=treatment_id,
        item_index=plan.item_index,
        occurrence=plan.occurrence,
        status=CheckinStatus.SCHEDULED,
        due_at=plan.due_at,
        reminder_after_s=int(reminder.total_seconds()) if reminder is not None else None,
        expiry_after_s=int(expiry.total_seconds()),
        reminder_at=plan.remind_at,
        expires_at=plan.expires_at,
        created_at=now,
    )


async def _active_enrollments(session: AsyncSession, patient_id: int) -> list[Enrollment]:
    return list(
        (
            await session.scalars(
                select(Enrollment)
                .where(
                    Enrollment.patient_id == patient_id,
                    Enrollment.status == EnrollmentStatus.ACTIVE,
                )
                .order_by(Enrollment.id)
            )
        ).all()
    )


async def record_treatment(
    *,
    session: AsyncSession,
    patient: Patient,
    kind: str,
    administered_at: datetime,
    now: datetime,
    recorded_by: int | None = None,
) -> tuple[Treatment, list[Checkin]]:
    """Record a treatment and schedule each active protocol's check-ins relative to it."""
    treatment = Treatment(
        patient_id=patient.id,
        kind=kind,
        administered_at=administered_at,
        recorded_by=recorded_by,
        created_at=now,
    )
    session.add(treatment)
    await session.flush()
    created = await _plan_treatment(session, patient, treatment, now, supersede=True)
    return treatment, created


async def _plan_treatment(
    session: AsyncSession,
    patient: Patient,
    treatment: Treatment,
    now: datetime,
    *,
    supersede: bool,
    kept: frozenset[tuple[int, int, int | None]] = frozenset(),
) -> list[Checkin]:
    """Each active protocol's check-ins relative to ``treatment``; ``kept`` are (enrollment,
    item, occurrence) already there (started before a correction), not planned again."""
    created: list[Checkin] = []
    for enrollment in await _active_enrollments(session, patient.id):
        protocol = await protocol_store.pinned(
            session=session, key=enrollment.protocol_key, version=enrollment.protocol_version
        )
        if supersede and protocol.supersede_on_new_treatment:
            await session.execute(
                update(Checkin)
                .where(
                    Checkin.enrollment_id == enrollment.id,
                    Checkin.treatment_id.is_not(None),
                    Checkin.treatment_id != treatment.id,
                    Checkin.status == CheckinStatus.SCHEDULED,
                )
                .values(status=CheckinStatus.CANCELLED, outcome="superseded", completed_at=now)
            )
        # A paused, discharged or opted-out patient still gets the plan, held as cancelled:
        # reactivation brings back whatever is still in the future.
        held = None if patient_can_receive(patient) else _stop_reason(patient)
        for plan in plan_for_treatment(
            protocol, treatment.administered_at, zone(patient), quiet_hours(patient)
        ):
            if plan.expires_at <= now:
                # a treatment recorded late: a window already over is not a check-in to send
                # (nor a "missed" one the patient was never asked)
                continue
            if (enrollment.id, plan.item_index, plan.occurrence) in kept:
                continue
            windows = protocol.windows(protocol.checkins[plan.item_index])
            row = _row(
                patient,
                plan,
                enrollment=enrollment,
                treatment_id=treatment.id,
                reminder=windows.reminder,
                expiry=windows.expiry,
                now=now,
            )
            if held is not None:
                row.status = CheckinStatus.CANCELLED
                row.outcome = held
                row.completed_at = now
            session.add(row)
            created.append(row)
    await session.flush()
    return created


async def correct_treatment(
    *,
    session: AsyncSession,
    patient: Patient,
    treatment: Treatment,
    now: datetime,
    kind: str | None = None,
    administered_at: datetime | None = None,
    remove: bool = False,
) -> list[Checkin]:
    """Fix a treatment recorded with the wrong time or kind, or remove one recorded by
    mistake. The check-ins it planned that never started go (a corrected time plans them
    again); those already sent stay, as the record of what happened."""
    # its unstarted check-ins go; those a later treatment superseded stay as they are (kept
    # below, so a correction does not bring them back beside the later schedule)
    await session.execute(
        delete(Checkin).where(
            Checkin.treatment_id == treatment.id,
            Checkin.started_at.is_(None),
            or_(
                Checkin.status == CheckinStatus.SCHEDULED,
                and_(
                    Checkin.status == CheckinStatus.CANCELLED,
                    Checkin.outcome.is_distinct_from("superseded"),
                ),
            ),
        )
    )
    if remove:
        await session.delete(treatment)
        await session.flush()
        return []
    if kind is not None:
        treatment.kind = kind
    if administered_at is not None:
        treatment.administered_at = administered_at
    kept = frozenset(
        (r.enrollment_id, r.item_index, r.occurrence)
        for r in (
            await session.execute(
                select(Checkin.enrollment_id, Checkin.item_index, Checkin.occurrence).where(
                    Checkin.treatment_id == treatment.id
                )
            )
        ).all()
        if r.enrollment_id is not None and r.item_index is not None
    )
    return await _plan_treatment(session, patient, treatment, now, supersede=False, kept=kept)


def _stop_reason(patient: Patient) -> str:
    return "opted_out" if patient.opted_out_at is not None else str(patient.status)


async def enroll(
    *,
    session: AsyncSession,
    patient: Patient,
    protocol_key: str,
    start_at: datetime,
    now: datetime,
) -> tuple[Enrollment, list[Checkin]]:
    """Enrol a patient in the newest published version of a protocol."""
    version, _protocol = await protocol_store.latest_published(session=session, key=protocol_key)
    enrollment = Enrollment(
        patient_id=patient.id,
        protocol_key=protocol_key,
        protocol_version=version,
        start_at=start_at,
        status=EnrollmentStatus.ACTIVE,
        created_at=now,
    )
    session.add(enrollment)
    await session.flush()
    created = await replenish(session=session, enrollment=enrollment, patient=patient, now=now)
    return enrollment, created


async def replenish(
    *, session: AsyncSession, enrollment: Enrollment, patient: Patient, now: datetime
) -> list[Checkin]:
    """Keep the next ``AHEAD`` occurrences of each enrollment-relative item as rows."""
    if enrollment.status is not EnrollmentStatus.ACTIVE or not patient_can_receive(patient):
        return []
    protocol = await protocol_store.pinned(
        session=session, key=enrollment.protocol_key, version=enrollment.protocol_version
    )
    existing = (
        await session.execute(
            select(Checkin.item_index, Checkin.occurrence, Checkin.status, Checkin.due_at).where(
                Checkin.enrollment_id == enrollment.id, Checkin.treatment_id.is_(None)
            )
        )
    ).all()
    seen = {(r.item_index, r.occurrence) for r in existing}
    pending: dict[int, int] = {}
    for r in existing:
        if r.status is CheckinStatus.SCHEDULED and r.item_index is not None:
            pending[r.item_index] = pending.get(r.item_index, 0) + 1
    # Plan from the enrollment start, but never materialise what is long past.
    floor = max(enrollment.start_at - timedelta.resolution, now - DEFAULT_EXPIRY)
    # Occurrences after the floor may already exist (answered within the last day, or
    # pending); plan further than AHEAD so the next unseen ones fill up to AHEAD pending.
    plans = plan_for_enrollment(
        protocol,
        enrollment.start_at,
        zone(patient),
        quiet_hours(patient),
        after=floor,
        limit=2 * AHEAD + 1,
    )
    created: list[Checkin] = []
    for plan in plans:
        if (plan.item_index, plan.occurrence) in seen:
            continue
        if pending.get(plan.item_index, 0) >= AHEAD:
            continue
        windows = protocol.windows(protocol.checkins[plan.item_index])
        row = _row(
            patient,
            plan,
            enrollment=enrollment,
            treatment_id=None,
            reminder=windows.reminder,
            expiry=windows.expiry,
            now=now,
        )
        session.add(row)
        created.append(row)
        pending[plan.item_index] = pending.get(plan.item_index, 0) + 1
    await session.flush()
    return created


async def adhoc_checkin(
    *, session: AsyncSession, patient: Patient, flow_key: str, due_at: datetime, now: datetime
) -> Checkin:
    """A one-off check-in; quiet hours still apply, the flow's own windows are used."""
    _version, flow = await latest_flow(session=session, key=flow_key)
    reminder = flow.reminder.after if flow.reminder is not None else DEFAULT_REMINDER
    expiry = flow.expiry.after if flow.expiry is not None else DEFAULT_EXPIRY
    due = defer_for_quiet_hours(max(due_at, now), zone(patient), quiet_hours(patient))
    row = Checkin(
        patient_id=patient.id,
        flow_key=flow_key,
        status=CheckinStatus.SCHEDULED,
        due_at=due,
        reminder_after_s=int(_td(reminder).total_seconds()),
        expiry_after_s=int(_td(expiry).total_seconds()),
        expires_at=due + _td(expiry),
        created_at=now,
    )
    session.add(row)
    await session.flush()
    return row


def _td(value: str | timedelta) -> timedelta:
    return value if isinstance(value, timedelta) else parse_duration(value)


STOPPED_BY_PATIENT_STATUS = ("paused", "discharged", "opted_out", "carrier_opt_out")


async def rematerialise(*, session: AsyncSession, patient: Patient, now: datetime) -> list[Checkin]:
    """Reactivation brings the schedule back: future check-ins stopped by the pause return,
    and recurring items are topped up."""
    if not patient_can_receive(patient):
        return []
    await session.execute(
        update(Checkin)
        .where(
            Checkin.patient_id == patient.id,
            Checkin.status == CheckinStatus.CANCELLED,
            Checkin.outcome.in_(STOPPED_BY_PATIENT_STATUS),
            Checkin.started_at.is_(None),
            Checkin.due_at > now,
        )
        .values(status=CheckinStatus.SCHEDULED, outcome=None, completed_at=None)
    )
    created: list[Checkin] = []
    for enrollment in await _active_enrollments(session, patient.id):
        created.extend(
            await replenish(session=session, enrollment=enrollment, patient=patient, now=now)
        )
    return created
