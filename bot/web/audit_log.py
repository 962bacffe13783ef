"""Audit events written from web handlers: actor, time, source address, subject."""

from __future__ import annotations

from typing import Protocol

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from bot.appkeys import CLOCK
from db import audit


class Actor(Protocol):
    @property
    def user_id(self) -> int: ...


def source(request: web.Request) -> str:
    """The TCP peer (behind a proxy, the proxy's address)."""
    return (request.remote or "")[:64]


def record(
    request: web.Request,
    session: AsyncSession,
    actor: Actor,
    action: str,
    subject_type: str,
    subject_id: object,
    **details: object,
) -> None:
    audit.record(
        session=session,
        action=action,
        at=request.app[CLOCK].now(),
        actor_id=actor.user_id,
        subject_type=subject_type,
        subject_id=subject_id,
        source_address=source(request),
        details=dict(details),
    )
