"""Published flow versions as parsed ``Flow`` objects, cached per ``Database``.

Published versions are immutable, so a (key, version) pair can be parsed once
and kept; parsing YAML on every inbound message would dominate its cost. The cache
is the one the session's ``Database`` holds (``db.parsed_cache``); a session made
elsewhere, without it, parses on every call, which is slower but never wrong.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.enums import VersionStatus
from db.models import Checkin, FlowVersion
from db.parsed_cache import ParsedCache, parsed_definitions
from flows.definition import load_flow
from flows.model import Flow


class FlowUnavailableError(LookupError):
    pass


def cache_of(session: AsyncSession) -> ParsedCache[Flow] | None:
    """The flow cache of the ``Database`` that made ``session``, if it did."""
    parsed = parsed_definitions(session)
    return parsed.flows if parsed is not None else None


def parse_cached(
    key: str, version: int, checksum: str, source: str, *, session: AsyncSession
) -> Flow:
    cache = cache_of(session)
    if cache is None:
        return load_flow(source)
    return cache.get_or_parse((key, version, checksum), lambda: load_flow(source))


def cached(key: str, version: int, checksum: str, *, session: AsyncSession) -> Flow | None:
    """A version this database's cache already holds, without asking the database."""
    cache = cache_of(session)
    return cache.get((key, version, checksum)) if cache is not None else None


async def latest_published(*, session: AsyncSession, key: str) -> tuple[int, Flow]:
    """The newest published version of ``key``; retired or unknown flows raise."""
    version, flow, _checksum = await latest_published_with_checksum(session=session, key=key)
    return version, flow


async def latest_published_with_checksum(
    *, session: AsyncSession, key: str
) -> tuple[int, Flow, str]:
    row = (
        await session.execute(
            select(
                FlowVersion.version, FlowVersion.checksum, FlowVersion.source, FlowVersion.status
            )
            .where(FlowVersion.key == key, FlowVersion.version.is_not(None))
            .order_by(FlowVersion.version.desc())
            .limit(1)
        )
    ).first()
    if row is None or row.status is not VersionStatus.PUBLISHED or row.version is None:
        raise FlowUnavailableError(f"flow {key!r} has no published version")
    flow = parse_cached(key, row.version, row.checksum, row.source, session=session)
    return row.version, flow, row.checksum


async def pinned(
    *, session: AsyncSession, key: str, version: int, checksum: str | None = None
) -> Flow:
    """Exactly ``version`` of ``key`` (a running conversation stays on its version).

    With the version's checksum (stored on the check-in) a parsed copy is reused without
    asking the database: the checksum names the exact source.
    """
    if checksum is not None:
        found = cached(key, version, checksum, session=session)
        if found is not None:
            return found
    row = (
        await session.execute(
            select(FlowVersion.checksum, FlowVersion.source).where(
                FlowVersion.key == key, FlowVersion.version == version
            )
        )
    ).first()
    if row is None:
        raise FlowUnavailableError(f"flow {key!r} version {version} does not exist")
    return parse_cached(key, version, row.checksum, row.source, session=session)


async def of_checkin(*, session: AsyncSession, checkin: Checkin) -> Flow | None:
    """The flow version a check-in was pinned to; None when it has none (never started)
    or it is gone, so a page about old check-ins still shows what it can."""
    if checkin.flow_version is None:
        return None
    try:
        return await pinned(
            session=session,
            key=checkin.flow_key,
            version=checkin.flow_version,
            checksum=checkin.flow_checksum,
        )
    except FlowUnavailableError:
        return None
