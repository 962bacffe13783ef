"""Detected messages through the webhook: the tier decides the item and the answer."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from db.enums import Direction, Severity
from db.models import Escalation, Message, Patient
from tests.web.harness import Harness, harness


@pytest.fixture
async def h(db_url: str):  # type: ignore[no-untyped-def]
    async with harness(db_url) as hh:
        yield hh


async def _last(h: Harness, patient_id: int) -> tuple[Escalation, Message]:
    async with h.db.read() as s:
        escalation = (
            await s.scalars(
                select(Escalation)
                .where(Escalation.patient_id == patient_id)
                .order_by(Escalation.id.desc())
            )
        ).first()
        reply = (
            await s.scalars(
                select(Message)
                .where(Message.patient_id == patient_id, Message.direction == Direction.OUT)
                .order_by(Message.id.desc())
            )
        ).first()
    assert escalation is not None and reply is not None
    return escalation, reply


@pytest.mark.parametrize(
    ("language", "text", "severity", "reason", "words"),
    [
        ("en", "i bought a rope and im doing it tonight", "critical", "crisis_language", "988"),
        (
            "en",
            "my family would be better off without me",
            "high",
            "concerning_language",
            "the on-call clinician is paged",
        ),
        ("es", "voy a matar a mi padrastro", "critical", "crisis_language", "Llame"),
        (
            "es",
            "siento que soy una carga para todos",
            "high",
            "concerning_language",
            "se avisa al medico de guardia",
        ),
    ],
)
async def test_a_text_outside_a_check_in_is_answered_by_its_tier(
    h: Harness, language: str, text: str, severity: str, reason: str, words: str
) -> None:
    p = await h.patient(language=language)
    await h.sms(p.phone, text)
    escalation, reply = await _last(h, p.id)
    assert (escalation.severity, escalation.reason) == (Severity(severity), reason)
    assert reply.purpose == "crisis" and words in reply.body


async def test_spanish_baja_opts_out_and_comenzar_opts_back_in(h: Harness) -> None:
    p = await h.patient(language="es")
    await h.sms(p.phone, "BAJA")
    async with h.db.read() as s:
        row = await s.get(Patient, p.id)
        assert row is not None and row.opted_out_at is not None
    await h.sms(p.phone, "Comenzar")
    async with h.db.read() as s:
        row = await s.get(Patient, p.id)
        assert row is not None and row.opted_out_at is None
