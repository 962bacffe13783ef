"""Relapse rules read the patient's stored PHQ-9s, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from db.enums import CheckinStatus
from db.models import Escalation, Patient, Treatment
from tests.integration.test_dispatch import add_checkin, get, tick
from tests.web.harness import Harness, harness


@pytest.fixture
async def h(db_url: str) -> AsyncIterator[Harness]:
    async with harness(db_url) as hh:
        yield hh


async def phq9(h: Harness, p: Patient, answers: list[int]) -> None:
    c = await add_checkin(h, p, "phq9", h.clock.now())
    assert (await tick(h)).started == 1
    for value in answers:
        await h.sms(p.phone, str(value))
    assert (await get(h, c)).status is CheckinStatus.COMPLETED


async def reasons(h: Harness, p: Patient) -> list[str]:
    async with h.db.read() as s:
        return list(
            (await s.scalars(select(Escalation.reason).where(Escalation.patient_id == p.id))).all()
        )


async def test_a_rise_after_a_treatment_is_judged_from_the_best_of_twelve_weeks(
    h: Harness,
) -> None:
    """PHQ-9 4, then a treatment, then PHQ-9 14: the best before the treatment counts."""
    p = await h.patient()
    await phq9(h, p, [3, 1, 0, 0, 0, 0, 0, 0, 0])
    h.clock.advance(days=7)
    async with h.db.write() as s:
        s.add(Treatment(patient_id=p.id, kind="ketamine_iv", administered_at=h.clock.now()))
    h.clock.advance(days=7)
    await phq9(h, p, [3, 3, 3, 3, 2, 0, 0, 0, 0])
    assert "possible_relapse" in await reasons(h, p)


async def test_a_best_older_than_twelve_weeks_does_not_count(h: Harness) -> None:
    p = await h.patient()
    await phq9(h, p, [3, 1, 0, 0, 0, 0, 0, 0, 0])
    h.clock.advance(days=7 * 13)
    await phq9(h, p, [3, 3, 3, 3, 2, 0, 0, 0, 0])
    assert "possible_relapse" not in await reasons(h, p)
