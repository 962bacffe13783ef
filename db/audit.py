"""Writing audit events (the table is append-only for the app)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from db.models import AuditEvent


def row(
    *,
    action: str,
    at: datetime,
    actor_id: int | None = None,
    subject_type: str = "",
    subject_id: object = "",
    source_address: str = "",
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The column values of one event (the ORM and a Core ``INSERT`` share them)."""
    return {
        "actor_id": actor_id,
        "action": action,
        "subject_type": subject_type,
        "subject_id": str(subject_id),
        "at": at,
        "source_address": source_address,
        "details": details or {},
    }


def record(
    *,
    session: AsyncSession,
    action: str,
    at: datetime,
    actor_id: int | None = None,
    subject_type: str = "",
    subject_id: object = "",
    source_address: str = "",
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    event = AuditEvent(
        **row(
            action=action,
            at=at,
            actor_id=actor_id,
            subject_type=subject_type,
            subject_id=subject_id,
            source_address=source_address,
            details=details,
        )
    )
    session.add(event)
    return event
