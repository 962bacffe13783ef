"""Loading the shipped flow library into the database, once, as version 1."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot import library
from db.enums import VersionStatus
from db.models import FlowVersion, ProtocolVersion
from flows import yamlsrc


def checksum(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def title_of(source: str) -> str:
    data = yamlsrc.load(source).data
    title = data.get("title") if isinstance(data, dict) else None
    return str(title) if title else ""


@dataclass(frozen=True, slots=True)
class SeedResult:
    flows_added: tuple[str, ...]
    protocols_added: tuple[str, ...]


async def seed_library(*, session: AsyncSession, now: datetime) -> SeedResult:
    """Insert each shipped flow and protocol whose key has no row yet; never overwrite."""
    flows_added: list[str] = []
    protocols_added: list[str] = []
    for model, sources, added in (
        (FlowVersion, library.flow_sources(), flows_added),
        (ProtocolVersion, library.protocol_sources(), protocols_added),
    ):
        existing = set((await session.scalars(select(model.key).distinct())).all())
        for key, source in sources.items():
            if key in existing:
                continue
            session.add(
                model(
                    key=key,
                    version=1,
                    title=title_of(source),
                    source=source,
                    checksum=checksum(source),
                    status=VersionStatus.PUBLISHED,
                    created_at=now,
                    updated_at=now,
                    published_at=now,
                )
            )
            added.append(key)
    await session.flush()
    return SeedResult(tuple(flows_added), tuple(protocols_added))
