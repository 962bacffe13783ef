"""Audit events written from web handlers: actor, time, source address, subject.

PHI reads are audited like changes (HIPAA 164.312(b)): a handler that shows patient data
writes one event per request. Where one patient is concerned the subject is
``patient:<id>``; a list over several patients has subject type ``patient`` and an empty id,
with the count and the filters in ``details``. Events about an escalation or a check-in keep
that subject and carry ``patient_id`` in ``details``, so the audit page can show everything
about one patient (:func:`about_patient`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

from aiohttp import web
from sqlalchemy import ColumnElement, and_, insert, or_
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from bot.appkeys import CLOCK, DATABASE
from bot.web.client_address import client_address
from db import audit
from db.models import AuditEvent

_INSERT = insert(AuditEvent)
# keep the last digits of a long number (enough to tell numbers apart, not to dial), as logs do
_KEPT_DIGITS = 4
_MIN_DIGITS_SHOWN = 8
_DIGIT = re.compile(r"\d")


class Actor(Protocol):
    @property
    def user_id(self) -> int: ...


def source(request: web.Request) -> str:
    """The client's address (through ``TRUSTED_PROXIES``)."""
    return client_address(request)


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


async def write(
    request: web.Request,
    actor: Actor,
    action: str,
    subject_type: str,
    subject_id: object,
    details: Mapping[str, object] | None = None,
    *,
    conn: AsyncConnection | None = None,
) -> None:
    """``record`` for a read-only handler: one Core INSERT, its own transaction, no ORM.

    On PostgreSQL it runs on ``conn`` when given (an autocommit ``Database.plain_reads``
    connection the handler already holds), else on ``Database.write_one``; on SQLite always
    through ``Database.write_one`` (the write lock and ``BEGIN IMMEDIATE``)."""
    values = row(request, actor, action, subject_type, subject_id, **(details or {}))
    db = request.app[DATABASE]
    if conn is not None and not db.is_sqlite:
        await conn.execute(_INSERT, values)
        return
    async with db.write_one() as own:
        await own.execute(_INSERT, values)


def masked_query(q: str) -> str:
    """A search text as the audit trail may keep it: digits masked (a phone number, or part
    of one, is never stored in clear; a long number keeps its last four digits), names as
    typed. ``+12025550123`` → ``+*******0123``; ``555`` → ``***``; ``Maya`` → ``Maya``."""
    digits = len(_DIGIT.findall(q))
    if not digits:
        return q
    hidden = digits - _KEPT_DIGITS if digits >= _MIN_DIGITS_SHOWN else digits
    out: list[str] = []
    for char in q:
        if char.isdigit():
            out.append("*" if hidden > 0 else char)
            hidden -= 1
        else:
            out.append(char)
    return "".join(out)


def search_details(q: str, count: int) -> dict[str, object]:
    """``details`` of a patient list or search: the number of rows shown and the masked query."""
    return {"count": count, "query": masked_query(q)} if q else {"count": count}


def list_action(thing: str, q: str) -> str:
    """``<thing>.search`` when a search text was given, ``<thing>.list`` otherwise."""
    return f"{thing}.search" if q else f"{thing}.list"


def about_patient(patient_id: int) -> ColumnElement[bool]:
    """Events about one patient: subject ``patient:<id>``, or ``patient_id`` in the details
    (events on the patient's escalations and check-ins). Same SQL meaning on SQLite
    (``json_extract``) and PostgreSQL (``->>``); numbers and strings both match."""
    return or_(
        and_(AuditEvent.subject_type == "patient", AuditEvent.subject_id == str(patient_id)),
        AuditEvent.details["patient_id"].as_string() == str(patient_id),
    )
