"""CSV exports of scores and escalations, streamed in keyset batches.

Each batch is its own short read (``WHERE id > last ORDER BY id LIMIT n``), so a
100k-row export holds one batch in memory and no transaction stays open while a
slow client downloads. Rows come out in id order, which is creation order.

Cells are RFC 4180 (the ``csv`` module, CRLF line ends). Text that a spreadsheet
would run as a formula (starting ``=``, ``+``, ``-``, ``@``, tab or CR) gets a
leading apostrophe; numbers we write ourselves are left as numbers.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import InstrumentedAttribute

from db.models import Checkin, Escalation, Score
from db.session import Database

BATCH_SIZE = 1000
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

SCORE_COLUMNS = (
    "checkin_id",
    "flow",
    "flow_version",
    "instrument",
    "total",
    "band",
    "complete",
    "flags",
    "created_at",
)
ESCALATION_COLUMNS = (
    "id",
    "patient_id",
    "severity",
    "reason",
    "status",
    "created_at",
    "claimed_by",
    "claimed_at",
    "resolved_by",
    "resolved_at",
    "disposition",
    "note",
    "page_count",
)

Cell = str | int | float | bool | datetime | None


def neutralise(text: str) -> str:
    """``text`` made inert for spreadsheets (OWASP CSV injection): a leading ``'``."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def utc_iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def format_cell(value: Cell) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, datetime):
        return utc_iso(value)
    return neutralise(str(value))


def encode(rows: Iterable[Sequence[Cell]]) -> bytes:
    """Rows as UTF-8 CSV, CRLF after each row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    for row in rows:
        writer.writerow([format_cell(v) for v in row])
    return buffer.getvalue().encode("utf-8")


def day_range(start: date | None, end: date | None) -> tuple[datetime | None, datetime | None]:
    """UTC bounds ``[start 00:00, end + 1 day 00:00)``: both dates are included."""
    lower = datetime.combine(start, time(0), tzinfo=UTC) if start else None
    upper = datetime.combine(end + timedelta(days=1), time(0), tzinfo=UTC) if end else None
    return lower, upper


async def _batches(
    db: Database,
    query: Select[*tuple[Any, ...]],
    id_column: InstrumentedAttribute[int],
    size: int,
) -> AsyncIterator[list[Sequence[Any]]]:
    """Keyset pagination on the query's first column (the id), one short read per batch."""
    last = 0
    while True:
        async with db.read() as session:
            rows = (
                await session.execute(query.where(id_column > last).order_by(id_column).limit(size))
            ).all()
        if not rows:
            return
        last = rows[-1][0]
        yield [tuple(r) for r in rows]
        if len(rows) < size:
            return


async def score_rows(
    db: Database, patient_id: int, *, size: int | None = None
) -> AsyncIterator[list[Sequence[Cell]]]:
    """The patient's scores in SCORE_COLUMNS order, in batches."""
    query = (
        select(
            Score.id,
            Score.checkin_id,
            Checkin.flow_key,
            Checkin.flow_version,
            Score.instrument,
            Score.total,
            Score.band,
            Score.complete,
            Score.flags,
            Score.created_at,
        )
        .join(Checkin, Checkin.id == Score.checkin_id)
        .where(Score.patient_id == patient_id)
    )
    async for batch in _batches(db, query, Score.id, size or BATCH_SIZE):
        yield [(*row[1:8], ";".join(row[8] or []), row[9]) for row in batch]


async def escalation_rows(
    db: Database,
    *,
    created_from: datetime | None,
    created_before: datetime | None,
    size: int | None = None,
) -> AsyncIterator[list[Sequence[Cell]]]:
    """Escalations created in ``[created_from, created_before)``, in ESCALATION_COLUMNS order."""
    query = select(
        Escalation.id,
        Escalation.patient_id,
        Escalation.severity,
        Escalation.reason,
        Escalation.status,
        Escalation.created_at,
        Escalation.claimed_by,
        Escalation.claimed_at,
        Escalation.resolved_by,
        Escalation.resolved_at,
        Escalation.disposition,
        Escalation.note,
        Escalation.page_count,
    )
    if created_from is not None:
        query = query.where(Escalation.created_at >= created_from)
    if created_before is not None:
        query = query.where(Escalation.created_at < created_before)
    async for batch in _batches(db, query, Escalation.id, size or BATCH_SIZE):
        yield batch
