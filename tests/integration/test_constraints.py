"""Uniqueness the domain relies on is enforced by the database itself."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.exc import IntegrityError

from db.enums import Direction, MessageStatus, VersionStatus
from db.models import FlowVersion, Message, Patient
from db.session import Database

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _patient(phone: str) -> Patient:
    return Patient(first_name="Ana", phone=phone, timezone="UTC", created_at=NOW, updated_at=NOW)


async def test_duplicate_patient_phone_is_rejected(database: Database) -> None:
    async with database.write() as s:
        s.add(_patient("+12025550123"))
    with pytest.raises(IntegrityError):
        async with database.write() as s:
            s.add(_patient("+12025550123"))


async def test_duplicate_provider_sid_is_rejected(database: Database) -> None:
    def msg() -> Message:
        return Message(
            direction=Direction.IN,
            phone="+12025550123",
            body="2",
            provider_sid="SM" + "a" * 32,
            status=MessageStatus.RECEIVED,
            created_at=NOW,
        )

    async with database.write() as s:
        s.add(msg())
    with pytest.raises(IntegrityError):
        async with database.write() as s:
            s.add(msg())


async def test_outbound_rows_without_sid_may_coexist(database: Database) -> None:
    async with database.write() as s:
        for _ in range(3):
            s.add(
                Message(
                    direction=Direction.OUT,
                    phone="+12025550123",
                    body="hi",
                    status=MessageStatus.PENDING,
                    created_at=NOW,
                )
            )


def _flow(version: int | None, status: VersionStatus) -> FlowVersion:
    return FlowVersion(
        key="phq9", version=version, source="key: phq9", checksum="x", status=status, created_at=NOW
    )


async def test_duplicate_flow_key_and_version_is_rejected(database: Database) -> None:
    async with database.write() as s:
        s.add(_flow(1, VersionStatus.PUBLISHED))
    with pytest.raises(IntegrityError):
        async with database.write() as s:
            s.add(_flow(1, VersionStatus.PUBLISHED))


async def test_only_one_draft_per_flow(database: Database) -> None:
    async with database.write() as s:
        s.add(_flow(None, VersionStatus.DRAFT))
        s.add(_flow(1, VersionStatus.PUBLISHED))
        s.add(_flow(2, VersionStatus.PUBLISHED))
    with pytest.raises(IntegrityError):
        async with database.write() as s:
            s.add(_flow(None, VersionStatus.DRAFT))


async def test_status_check_constraint(database: Database) -> None:
    from sqlalchemy import text

    with pytest.raises(IntegrityError):
        async with database.write() as s:
            await s.execute(
                text(
                    "INSERT INTO patients (first_name, phone, timezone, language, status, "
                    "created_at, updated_at) VALUES ('A', '+12025550999', 'UTC', 'en', "
                    "'bogus', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )


async def test_times_come_back_aware_utc(database: Database) -> None:
    from sqlalchemy import select

    async with database.write() as s:
        s.add(_patient("+12025550124"))
    async with database.read() as s:
        p = await s.scalar(select(Patient))
        assert p is not None
        assert p.created_at == NOW
        assert p.created_at.tzinfo is not None
