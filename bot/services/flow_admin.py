"""Draft, validate, diff, publish, roll back and retire flows and protocols.

Published versions are immutable rows; each key has at most one draft. A
running check-in stays pinned to the version it started on, so publishing
never changes a conversation in progress. Two admins publishing at once get
versions n and n+1, or one of them a clean conflict.
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, cast

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services.flow_store import parse_cached
from db import audit
from db.enums import CheckinStatus, EnrollmentStatus, VersionStatus
from db.models import Checkin, Enrollment, FlowVersion, ProtocolVersion, User
from flows import yamlsrc
from flows.definition import validate_flow_source
from flows.model import Flow
from flows.problems import Problem, SourceError
from flows.protocol import validate_protocol_source

Kind = Literal["flow", "protocol"]
VersionRow = FlowVersion | ProtocolVersion
MAX_NOTE = 500
"""Characters a publish's change note may have (the column's size)."""


class FlowAdminError(Exception):
    def __init__(
        self, status: int, code: str, message: str, problems: list[Problem] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.problems = problems or []


def model_for(kind: Kind) -> type[FlowVersion] | type[ProtocolVersion]:
    return FlowVersion if kind == "flow" else ProtocolVersion


def checksum(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


async def published_flow_keys(*, session: AsyncSession) -> set[str]:
    """Keys with a current (not retired) published version."""
    rows = (
        await session.execute(
            select(FlowVersion.key, FlowVersion.status, FlowVersion.version)
            .where(FlowVersion.version.is_not(None))
            .order_by(FlowVersion.key, FlowVersion.version.desc())
        )
    ).all()
    latest: dict[str, VersionStatus] = {}
    for key, status, _version in rows:
        latest.setdefault(key, status)
    return {k for k, s in latest.items() if s is VersionStatus.PUBLISHED}


async def validate(*, session: AsyncSession, kind: Kind, key: str, source: str) -> list[Problem]:
    """Every problem of ``source``, including a key that does not match the URL.

    Parsing and checking are CPU work that grows with the draft: they run in a thread, so
    one large draft never stalls the server's other requests."""
    known = await published_flow_keys(session=session)
    return await asyncio.to_thread(check_source, kind, key, source, known)


def check_source(kind: Kind, key: str, source: str, known: set[str]) -> list[Problem]:
    if kind == "flow":
        parsed, problems = validate_flow_source(source, known_flows=known | {key})
        parsed_key = parsed.key if parsed is not None else None
    else:
        protocol, problems = validate_protocol_source(source, known_flows=known)
        parsed_key = protocol.key if protocol is not None else None
    if parsed_key is not None and parsed_key != key:
        src = yamlsrc.load(source)
        problems = [
            *problems,
            src.problem(
                ("key",),
                f"the key in the file is {parsed_key!r} but this is {key!r}; they must match",
            ),
        ]
    return problems


def errors_only(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.is_error]


@dataclass(frozen=True, slots=True)
class VersionInfo:
    version: int | None
    status: VersionStatus
    published_at: datetime | None
    updated_at: datetime
    author: str | None
    checksum: str
    running: int
    note: str | None = None
    """The publisher's change note (versions published without one have None)."""


@dataclass(frozen=True, slots=True)
class Summary:
    key: str
    title: str
    published: VersionInfo | None
    draft: VersionInfo | None
    retired: bool
    versions: list[VersionInfo]


async def _running(
    session: AsyncSession, kind: Kind, key: str | None = None
) -> dict[tuple[str, int], int]:
    if kind == "flow":
        query = (
            select(Checkin.flow_key, Checkin.flow_version, func.count())
            .where(Checkin.status == CheckinStatus.ACTIVE, Checkin.flow_version.is_not(None))
            .group_by(Checkin.flow_key, Checkin.flow_version)
        )
        if key is not None:
            query = query.where(Checkin.flow_key == key)
    else:
        query = (
            select(Enrollment.protocol_key, Enrollment.protocol_version, func.count())
            .where(Enrollment.status == EnrollmentStatus.ACTIVE)
            .group_by(Enrollment.protocol_key, Enrollment.protocol_version)
        )
        if key is not None:
            query = query.where(Enrollment.protocol_key == key)
    return {(k, v): n for k, v, n in (await session.execute(query)).all() if v is not None}


async def summaries(*, session: AsyncSession, kind: Kind, key: str | None = None) -> list[Summary]:
    model = model_for(kind)
    query = (
        select(model, User.email)
        .outerjoin(User, User.id == model.author_id)
        .order_by(model.key, model.version.desc().nulls_first())
    )
    if key is not None:
        query = query.where(model.key == key)
    rows = (await session.execute(query)).all()
    running = await _running(session, kind, key)
    grouped: dict[str, list[tuple[VersionRow, str | None]]] = {}
    for found, found_email in rows:
        item = cast(VersionRow, found)
        grouped.setdefault(item.key, []).append((item, found_email))
    out = []
    for k, items in grouped.items():
        infos = []
        draft = None
        title = ""
        for row, email in items:
            info = VersionInfo(
                version=row.version,
                status=row.status,
                published_at=row.published_at,
                updated_at=row.updated_at,
                author=email,
                checksum=row.checksum,
                running=running.get((k, row.version), 0) if row.version is not None else 0,
                note=row.change_note,
            )
            if row.status is VersionStatus.DRAFT:
                draft = info
            else:
                infos.append(info)
            title = title or row.title
        newest = infos[0] if infos else None
        out.append(
            Summary(
                key=k,
                title=title,
                published=newest if newest and newest.status is VersionStatus.PUBLISHED else None,
                draft=draft,
                retired=bool(newest and newest.status is VersionStatus.RETIRED),
                versions=infos,
            )
        )
    return out


async def source_of(
    *, session: AsyncSession, kind: Kind, key: str, version: int | Literal["draft", "latest"]
) -> VersionRow | None:
    model = model_for(kind)
    if version == "draft":
        query = select(model).where(model.key == key, model.status == VersionStatus.DRAFT)
    elif version == "latest":
        query = (
            select(model)
            .where(model.key == key, model.version.is_not(None))
            .order_by(model.version.desc())
            .limit(1)
        )
    else:
        query = select(model).where(model.key == key, model.version == version)
    found: VersionRow | None = await session.scalar(query)
    return found


def title_of(source: str) -> str:
    try:
        data = yamlsrc.load(source).data
    except Exception:
        return ""
    title = data.get("title") if isinstance(data, dict) else None
    return str(title)[:200] if title else ""


async def save_draft(
    *,
    session: AsyncSession,
    kind: Kind,
    key: str,
    source: str,
    author_id: int | None,
    now: datetime,
) -> tuple[VersionRow, list[Problem]]:
    """Store the draft if it has no error; warnings are returned, errors refuse it (422)."""
    problems = await validate(session=session, kind=kind, key=key, source=source)
    if errors_only(problems):
        raise FlowAdminError(
            422, "invalid", f"the {kind} has errors; the draft was not saved", problems
        )
    model = model_for(kind)
    draft = await source_of(session=session, kind=kind, key=key, version="draft")
    if draft is None:
        draft = model(
            key=key,
            version=None,
            status=VersionStatus.DRAFT,
            source=source,
            checksum=checksum(source),
            title=title_of(source),
            author_id=author_id,
            created_at=now,
            updated_at=now,
        )
        session.add(draft)
    else:
        draft.source = source
        draft.checksum = checksum(source)
        draft.title = title_of(source)
        draft.author_id = author_id
        draft.updated_at = now
    try:
        await session.flush()
    except IntegrityError as exc:
        raise FlowAdminError(
            409, "conflict", "another admin saved a draft at the same moment; reload"
        ) from exc
    return draft, problems


def unified_diff(old: str, new: str, old_name: str, new_name: str) -> str:
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile=old_name,
            tofile=new_name,
        )
    )


def diff_size(diff: str) -> dict[str, int]:
    added = sum(
        1 for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")
    )
    removed = sum(
        1 for line in diff.splitlines() if line.startswith("-") and not line.startswith("---")
    )
    return {"lines_added": added, "lines_removed": removed}


async def _next_version(session: AsyncSession, kind: Kind, key: str) -> int:
    model = model_for(kind)
    current = await session.scalar(select(func.max(model.version)).where(model.key == key))
    return (current or 0) + 1


async def _publish_source(
    *,
    session: AsyncSession,
    kind: Kind,
    key: str,
    source: str,
    author_id: int | None,
    now: datetime,
    address: str,
    action: str,
    extra: dict[str, object] | None = None,
    note: str = "",
) -> VersionRow:
    problems = await validate(session=session, kind=kind, key=key, source=source)
    if errors_only(problems):
        raise FlowAdminError(
            422, "invalid", f"the {kind} has errors; it was not published", problems
        )
    if kind == "protocol":
        await _check_protocol_flows(session, source)
    previous = await source_of(session=session, kind=kind, key=key, version="latest")
    diff = unified_diff(
        previous.source if previous else "",
        source,
        f"v{previous.version}" if previous else "empty",
        "new",
    )
    version = await _next_version(session, kind, key)
    model = model_for(kind)
    row = model(
        key=key,
        version=version,
        status=VersionStatus.PUBLISHED,
        source=source,
        checksum=checksum(source),
        title=title_of(source),
        author_id=author_id,
        created_at=now,
        updated_at=now,
        published_at=now,
        change_note=note or None,
    )
    session.add(row)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise FlowAdminError(
            409,
            "conflict",
            f"version {version} of {key} was just published by someone else; reload and try again",
        ) from exc
    audit.record(
        session=session,
        action=action,
        at=now,
        actor_id=author_id,
        subject_type=kind,
        subject_id=f"{key}@{version}",
        source_address=address,
        details={**diff_size(diff), **(extra or {})},
    )
    return row


async def _check_protocol_flows(session: AsyncSession, source: str) -> None:
    from flows.protocol import load_protocol

    protocol = load_protocol(source)
    live = await published_flow_keys(session=session)
    missing = sorted({item.flow for item in protocol.checkins} - live)
    if missing:
        raise FlowAdminError(
            422,
            "unpublished_flows",
            "the protocol names flows without a published version: " + ", ".join(missing),
        )


async def publish(
    *,
    session: AsyncSession,
    kind: Kind,
    key: str,
    author_id: int | None,
    now: datetime,
    address: str = "",
    note: str = "",
) -> VersionRow:
    """The draft becomes the next immutable version; the draft is removed.

    ``note`` is the publisher's short description of the change, kept on the version (at
    most ``MAX_NOTE`` characters; longer is refused). The editor requires one; the API and
    the library import may leave it empty."""
    note = note.strip()
    if len(note) > MAX_NOTE:
        raise FlowAdminError(
            422, "invalid", f"the change note is {len(note)} characters; the limit is {MAX_NOTE}"
        )
    model = model_for(kind)
    query = select(model).where(model.key == key, model.status == VersionStatus.DRAFT)
    if session.bind is not None and session.bind.dialect.name != "sqlite":
        query = query.with_for_update()
    draft: VersionRow | None = await session.scalar(query)
    if draft is None:
        raise FlowAdminError(409, "no_draft", f"{key} has no draft to publish; save a draft first")
    row = await _publish_source(
        session=session,
        kind=kind,
        key=key,
        source=draft.source,
        author_id=author_id,
        now=now,
        address=address,
        action=f"{kind}.publish",
        note=note,
    )
    await session.delete(draft)
    await session.flush()
    return row


async def rollback(
    *,
    session: AsyncSession,
    kind: Kind,
    key: str,
    version: int,
    author_id: int | None,
    now: datetime,
    address: str = "",
) -> VersionRow:
    """Publish a copy of an older version as the newest one."""
    old = await source_of(session=session, kind=kind, key=key, version=version)
    if old is None:
        raise FlowAdminError(404, "not_found", f"{key} has no version {version}")
    return await _publish_source(
        session=session,
        kind=kind,
        key=key,
        source=old.source,
        author_id=author_id,
        now=now,
        address=address,
        action=f"{kind}.rollback",
        extra={"from_version": version},
    )


async def retire(
    *,
    session: AsyncSession,
    kind: Kind,
    key: str,
    author_id: int | None,
    now: datetime,
    address: str = "",
) -> list[str]:
    """No new check-ins use it; running ones finish. Returns protocols that still name the flow."""
    latest = await source_of(session=session, kind=kind, key=key, version="latest")
    if latest is None:
        raise FlowAdminError(404, "not_found", f"no {kind} {key!r}")
    if latest.status is VersionStatus.RETIRED:
        raise FlowAdminError(409, "retired", f"{key} is already retired")
    latest.status = VersionStatus.RETIRED
    latest.updated_at = now
    audit.record(
        session=session,
        action=f"{kind}.retire",
        at=now,
        actor_id=author_id,
        subject_type=kind,
        subject_id=f"{key}@{latest.version}",
        source_address=address,
    )
    if kind != "flow":
        return []
    return await protocols_naming(session=session, flow_keys={key})


async def protocols_naming(*, session: AsyncSession, flow_keys: Collection[str]) -> list[str]:
    from flows.protocol import load_protocol

    rows = (
        await session.execute(
            select(ProtocolVersion.key, ProtocolVersion.source, ProtocolVersion.status)
            .where(ProtocolVersion.version.is_not(None))
            .order_by(ProtocolVersion.key, ProtocolVersion.version.desc())
        )
    ).all()
    seen: set[str] = set()
    naming = []
    for key, source, status in rows:
        if key in seen:
            continue
        seen.add(key)
        if status is not VersionStatus.PUBLISHED:
            continue
        try:
            protocol = load_protocol(source)
        except SourceError:  # a stored protocol that no longer loads names nothing
            continue
        if any(item.flow in flow_keys for item in protocol.checkins):
            naming.append(key)
    return naming


async def resolver(*, session: AsyncSession) -> dict[str, Flow]:
    """The latest published flows, for following handovers in simulations."""
    rows = (
        await session.execute(
            select(
                FlowVersion.key,
                FlowVersion.version,
                FlowVersion.checksum,
                FlowVersion.source,
                FlowVersion.status,
            )
            .where(FlowVersion.version.is_not(None))
            .order_by(FlowVersion.key, FlowVersion.version.desc())
        )
    ).all()
    out: dict[str, Flow] = {}
    for key, version, digest, source, status in rows:
        if key in out or status is not VersionStatus.PUBLISHED or version is None:
            continue
        out[key] = parse_cached(key, version, digest, source, session=session)
    return out


@dataclass(frozen=True, slots=True)
class ImportResult:
    key: str
    kind: Kind
    outcome: str


async def import_library(
    *, session: AsyncSession, sources: dict[Kind, dict[str, str]], publish_: bool, now: datetime
) -> list[ImportResult]:
    """Bring shipped library changes in as drafts (and publish them if asked).

    Never overwrites an admin's work silently: a key with a draft in progress is
    skipped, and a flow whose newest version an admin published is imported as
    a draft only, whatever ``publish_`` says.
    """
    results: list[ImportResult] = []
    for kind in ("flow", "protocol"):
        for key, text in sources.get(kind, {}).items():
            latest = await source_of(session=session, kind=kind, key=key, version="latest")
            if latest is not None and latest.checksum == checksum(text):
                results.append(ImportResult(key, kind, "unchanged"))
                continue
            if await source_of(session=session, kind=kind, key=key, version="draft") is not None:
                results.append(ImportResult(key, kind, "skipped: a draft is in progress"))
                continue
            try:
                await save_draft(
                    session=session, kind=kind, key=key, source=text, author_id=None, now=now
                )
            except FlowAdminError as exc:
                results.append(ImportResult(key, kind, f"skipped: {exc.message}"))
                continue
            edited = latest is not None and latest.author_id is not None
            if publish_ and not edited:
                row = await publish(
                    session=session, kind=kind, key=key, author_id=None, now=now, address="cli"
                )
                results.append(ImportResult(key, kind, f"published as v{row.version}"))
            elif publish_:
                results.append(
                    ImportResult(key, kind, "draft only: an admin edited the published version")
                )
            else:
                results.append(ImportResult(key, kind, "draft saved"))
    return results
