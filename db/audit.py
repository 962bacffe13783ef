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
        "details": _without_nul(details or {}),
    }


def _without_nul(value: Any) -> Any:
    """Details as PostgreSQL's JSON can keep them: it refuses a NUL character in text, and a
    search typed with one must not lose its audit row (or fail the page)."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {str(k).replace("\x00", ""): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nul(v) for v in value]
    return value


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
