"""Edges of the scheduler: rows whose flow cannot load, treatments recorded during a pause."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.services import dispatch, scheduling
from bot.services import patients as patient_service
from db.enums import CheckinStatus, PatientStatus
from db.models import Checkin, Patient
from tests.web.harness import Harness, harness


@pytest.fixture
async def h(db_url: str):  # type: ignore[no-untyped-def]
    async with harness(db_url) as hh:
        yield hh


async def test_a_checkin_whose_flow_version_cannot_load_is_closed_not_retried_forever(
    h: Harness,
) -> None:
    p = await h.patient()
    c = await h.start(p, "daily_mood")
    async with h.db.write() as s:
        row = await s.get(Checkin, c.id)
        assert row is not None
        row.flow_version = 99  # a version that does not exist
        row.flow_checksum = None
    h.clock.advance(hours=5)
    reminded = await dispatch.remind_due(h.db, h.settings, h.clock.now())
    assert (reminded.reminded, reminded.failed) == (0, 1)
    again = await dispatch.remind_due(h.db, h.settings, h.clock.now())
    assert (again.reminded, again.failed) == (0, 0)  # given up, not retried every tick
    h.clock.advance(hours=24)
    expired = await dispatch.expire_due(h.db, h.settings, h.clock.now())
    assert expired.failed == 1
    async with h.db.read() as s:
        row = await s.get(Checkin, c.id)
    assert row is not None
    assert (row.status, row.outcome) == (CheckinStatus.EXPIRED, "flow_unavailable")
    assert (await dispatch.expire_due(h.db, h.settings, h.clock.now())).failed == 0


async def test_treatment_recorded_while_paused_comes_back_on_reactivation(h: Harness) -> None:
    p = await h.patient()
    now = h.clock.now()
    async with h.db.write() as s:
        patient = await s.get(Patient, p.id)
        assert patient is not None
        await scheduling.enroll(
            session=s, patient=patient, protocol_key="ketamine_induction", start_at=now, now=now
        )
        await patient_service.set_status(
            session=s, patient=patient, status=PatientStatus.PAUSED, now=now
        )
        treatment, created = await scheduling.record_treatment(
            session=s, patient=patient, kind="ketamine infusion", administered_at=now, now=now
        )
    assert len(created) == 2
    assert {c.status for c in created} == {CheckinStatus.CANCELLED}
    assert {c.outcome for c in created} == {"paused"}
    h.clock.advance(hours=1)
    async with h.db.write() as s:
        patient = await s.get(Patient, p.id)
        assert patient is not None
        await patient_service.set_status(
            session=s, patient=patient, status=PatientStatus.ACTIVE, now=h.clock.now()
        )
    async with h.db.read() as s:
        rows = (
            await s.scalars(
                select(Checkin).where(Checkin.treatment_id == treatment.id).order_by(Checkin.due_at)
            )
        ).all()
    assert [(r.flow_key, r.status) for r in rows] == [
        ("post_session", CheckinStatus.SCHEDULED),
        ("daily_mood", CheckinStatus.SCHEDULED),
    ]
    assert rows[0].due_at == now + timedelta(hours=24)
