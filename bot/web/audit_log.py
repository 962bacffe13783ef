"""Audit events written from web handlers: actor, time, source address, subject."""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from bot.appkeys import CLOCK
from db import audit
from db.models import AuditEvent


class Actor(Protocol):
    @property
    def user_id(self) -> int: ...


def source(request: web.Request) -> str:
    """The TCP peer (behind a proxy, the proxy's address)."""
    return (request.remote or "")[:64]


def row(
    request: web.Request,
    actor: Actor,
    action: str,
    subject_type: str,
    subject_id: object,
    **details: object,
) -> dict[str, Any]:
    """The event's column values, with the request's time and source address."""
    return audit.row(
        action=action,
        at=request.app[CLOCK].now(),
        actor_id=actor.user_id,
        subject_type=subject_type,
        subject_id=subject_id,
        source_address=source(request),
        details=dict(details),
    )


def record(
    request: web.Request,
    session: AsyncSession,
    actor: Actor,
    action: str,
    subject_type: str,
    subject_id: object,
    **details: object,
) -> None:
    session.add(AuditEvent(**row(request, actor, action, subject_type, subject_id, **details)))
