"""A reply inside a running conversation (nearly every inbound text), written on the
driver's own connection.

Through SQLAlchemy this path cost about 2 ms of CPU per message, most of it the
per-statement machinery (compiling, parameter processing, greenlet switches) rather
than the database. Here it is hand-written SQL on asyncpg or sqlite3, for the case that
dominates traffic: a known, opted-in sender with an active check-in whose flow this
process has already parsed, including a step that ends it or hands over to the next flow
(PHQ-9 item 9 → C-SSRS), but not one that ends it while another check-in is waiting to
start. Anything else returns None having written nothing, and ``bot.services.inbound``
takes its ORM path. The rows come from the same ``conversations.step_rows`` as that
path's; a test compares the two paths' rows column by column on both backends.

Both backends write a reply only if its check-in is still active in the state the step
began from, the patient still opted in and, when the step ends the conversation, no
other check-in is due; otherwise nothing is written and the reply is read and stepped
again (three times at most, then the ORM path, which locks the patient). That makes the
read skippable: a reply to a conversation this process wrote last starts from the
state it remembers (``_Recent``).

PostgreSQL: no BEGIN/COMMIT, and usually one round trip: one statement whose
data-modifying CTEs write every row, the rows travelling as one JSON document. Replies
ready to write at the same moment share that statement (``db.group``; one group at a
time per process): under load one round trip and one commit serve several replies
(about four in the benchmark, where PostgreSQL's CPU per reply fell by a third).

SQLite: plain ``sqlite3`` calls on the event loop's thread, under this process's writer
lock, with group commit (``db.direct.SqliteDirect``: the replies that arrive together
share one transaction, each in its savepoint) and a zero busy timeout. aiosqlite's
thread hop per statement cost more than the statements themselves, and a commit per
reply more than the rest of the reply; a transaction that would wait for another
process's writer is given up at once, and the ORM path (which waits in a thread) takes
the message.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Any
from weakref import WeakKeyDictionary

import asyncpg

from bot.services.conversations import (
    HISTORY_LIMIT,
    StepRows,
    build_history,
    context_for,
    ended_columns,
    start_columns,
    step_rows,
)
from bot.services.flow_store import cached
from bot.services.outbox import Claimed, claim_rows
from bot.services.scheduling import PatientRow
from bot.settings import Settings
from db.direct import SqliteBusy, sqlite_read_time, sqlite_time
from db.enums import MessageStatus, PatientStatus, Severity, VersionStatus
from db.group import Group
from db.session import Database
from flows import engine
from flows.engine import ConversationState, Outcome, Reply
from flows.model import Flow

log = logging.getLogger(__name__)

MAX_BODY_CHARS = 1600
# stand for ids the write assigns: the inbound row's, and the handed-over check-in's
THIS_MESSAGE = -1
NEXT_CHECKIN = -2

ANSWER_COLUMNS = ("checkin_id", "message_id", "question_key", "raw_text", "value", "created_at")
SCORE_COLUMNS = (
    "checkin_id",
    "patient_id",
    "instrument",
    "total",
    "band",
    "flags",
    "complete",
    "created_at",
)
ESCALATION_COLUMNS = (
    "patient_id",
    "checkin_id",
    "message_id",
    "severity",
    "severity_rank",
    "reason",
    "summary",
    "status",
    "sla_due_at",
    "page_count",
    "created_at",
)
OUTBOUND_COLUMNS = (
    "direction",
    "patient_id",
    "checkin_id",
    "user_id",
    "phone",
    "body",
    "purpose",
    "status",
    "segments",
    "encoding",
    "send_after",
    "attempts",
    "lease_until",
    "created_at",
)
# the check-in a hand-over starts (``conversations._handover`` + ``start_checkin``)
FOLLOW_COLUMNS = (
    "patient_id",
    "flow_key",
    "flow_version",
    "flow_checksum",
    "enrollment_id",
    "treatment_id",
    "previous_id",
    "status",
    "due_at",
    "reminder_after_s",
    "expiry_after_s",
    "reminder_at",
    "expires_at",
    "started_at",
    "lease_until",
    "state",
    "created_at",
)
_JSON_COLUMNS = frozenset({"value", "flags", "state"})


@dataclass(slots=True)
class Replied:
    duplicate: bool = False
    claimed: list[Claimed] = field(default_factory=list)
    # a critical escalation was raised: page the on-call at once (the others are paged by
    # the worker when their SLA passes, so a page check after them would find nothing)
    page_now: bool = False


@dataclass(frozen=True, slots=True)
class _Conversation:
    patient: PatientRow
    checkin_id: int
    flow: Flow
    state: ConversationState
    waiting: bool  # another check-in of this patient is due: ``start_waiting`` must run
    enrollment_id: int | None
    treatment_id: int | None
    reminder_after_s: int | None
    expiry_after_s: int | None


@dataclass(slots=True)
class _Plan:
    """Every row one reply writes: the step's, and those of the check-in it hands over to."""

    rows: StepRows
    state: ConversationState
    follow: dict[str, Any] | None = None


class _NotCommon(Exception):
    """Not the common case: roll back (nothing was written) and take the ORM path."""


async def try_reply(
    db: Database, settings: Settings, *, sid: str, phone: str, body: str, now: datetime
) -> Replied | None:
    """The reply written here, or None when the ORM path must take the message (then
    nothing was written). Call only for a text that is neither crisis language nor a
    keyword."""
    message = _Message(sid=sid, phone=phone, body=body, now=now, settings=settings)
    try:
        if db.pg_direct is not None:
            pool = await db.pg_direct.pool()
            async with pool.acquire() as conn:
                return await _postgres(conn, message, _recent(db), _pg_group(db))
        if db.sqlite_direct is not None:
            recent = _recent(db)
            return await db.sqlite_direct.transact(
                lambda conn: _sqlite_transaction(conn, message, recent), db.writer_lock
            )
    except _Duplicate:
        return Replied(duplicate=True)
    except (_NotCommon, SqliteBusy):
        return None
    except Exception as exc:
        # Any failure, a database going away (asyncpg raises several unrelated classes
        # while a server restarts) or not: nothing was written, or (a connection lost
        # during the commit) all of it was. The ORM path then does the work, finds the
        # MessageSid and changes nothing, or answers 503 if the database is down; the
        # worker sends replies left claimed when their lease ends.
        log.warning("direct reply path failed (%s); taking the ORM path", type(exc).__name__)
        return None
    return None


@dataclass(frozen=True, slots=True)
class _Message:
    sid: str
    phone: str
    body: str
    now: datetime
    settings: Settings


# -- the step (no I/O) -------------------------------------------------------------------------

# The read's columns, the same on both backends. The waiting check goes through the
# patient's own check-ins: ``status || ''`` keeps a planner that thinks few check-ins are
# scheduled from scanning every scheduled one (an index on status) for each reply.
_READ_COLUMNS = """c.patient_id, c.id, c.flow_key, c.flow_version, c.flow_checksum, c.state,
    EXISTS (
        SELECT 1 FROM checkins w
        WHERE w.patient_id = c.patient_id AND w.status || '' = 'scheduled'
          AND w.due_at <= {now} AND (w.expires_at IS NULL OR w.expires_at > {now})
    ),
    EXISTS (SELECT 1 FROM messages m WHERE m.provider_sid = {sid}),
    p.first_name, p.language, p.timezone, p.quiet_start, p.quiet_end, p.status,
    c.enrollment_id, c.treatment_id, c.reminder_after_s, c.expiry_after_s
FROM patients p
JOIN checkins c ON c.patient_id = p.id AND c.status = 'active'
WHERE p.phone = {phone} AND p.opted_out_at IS NULL
ORDER BY c.started_at DESC
LIMIT 1"""


def _conversation(
    row: Sequence[Any], phone: str, state: dict[str, Any] | ConversationState | None
) -> _Conversation:
    patient_id, checkin_id, flow_key, flow_version, checksum = row[:5]
    if flow_version is None or checksum is None or state is None:
        raise _NotCommon
    flow = cached(flow_key, flow_version, checksum)
    if flow is None:
        raise _NotCommon  # the ORM path parses the flow, and caches it for the next reply
    patient = PatientRow(
        id=patient_id,
        first_name=row[8],
        phone=phone,
        language=row[9],
        timezone=row[10],
        quiet_start=_time(row[11]),
        quiet_end=_time(row[12]),
        status=PatientStatus(row[13]),
        opted_out_at=None,
    )
    return _Conversation(
        patient=patient,
        checkin_id=checkin_id,
        flow=flow,
        state=state if isinstance(state, ConversationState) else ConversationState.from_json(state),
        waiting=bool(row[6]),
        enrollment_id=row[14],
        treatment_id=row[15],
        reminder_after_s=row[16],
        expiry_after_s=row[17],
    )


def _time(value: time | str | None) -> time | None:
    return time.fromisoformat(value) if isinstance(value, str) else value


def _step(conv: _Conversation, m: _Message) -> tuple[_Plan, str | None]:
    """The step's rows, and the flow it hands over to (its rows come from ``_follow``)."""
    step = engine.resume(conv.flow, conv.state, Reply(m.body), m.now)
    rows = step_rows(
        step,
        checkin_id=conv.checkin_id,
        patient_id=conv.patient.id,
        phone=m.phone,
        now=m.now,
        message_id=THIS_MESSAGE,
    )
    ended = rows.ended
    if ended is not None and ended.handover and ended.outcome is Outcome.COMPLETED:
        return _Plan(rows, step.state), ended.handover
    if ended is not None and conv.waiting and ended.outcome is not Outcome.CRISIS:
        raise _NotCommon  # one conversation at a time: the waiting one starts there
    claim_rows(rows.messages, m.now)
    return _Plan(rows, step.state), None


def _follow(
    plan: _Plan,
    conv: _Conversation,
    m: _Message,
    *,
    flow_key: str,
    latest: Sequence[Any] | None,
    scores: Sequence[tuple[str, float, datetime]],
    last_treatment: datetime | None,
) -> None:
    """Start the next flow as ``conversations._handover`` does, into ``plan``."""
    if latest is None or latest[2] != VersionStatus.PUBLISHED:
        raise _NotCommon  # the ORM path reports the missing flow
    version, checksum = latest[0], latest[1]
    flow = cached(flow_key, version, checksum)
    if flow is None:
        raise _NotCommon
    rows = plan.rows
    assert rows.ended is not None
    # the scores this step computed count in the history, newest first
    fresh = [(s["instrument"], s["total"], m.now) for s in reversed(rows.scores)]
    history = build_history([*fresh, *scores], last_treatment)
    context = context_for(conv.patient, m.settings, history, dict(rows.ended.carry))
    start = step_rows(
        engine.start(flow, context, m.now),
        checkin_id=NEXT_CHECKIN,
        patient_id=conv.patient.id,
        phone=m.phone,
        now=m.now,
    )
    if start.ended is not None:
        raise _NotCommon
    plan.follow = {
        "patient_id": conv.patient.id,
        "flow_key": flow_key,
        "enrollment_id": conv.enrollment_id,
        "treatment_id": conv.treatment_id,
        "previous_id": conv.checkin_id,
        "due_at": m.now,
        "state": start.state,
        "created_at": m.now,
        **start_columns(
            patient=conv.patient,
            version=version,
            flow=flow,
            checksum=checksum,
            now=m.now,
            expiry_after_s=conv.expiry_after_s,
            reminder_after_s=conv.reminder_after_s,
        ),
    }
    rows.answers += start.answers
    rows.scores += start.scores
    rows.escalations += start.escalations
    rows.messages += start.messages
    claim_rows(rows.messages, m.now)


def _ended(rows: StepRows, now: datetime) -> tuple[str | None, str | None, datetime | None]:
    if rows.ended is None:
        return None, None, None
    columns = ended_columns(rows.ended, now)
    return str(columns["status"]), columns["outcome"], columns["completed_at"]


def _json(name: str, value: Any) -> Any:
    return json.dumps(value) if name in _JSON_COLUMNS else value


def _claimed(found: Sequence[Sequence[Any]], phone: str) -> list[Claimed]:
    """(id, status, attempts, body) of the outbound rows, in the order they were built."""
    return [
        Claimed(row[0], phone, row[3], row[2])
        for row in found
        if row[0] is not None and row[1] == MessageStatus.SENDING
    ]


def _replied(plan: _Plan, found: Sequence[Sequence[Any]], phone: str) -> Replied:
    return Replied(
        claimed=_claimed(found, phone),
        page_now=any(e["severity"] is Severity.CRITICAL for e in plan.rows.escalations),
    )


class _Recent:
    """The conversations this process wrote last, by phone: the read row with the state it
    wrote. A reply to one of them skips the read and goes straight to the write, whose
    state check makes a stale entry harmless (it writes nothing and the reply is read:
    another process, the reminder or expiry job, or a STOP moved the conversation on).
    Bounded; it holds what the database holds, so it is never the only copy."""

    SIZE = 4096

    def __init__(self) -> None:
        self._rows: OrderedDict[str, tuple[Sequence[Any], str, ConversationState]] = OrderedDict()

    def get(self, phone: str) -> tuple[Sequence[Any], str, ConversationState] | None:
        found = self._rows.get(phone)
        if found is not None:
            self._rows.move_to_end(phone)
        return found

    def put(
        self, phone: str, row: Sequence[Any], state_json: str, state: ConversationState
    ) -> None:
        self._rows[phone] = (row, state_json, state)
        self._rows.move_to_end(phone)
        if len(self._rows) > self.SIZE:
            self._rows.popitem(last=False)

    def forget(self, phone: str) -> None:
        self._rows.pop(phone, None)


_RECENT: WeakKeyDictionary[Database, _Recent] = WeakKeyDictionary()


def _recent(db: Database) -> _Recent:
    found = _RECENT.get(db)
    if found is None:
        found = _RECENT[db] = _Recent()
    return found


# -- PostgreSQL -------------------------------------------------------------------------------

_GROUPS: WeakKeyDictionary[Database, Group[_Write, _Result]] = WeakKeyDictionary()


def _pg_group(db: Database) -> Group[_Write, _Result]:
    found = _GROUPS.get(db)
    if found is None:
        found = _GROUPS[db] = Group()
    return found


# Read without a lock, write in one statement that changes nothing unless the check-in is
# still active in exactly the state the step began from: a reply handled meanwhile by
# another process (or the expiry job, or a STOP) makes it write nothing, and the reply is
# read and stepped again. The write locks the check-in row, so one patient's replies
# still commit one at a time; within a process they also queue in arrival order
# (``bot.web.twilio_hooks``).
_PG_READ = "SELECT " + _READ_COLUMNS.replace("c.state,", "c.state::text,", 1).format(
    phone="$1", now="$2", sid="$3"
)
_PG_HANDOVER_READ = f"""
WITH recent AS (
    SELECT instrument, total, created_at, id FROM scores WHERE patient_id = $2
    ORDER BY created_at DESC, id DESC LIMIT {HISTORY_LIMIT * 8}
)
SELECT v.version, v.checksum, v.status,
    (SELECT administered_at FROM treatments WHERE patient_id = $2
     ORDER BY administered_at DESC LIMIT 1),
    ARRAY(SELECT instrument FROM recent ORDER BY created_at DESC, id DESC),
    ARRAY(SELECT total FROM recent ORDER BY created_at DESC, id DESC),
    ARRAY(SELECT created_at FROM recent ORDER BY created_at DESC, id DESC)
FROM (SELECT version, checksum, status FROM flow_versions
      WHERE key = $1 AND version IS NOT NULL ORDER BY version DESC LIMIT 1) v
"""
# a re-delivery racing this one commits first: the statement fails whole on the unique key
_SID_CONSTRAINT = "uq_messages_provider_sid"
ATTEMPTS = 3

_TYPES = {
    "checkin_id": "int",
    "message_id": "int",
    "patient_id": "int",
    "user_id": "int",
    "enrollment_id": "int",
    "treatment_id": "int",
    "previous_id": "int",
    "flow_version": "int",
    "severity_rank": "int",
    "page_count": "int",
    "segments": "int",
    "attempts": "int",
    "reminder_after_s": "int",
    "expiry_after_s": "int",
    "total": "float8",
    "complete": "bool",
    **dict.fromkeys(_JSON_COLUMNS, "jsonb"),
}
_TIMES = frozenset(
    {
        "created_at",
        "sla_due_at",
        "send_after",
        "lease_until",
        "due_at",
        "reminder_at",
        "expires_at",
        "started_at",
    }
)


def _pg_type(name: str) -> str:
    return "timestamptz" if name in _TIMES else _TYPES.get(name, "text")


def _record_type(name: str) -> str:
    """A column's type in ``jsonb_to_recordset``: JSON columns travel as their JSON text (a
    JSON null must stay a JSON null, as the ORM path stores it, not become SQL NULL)."""
    return f"{name} text" if name in _JSON_COLUMNS else f"{name} {_pg_type(name)}"


def _value(alias: str, name: str) -> str:
    if name == "message_id":
        return f"CASE WHEN {alias}.{name} = {THIS_MESSAGE} THEN inb.id ELSE {alias}.{name} END"
    if name == "checkin_id":
        return f"CASE WHEN {alias}.{name} = {NEXT_CHECKIN} THEN fol.id ELSE {alias}.{name} END"
    if name in _JSON_COLUMNS:
        return f"{alias}.{name}::jsonb"
    return f"{alias}.{name}"


def _recordset(key: str, alias: str, columns: tuple[str, ...], *, numbered: bool = False) -> str:
    """The rows under ``key`` of the JSON parameter, each with the index ``k`` of the reply
    it belongs to."""
    fields = ", ".join(("k int", *(_record_type(c) for c in columns)))
    rows = f"jsonb_to_recordset($1::jsonb -> '{key}')"
    if not numbered:
        return f"{rows} AS {alias}({fields})"
    return (
        f"ROWS FROM ({rows} AS ({fields})) WITH ORDINALITY AS {alias}(k, {', '.join(columns)}, n)"
    )


def _rows_cte(name: str, table: str, alias: str, columns: tuple[str, ...]) -> str:
    return f"""{name} AS (
    INSERT INTO {table} ({", ".join(columns)})
    SELECT {", ".join(_value(alias, c) for c in columns)}
    FROM inb LEFT JOIN fol ON fol.k = inb.k
    JOIN {_recordset(table, alias, columns)} ON {alias}.k = inb.k
)"""


# Every row of one reply, or of several ready at the same moment (``db.group``: they share
# the statement, its round trip and its commit), each derived from ``saved``: a reply
# whose check-in moved on updates nothing, and so writes nothing else and returns no row
# (data-modifying CTEs run to completion whether or not the final SELECT reads them,
# hence each joins ``inb``). Each reply is an item ``k``; its rows carry ``k``, and the
# ids the write assigns are matched by what is unique to a reply in the statement: the
# inbound row by its MessageSid, the hand-over's check-in (``follow``) and the outbound
# rows by the patient (one reply per patient: a sender's replies queue one at a time).
# The rows travel as one JSON document: encoding dozens of array parameters cost the
# client more than the statement cost the server.
_ITEM_COLUMNS = """k int, patient_id int, checkin_id int, phone text, body text, sid text,
    at timestamptz, state text, status varchar, outcome varchar, completed_at timestamptz,
    expected text"""
_PG_WRITE = f"""
WITH items AS (
    SELECT * FROM jsonb_to_recordset($1::jsonb -> 'items') AS i({_ITEM_COLUMNS})
), saved AS (
    UPDATE checkins c
    SET state = i.state::jsonb,
        status = coalesce(i.status, c.status),
        outcome = coalesce(i.outcome, c.outcome),
        completed_at = coalesce(i.completed_at, c.completed_at),
        lease_until = CASE WHEN i.status IS NULL THEN c.lease_until END
    FROM items i
    WHERE c.id = i.checkin_id AND c.status = 'active' AND c.state = i.expected::jsonb
        AND NOT EXISTS (
            SELECT FROM patients WHERE id = i.patient_id AND opted_out_at IS NOT NULL)
        AND (i.status IS NULL OR i.outcome = 'crisis' OR NOT EXISTS (
            SELECT FROM checkins w
            WHERE w.patient_id = i.patient_id AND w.status || '' = 'scheduled'
              AND w.due_at <= i.at AND (w.expires_at IS NULL OR w.expires_at > i.at)))
    RETURNING i.k, c.id
), inbound AS (
    INSERT INTO messages (direction, patient_id, checkin_id, phone, body, provider_sid,
                          status, segments, encoding, attempts, purpose, created_at)
    SELECT 'in', i.patient_id, saved.id, i.phone, i.body, i.sid, 'received', 1, 'GSM-7', 0,
        '', i.at
    FROM saved JOIN items i ON i.k = saved.k
    RETURNING id, provider_sid
), inb AS (
    SELECT inbound.id, i.k, i.patient_id FROM inbound JOIN items i ON i.sid = inbound.provider_sid
), follow AS (
    INSERT INTO checkins ({", ".join(FOLLOW_COLUMNS)})
    SELECT {", ".join(_value("f", c) for c in FOLLOW_COLUMNS)}
    FROM inb JOIN {_recordset("follow", "f", FOLLOW_COLUMNS)}
        ON f.k = inb.k
    RETURNING id, patient_id
), fol AS (
    SELECT follow.id, inb.k FROM follow JOIN inb ON inb.patient_id = follow.patient_id
), {_rows_cte("new_answers", "answers", "a", ANSWER_COLUMNS)},
{_rows_cte("new_scores", "scores", "s", SCORE_COLUMNS)},
{_rows_cte("new_escalations", "escalations", "e", ESCALATION_COLUMNS)},
outbound AS (
    INSERT INTO messages ({", ".join(OUTBOUND_COLUMNS)})
    -- ids follow the ORDER BY, so sorting by id restores the order the steps built them in
    SELECT {", ".join(_value("o", c) for c in OUTBOUND_COLUMNS)}
    FROM inb LEFT JOIN fol ON fol.k = inb.k
    JOIN {_recordset("messages", "o", OUTBOUND_COLUMNS, numbered=True)}
        ON o.k = inb.k
    ORDER BY o.k, o.n
    RETURNING id, status, attempts, body, patient_id
)
SELECT inb.k, outbound.id, outbound.status, outbound.attempts, outbound.body
FROM inb LEFT JOIN outbound ON outbound.patient_id = inb.patient_id
ORDER BY inb.k, outbound.id
"""


def _json_row(row: dict[str, Any], columns: tuple[str, ...]) -> dict[str, Any]:
    return {name: _json(name, row.get(name)) for name in columns}


def _json_time(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _pg_rows(writes: Sequence[_Write]) -> str:
    doc: dict[str, list[dict[str, Any]]] = {
        "items": [],
        "follow": [],
        "answers": [],
        "scores": [],
        "escalations": [],
        "messages": [],
    }
    for k, w in enumerate(writes):
        m, plan, rows = w.m, w.plan, w.plan.rows
        status, outcome, completed_at = _ended(rows, m.now)
        doc["items"].append(
            {
                "k": k,
                "patient_id": w.conv.patient.id,
                "checkin_id": w.conv.checkin_id,
                "phone": m.phone,
                "body": m.body[:MAX_BODY_CHARS],
                "sid": m.sid,
                "at": m.now,
                "state": w.new_state,
                "status": status,
                "outcome": outcome,
                "completed_at": completed_at,
                "expected": w.state_json,
            }
        )
        if plan.follow is not None:
            doc["follow"].append({"k": k, **_json_row(plan.follow, FOLLOW_COLUMNS)})
        for key, found, columns in (
            ("answers", rows.answers, ANSWER_COLUMNS),
            ("scores", rows.scores, SCORE_COLUMNS),
            ("escalations", rows.escalations, ESCALATION_COLUMNS),
            ("messages", rows.messages, OUTBOUND_COLUMNS),
        ):
            doc[key] += ({"k": k, **_json_row(r, columns)} for r in found)
    return json.dumps(doc, default=_json_time)


def _remembered(
    recent: _Recent, m: _Message
) -> tuple[Sequence[Any], str, _Conversation, _Plan] | None:
    """The step taken from the state this process wrote last, when it can go straight to
    the write: a hand-over needs its reads, and an end is written only while no check-in
    waits (the write checks that)."""
    cached = recent.get(m.phone)
    if cached is None:
        return None
    row, state_json, state = cached
    conv = _conversation(row, m.phone, state)
    try:
        plan, handover = _step(conv, m)
    except _NotCommon:
        plan, handover = None, None
    if plan is None or handover is not None:
        recent.forget(m.phone)
        return None
    return row, state_json, conv, plan


class _Conflict(Exception):
    """The check-in moved on since it was read: read it again."""


async def _postgres(
    conn: asyncpg.Connection, m: _Message, recent: _Recent, group: Group[_Write, _Result]
) -> Replied:
    remembered = _remembered(recent, m)
    if remembered is not None:
        try:
            return await _pg_write(conn, m, *remembered, recent, group)
        except _Conflict:
            recent.forget(m.phone)  # another writer moved it on: read it
    for _attempt in range(ATTEMPTS):
        row = await conn.fetchrow(_PG_READ, m.phone, m.now, m.sid)
        if row is None:
            raise _NotCommon  # unknown, opted out, or no active check-in
        if row[7]:
            return Replied(duplicate=True)
        state_json = row[5]
        conv = _conversation(row, m.phone, None if state_json is None else json.loads(state_json))
        read_plan, handover = _step(conv, m)
        if handover is not None:
            latest = await conn.fetchrow(_PG_HANDOVER_READ, handover, conv.patient.id)
            _follow(
                read_plan,
                conv,
                m,
                flow_key=handover,
                latest=latest,
                scores=[]
                if latest is None
                else list(zip(latest[4], latest[5], latest[6], strict=True)),
                last_treatment=None if latest is None else latest[3],
            )
        try:
            return await _pg_write(conn, m, row, state_json, conv, read_plan, recent, group)
        except _Conflict:
            continue
    raise _NotCommon  # still moving under us: the ORM path locks the patient instead


@dataclass(frozen=True, slots=True)
class _Write:
    """One reply's write: the parameters of ``_PG_WRITE``, or an item of the group's."""

    m: _Message
    conv: _Conversation
    plan: _Plan
    state_json: str
    new_state: str


_DUPLICATE: tuple[()] = ()  # a result: the MessageSid was already recorded


@dataclass(frozen=True, slots=True)
class _Failed:
    """A result: this reply's statement failed on its own (raised for it alone)."""

    error: Exception


# a reply's result in a group: its outbound rows, ``_DUPLICATE``, or its own failure
_Result = Sequence[Any] | _Failed


async def _pg_write(
    conn: asyncpg.Connection,
    m: _Message,
    row: Sequence[Any],
    state_json: str,
    conv: _Conversation,
    plan: _Plan,
    recent: _Recent,
    group: Group[_Write, _Result],
) -> Replied:
    write = _Write(m, conv, plan, state_json, json.dumps(plan.rows.state))
    found = await group.run(write, lambda writes: _pg_write_group(conn, writes))
    if isinstance(found, _Failed):
        raise found.error
    if found is _DUPLICATE:
        return Replied(duplicate=True)
    if not found:
        raise _Conflict
    if plan.rows.ended is None:
        recent.put(m.phone, row, write.new_state, plan.state)
    else:
        recent.forget(m.phone)
    return _replied(plan, found, m.phone)


async def _pg_write_group(conn: asyncpg.Connection, writes: Sequence[_Write]) -> list[_Result]:
    """Each write's outbound rows (id, status, attempts, body); none when its check-in
    moved on; ``_DUPLICATE`` when its MessageSid was already recorded; ``_Failed`` when,
    written alone after its group's statement failed, its own statement failed."""
    if len(writes) == 1 or len({w.conv.patient.id for w in writes}) < len(writes):
        # the group's ids are matched to replies by patient; a sender's replies queue one
        # at a time, so two of one patient together cannot happen, but stay correct if so
        return [await _pg_write_one(conn, w) for w in writes]
    try:
        found = await conn.fetch(_PG_WRITE, _pg_rows(writes))
    except asyncpg.PostgresError:
        # A re-delivered MessageSid fails the whole statement, and so does a deadlock with
        # another process's group (nothing was written): one at a time, as alone, each
        # reply's own error its own (it takes the ORM path; the others are written).
        alone: list[_Result] = []
        for w in writes:
            try:
                alone.append(await _pg_write_one(conn, w))
            except asyncpg.PostgresError as exc:
                alone.append(_Failed(exc))
        return alone
    by_item: list[list[Sequence[Any]]] = [[] for _ in writes]
    for r in found:
        by_item[r[0]].append(r[1:])
    return list(by_item)


async def _pg_write_one(conn: asyncpg.Connection, w: _Write) -> Sequence[Any]:
    try:
        found = await conn.fetch(_PG_WRITE, _pg_rows([w]))
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name != _SID_CONSTRAINT:
            raise
        return _DUPLICATE
    return [r[1:] for r in found]


# -- SQLite -----------------------------------------------------------------------------------

_SQLITE_READ = "SELECT " + _READ_COLUMNS.format(phone="?3", now="?1", sid="?2")
_SQLITE_LATEST = """
SELECT version, checksum, status FROM flow_versions
WHERE key = ? AND version IS NOT NULL ORDER BY version DESC LIMIT 1
"""
_SQLITE_TREATED = """
SELECT administered_at FROM treatments WHERE patient_id = ?
ORDER BY administered_at DESC LIMIT 1
"""
_SQLITE_SCORES = f"""
SELECT instrument, total, created_at FROM scores WHERE patient_id = ?
ORDER BY created_at DESC, id DESC LIMIT {HISTORY_LIMIT * 8}
"""
_SQLITE_INBOUND = """
INSERT INTO messages (direction, patient_id, checkin_id, phone, body, provider_sid,
                      status, segments, encoding, attempts, purpose, created_at)
VALUES ('in', ?, ?, ?, ?, ?, 'received', 1, 'GSM-7', 0, '', ?)
ON CONFLICT (provider_sid) DO NOTHING
RETURNING id
"""
# as on PostgreSQL: only the state the step began from, and only for an opted-in patient
_SQLITE_SAVE = """
UPDATE checkins
SET state = ?1,
    status = coalesce(?2, status),
    outcome = coalesce(?3, outcome),
    completed_at = coalesce(?4, completed_at),
    lease_until = CASE WHEN ?2 IS NULL THEN lease_until END
WHERE id = ?5 AND status = 'active' AND state = ?6
    AND NOT EXISTS (SELECT 1 FROM patients WHERE id = ?7 AND opted_out_at IS NOT NULL)
    AND (?2 IS NULL OR ?3 = 'crisis' OR NOT EXISTS (
        SELECT 1 FROM checkins w
        WHERE w.patient_id = ?7 AND w.status || '' = 'scheduled'
          AND w.due_at <= ?8 AND (w.expires_at IS NULL OR w.expires_at > ?8)))
"""


def _insert(table: str, columns: tuple[str, ...], returning: str = "") -> str:
    marks = ", ".join("?" * len(columns))
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}){returning}"


_SQLITE_FOLLOW = _insert("checkins", FOLLOW_COLUMNS, " RETURNING id")
_SQLITE_ANSWER = _insert("answers", ANSWER_COLUMNS)
_SQLITE_SCORE = _insert("scores", SCORE_COLUMNS)
_SQLITE_ESCALATION = _insert("escalations", ESCALATION_COLUMNS)
_SQLITE_OUTBOUND = _insert("messages", OUTBOUND_COLUMNS, " RETURNING id")


@dataclass(frozen=True, slots=True)
class _Ids:
    message: int
    follow: int | None


def _sqlite_value(name: str, value: Any, ids: _Ids) -> Any:
    if name == "message_id" and value == THIS_MESSAGE:
        return ids.message
    if name == "checkin_id" and value == NEXT_CHECKIN:
        return ids.follow
    if isinstance(value, datetime):
        return sqlite_time(value)
    if isinstance(value, bool):
        return int(value)
    return _json(name, value)


def _sqlite_rows(
    rows: list[dict[str, Any]], columns: tuple[str, ...], ids: _Ids
) -> list[tuple[Any, ...]]:
    return [tuple(_sqlite_value(name, row.get(name), ids) for name in columns) for row in rows]


class _Duplicate(Exception):
    """SQLite: the MessageSid is already there; the unit's savepoint undoes its update."""


def _sqlite_transaction(conn: sqlite3.Connection, m: _Message, recent: _Recent) -> Replied:
    """One reply in the group's transaction (``db.direct.SqliteDirect.transact``)."""
    remembered = _remembered(recent, m)
    if remembered is not None:
        written = _sqlite_write(conn, m, *remembered, recent)
        if written is not None:
            return written
        recent.forget(m.phone)  # another writer moved it on: read it
    row = conn.execute(_SQLITE_READ, (sqlite_time(m.now), m.sid, m.phone)).fetchone()
    if row is None:
        raise _NotCommon
    if row[7]:
        return Replied(duplicate=True)
    conv = _conversation(row, m.phone, None if row[5] is None else json.loads(row[5]))
    read_plan, handover = _step(conv, m)
    if handover is not None:
        patient_id = conv.patient.id
        treated = conn.execute(_SQLITE_TREATED, (patient_id,)).fetchone()
        _follow(
            read_plan,
            conv,
            m,
            flow_key=handover,
            latest=conn.execute(_SQLITE_LATEST, (handover,)).fetchone(),
            scores=[
                (instrument, total, sqlite_read_time(created))
                for instrument, total, created in conn.execute(_SQLITE_SCORES, (patient_id,))
            ],
            last_treatment=None if treated is None else sqlite_read_time(treated[0]),
        )
    written = _sqlite_write(conn, m, row, row[5], conv, read_plan, recent)
    if written is None:
        raise _NotCommon  # cannot happen: read and write share the transaction
    return written


def _sqlite_write(
    conn: sqlite3.Connection,
    m: _Message,
    row: Sequence[Any],
    state_json: str,
    conv: _Conversation,
    plan: _Plan,
    recent: _Recent,
) -> Replied | None:
    """None, having written nothing, when the check-in is no longer in ``state_json``."""
    rows = plan.rows
    at = sqlite_time(m.now)
    status, outcome, completed_at = _ended(rows, m.now)
    new_state = json.dumps(rows.state)
    saved = conn.execute(
        _SQLITE_SAVE,
        (
            new_state,
            status,
            outcome,
            None if completed_at is None else sqlite_time(completed_at),
            conv.checkin_id,
            state_json,
            conv.patient.id,
            at,
        ),
    )
    if saved.rowcount != 1:
        return None
    inbound = conn.execute(
        _SQLITE_INBOUND,
        (conv.patient.id, conv.checkin_id, m.phone, m.body[:MAX_BODY_CHARS], m.sid, at),
    ).fetchone()
    if inbound is None:
        raise _Duplicate
    ids = _Ids(inbound[0], None)
    if plan.follow is not None:
        (follow_id,) = conn.execute(
            _SQLITE_FOLLOW, _sqlite_rows([plan.follow], FOLLOW_COLUMNS, ids)[0]
        ).fetchone()
        ids = _Ids(ids.message, follow_id)
    for statement, values, columns in (
        (_SQLITE_ANSWER, rows.answers, ANSWER_COLUMNS),
        (_SQLITE_SCORE, rows.scores, SCORE_COLUMNS),
        (_SQLITE_ESCALATION, rows.escalations, ESCALATION_COLUMNS),
    ):
        if values:
            conn.executemany(statement, _sqlite_rows(values, columns, ids))
    found: list[tuple[Any, ...]] = []
    for params, built in zip(
        _sqlite_rows(rows.messages, OUTBOUND_COLUMNS, ids), rows.messages, strict=True
    ):
        (new_id,) = conn.execute(_SQLITE_OUTBOUND, params).fetchone()
        found.append((new_id, built["status"], built["attempts"], built["body"]))
    if rows.ended is None:
        recent.put(m.phone, row, new_state, plan.state)
    else:
        recent.forget(m.phone)
    return _replied(plan, found, m.phone)
