"""Replies to running conversations that arrive together, handled in one transaction.

Nearly every inbound text is a reply inside a check-in. Handled one by one,
each pays a transaction of its own (and on SQLite waits its turn for the one
writer); read through the same guarded step writer as a group, the replies
that are ready at the same moment share one transaction, one read of their
senders, one insert of their texts and one insert each of their answers and
outgoing messages (``steps.write_steps``). A group forms on its own under
load (``db.group``: the first caller leads, the others join) and a lone reply
pays only one yield.

Only the plain case is taken: a known, opted-in sender with a running
check-in, and a text that is neither crisis language nor a keyword (the
caller checks those first). Anything else, and the whole group when anything
goes wrong (a guard that failed, a database error), is answered "not taken"
and goes through ``inbound.handle_inbound``'s one-at-a-time path, having
written nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services.conversations import resume_checkin
from bot.services.escalations import pages_at_once
from bot.services.flow_store import pinned
from bot.services.outbox import Claimed
from bot.services.steps import StepWrite, Target, Text, record_texts, write_steps
from bot.settings import Settings
from db.enums import CheckinStatus, Severity
from db.group import Group
from db.models import Checkin, Patient
from db.session import Database
from flows import engine
from flows.engine import ConversationEnded, ConversationState, Reply

log = logging.getLogger(__name__)

GROUP_LIMIT = 32


@dataclass(frozen=True, slots=True)
class Sms:
    sid: str
    phone: str
    body: str


@dataclass(slots=True)
class Taken:
    """A reply written by the group (``taken`` False: go the one-at-a-time way)."""

    taken: bool = False
    duplicate: bool = False
    claimed: list[Claimed] = field(default_factory=list)
    outbound_ids: list[int] = field(default_factory=list)
    severities: list[Severity] = field(default_factory=list)


_NOT_TAKEN = Taken()


class ReplyGroups:
    """The per-app queue of replies waiting to be written together."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self._db = db
        self._settings = settings
        self._group: Group[tuple[Sms, datetime], Taken] = Group(GROUP_LIMIT)

    async def submit(self, sms: Sms, now: datetime) -> Taken:
        async def call(items: Sequence[tuple[Sms, datetime]]) -> list[Taken]:
            try:
                return await write_group(self._db, self._settings, items)
            except Exception as exc:  # nothing was written: each reply goes alone
                log.warning("a group of %d replies fell back (%s)", len(items), type(exc).__name__)
                return [Taken() for _ in items]

        try:
            return await self._group.run((sms, now), call)
        except Exception:
            return _NOT_TAKEN


class _Stale(Exception):
    """A step's guard failed inside a group: the group is rolled back."""


_ACTIVE = and_(Checkin.patient_id == Patient.id, Checkin.status == CheckinStatus.ACTIVE)


async def write_group(
    db: Database, settings: Settings, items: Sequence[tuple[Sms, datetime]]
) -> list[Taken]:
    """Write the replies of ``items`` (distinct senders) in one transaction."""
    out = [Taken() for _ in items]
    async with db.write() as session:
        senders = await _senders(session, db, [sms.phone for sms, _now in items])
        chosen: list[int] = []
        for k, (sms, _now) in enumerate(items):
            found = senders.get(sms.phone)
            if found is None:
                continue
            patient, checkin = found
            if patient.opted_out_at is not None or checkin.state is None:
                continue
            chosen.append(k)
        if not chosen:
            return out
        recorded = await record_texts(
            session,
            [
                Text(
                    sid=items[k][0].sid,
                    phone=items[k][0].phone,
                    body=items[k][0].body,
                    now=items[k][1],
                    patient_id=senders[items[k][0].phone][0].id,
                    checkin_id=senders[items[k][0].phone][1].id,
                )
                for k in chosen
            ],
        )
        writes: list[tuple[int, StepWrite]] = []
        ending: list[tuple[int, int]] = []
        for k in chosen:
            sms, now = items[k]
            message_id = recorded.get(sms.sid)
            if message_id is None:
                out[k] = Taken(taken=True, duplicate=True)
                continue
            patient, checkin = senders[sms.phone]
            assert checkin.flow_version is not None and checkin.state is not None
            flow = await pinned(
                session=session,
                key=checkin.flow_key,
                version=checkin.flow_version,
                checksum=checkin.flow_checksum,
            )
            step = engine.resume(
                flow, ConversationState.from_json(checkin.state), Reply(sms.body), now
            )
            if any(isinstance(e, ConversationEnded) for e in step.events):
                ending.append((k, message_id))  # a hand-over or the next check-in follows
                continue
            target = Target(checkin.id, patient.id, sms.phone, checkin.revision)
            writes.append((k, StepWrite(target, step, message_id=message_id, claim=True)))
        if writes:
            now = max(items[k][1] for k, _w in writes)
            results = await write_steps(session, [w for _k, w in writes], now)
            for (k, _w), written in zip(writes, results, strict=True):
                if written is None:
                    raise _Stale
                out[k] = Taken(
                    taken=True,
                    claimed=written.claimed,
                    outbound_ids=written.ids,
                    severities=written.escalations,
                )
        for k, message_id in ending:
            sms, now = items[k]
            patient, checkin = senders[sms.phone]
            applied = await resume_checkin(
                session=session,
                checkin=checkin,
                patient=patient,
                settings=settings,
                input=Reply(sms.body),
                now=now,
                message_id=message_id,
                phone=sms.phone,
                claim=True,
            )
            if not applied.written:
                raise _Stale
            out[k] = Taken(
                taken=True,
                claimed=applied.claimed,
                outbound_ids=applied.ids,
                severities=applied.escalations,
            )
    return out


async def _senders(
    session: AsyncSession, db: Database, phones: list[str]
) -> dict[str, tuple[Patient, Checkin]]:
    """The patients who own these numbers with their running check-in; on PostgreSQL both
    locked (FOR NO KEY UPDATE, in patient order), as the one-at-a-time path locks them."""
    query = (
        select(Patient, Checkin)
        .join(Checkin, _ACTIVE)
        .where(Patient.phone.in_(phones))
        .order_by(Patient.id, Checkin.started_at.desc())
    )
    if not db.is_sqlite:
        query = query.with_for_update(of=[Patient, Checkin], key_share=True)
    found: dict[str, tuple[Patient, Checkin]] = {}
    for patient, checkin in (await session.execute(query)).all():
        found.setdefault(patient.phone, (patient, checkin))
    return found


def pages(taken: Taken) -> bool:
    return any(pages_at_once(s) for s in taken.severities)
