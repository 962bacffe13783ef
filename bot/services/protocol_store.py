"""Published protocol versions as parsed ``Protocol`` objects, cached per ``Database``.

As in ``flow_store``: the cache is the session's ``Database``'s; without one, each call parses.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.enums import VersionStatus
from db.models import ProtocolVersion
from db.parsed_cache import parsed_definitions
from flows.protocol import Protocol, load_protocol


class ProtocolUnavailableError(LookupError):
    pass


def _parse(session: AsyncSession, key: str, version: int, checksum: str, source: str) -> Protocol:
    parsed = parsed_definitions(session)
    if parsed is None:
        return load_protocol(source)
    return parsed.protocols.get_or_parse((key, version, checksum), lambda: load_protocol(source))


async def latest_published(*, session: AsyncSession, key: str) -> tuple[int, Protocol]:
    row = (
        await session.execute(
            select(
                ProtocolVersion.version,
                ProtocolVersion.checksum,
                ProtocolVersion.source,
                ProtocolVersion.status,
            )
            .where(ProtocolVersion.key == key, ProtocolVersion.version.is_not(None))
            .order_by(ProtocolVersion.version.desc())
            .limit(1)
        )
    ).first()
    if row is None or row.status is not VersionStatus.PUBLISHED or row.version is None:
        raise ProtocolUnavailableError(f"protocol {key!r} has no published version")
    return row.version, _parse(session, key, row.version, row.checksum, row.source)


async def pinned(*, session: AsyncSession, key: str, version: int) -> Protocol:
    row = (
        await session.execute(
            select(ProtocolVersion.checksum, ProtocolVersion.source).where(
                ProtocolVersion.key == key, ProtocolVersion.version == version
            )
        )
    ).first()
    if row is None:
        raise ProtocolUnavailableError(f"protocol {key!r} version {version} does not exist")
    return _parse(session, key, version, row.checksum, row.source)
