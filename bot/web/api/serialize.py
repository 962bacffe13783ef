"""JSON shapes of the API's resources."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as encode_json_string
from typing import Any

from bot.services.holds import Hold
from db.models import Checkin, Escalation, Message, Patient, Treatment


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def iso_utc(value: datetime | None) -> str | None:
    """``iso`` of a timestamp read without the UTC column decorator: naive (SQLite) means UTC,
    aware (PostgreSQL) is normally UTC already; same text as ``iso`` of the decorated value."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.isoformat() + "Z"
    text = value.isoformat()
    if text.endswith("+00:00"):
        return text[:-6] + "Z"
    return iso(value.astimezone(UTC))


def risk_hold(hold: Hold | None) -> dict[str, Any] | None:
    if hold is None:
        return None
    return {
        "escalation_id": hold.escalation_id,
        "severity": str(hold.severity),
        "since": iso(hold.since),
        "lifted_by": "a clinician claiming or resolving the escalation",
    }


def patient(p: Patient, hold: Hold | None = None) -> dict[str, Any]:
    quiet = (
        {"start": p.quiet_start.strftime("%H:%M"), "end": p.quiet_end.strftime("%H:%M")}
        if p.quiet_start is not None and p.quiet_end is not None
        else None
    )
    return {
        "id": p.id,
        "first_name": p.first_name,
        "last_name": p.last_name,
        "date_of_birth": p.date_of_birth.isoformat() if p.date_of_birth else None,
        "phone": p.phone,
        "timezone": p.timezone,
        "language": p.language,
        "external_ref": p.external_ref,
        "quiet_hours": quiet,
        "status": str(p.status),
        "opted_out_at": iso(p.opted_out_at),
        "unreachable_at": iso(p.unreachable_at),
        "risk_hold": risk_hold(hold),
        "created_at": iso(p.created_at),
        "updated_at": iso(p.updated_at),
    }


def message(m: Message) -> dict[str, Any]:
    return {
        "id": m.id,
        "direction": str(m.direction),
        "body": m.body,
        "status": str(m.status),
        "created_at": iso(m.created_at),
        "checkin_id": m.checkin_id,
        "purpose": m.purpose,
        "error_code": m.error_code,
        "segments": m.segments,
    }


def checkin(c: Checkin, scores: dict[str, float] | None = None) -> dict[str, Any]:
    return {
        "id": c.id,
        "flow": c.flow_key,
        "flow_version": c.flow_version,
        "status": str(c.status),
        "due_at": iso(c.due_at),
        "started_at": iso(c.started_at),
        "completed_at": iso(c.completed_at),
        "expires_at": iso(c.expires_at),
        "outcome": c.outcome,
        "scores": scores or {},
    }


def treatment(t: Treatment) -> dict[str, Any]:
    return {
        "id": t.id,
        "patient_id": t.patient_id,
        "kind": t.kind,
        "administered_at": iso(t.administered_at),
    }


def escalation(e: Escalation, claimed_by_email: str | None = None) -> dict[str, Any]:
    return {
        "id": e.id,
        "patient_id": e.patient_id,
        "checkin_id": e.checkin_id,
        "severity": str(e.severity),
        "reason": e.reason,
        "summary": e.summary,
        "status": str(e.status),
        "created_at": iso(e.created_at),
        "sla_due_at": iso(e.sla_due_at),
        "claimed_by": e.claimed_by,
        "claimed_by_email": claimed_by_email,
        "claimed_at": iso(e.claimed_at),
        "resolved_at": iso(e.resolved_at),
        "resolved_by": e.resolved_by,
        "disposition": str(e.disposition) if e.disposition else None,
        "note": e.note,
        "page_count": e.page_count,
    }


def _text(value: str | None) -> str:
    return "null" if value is None else encode_json_string(value)


def _int(value: int | None) -> str:
    return "null" if value is None else str(int(value))


def _stamp(value: datetime | None) -> str:
    return "null" if value is None else encode_json_string(iso_utc(value) or "")


def _escalation_item_json(r: tuple[Any, ...]) -> str:
    """One queue item's JSON, from every value the text is made of."""
    return (
        f'{{"id":{_int(r[0])},"patient_id":{_int(r[1])},"checkin_id":{_int(r[2])},'
        f'"severity":{_text(r[3])},"reason":{_text(r[4])},"summary":{_text(r[5])},'
        f'"status":{_text(r[6])},"created_at":{_stamp(r[7])},"sla_due_at":{_stamp(r[8])},'
        f'"claimed_by":{_int(r[9])},"claimed_by_email":{_text(r[10])},'
        f'"claimed_at":{_stamp(r[11])},"resolved_at":{_stamp(r[12])},'
        f'"resolved_by":{_int(r[13])},"disposition":{_text(r[14] or None)},'
        f'"note":{_text(r[15])},"page_count":{_int(r[16])}}}'
    )


class EscalationItems:
    """Queue items' JSON memoised on each row's values, one memo per app: the queue is polled by
    every open client and its rows rarely change, so most polls format no row at all. A changed
    row is a new key (never a stale item); the rows carry PHI, so the memo lives with the app,
    not the module."""

    def __init__(self, size: int = 4096) -> None:
        self.item_json = functools.lru_cache(maxsize=size)(_escalation_item_json)


def escalation_rows_json(
    rows: Iterable[Sequence[Any]],
    following: str | None = None,
    *,
    items: EscalationItems | None = None,
) -> str:
    """``{"items": [escalation, ...]}`` as JSON text, for rows of ``queue.QUEUE_ROW_FIELDS``
    (plain values): the same object as ``escalation`` gives (keys in the same order), written
    directly. The queue API sends 200 of them per poll; building 200 dicts and encoding their
    keys again each time cost about as much again. Strings go through the ``json`` module's
    own encoder (ASCII, as ``json.dumps`` writes them by default). ``next`` is the cursor of
    the following page, or null on the last. Without ``items`` every row is formatted."""
    item_json = items.item_json if items is not None else _escalation_item_json
    text = ",".join([item_json(tuple(r)) for r in rows])
    return '{"items":[' + text + '],"next":' + _text(following) + "}"
