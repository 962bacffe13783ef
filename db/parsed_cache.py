"""Parsed definitions, cached per ``Database`` and reached through its sessions.

Entries are keyed by (key, version, checksum): a checksum names one exact YAML source, so an
entry can never be stale; the bound keeps memory flat however many versions a long-running
process meets. The caches belong to a ``Database`` (one per app or process), never to a
module, so tests and processes do not share them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

if TYPE_CHECKING:
    from flows.model import Flow
    from flows.protocol import Protocol

T = TypeVar("T")
CacheKey = tuple[str, int, str]

SESSION_INFO_KEY = "parsed_definitions"
"""The ``session.info`` entry under which ``Database`` sessions carry their caches."""

FLOW_CACHE_SIZE = 512
PROTOCOL_CACHE_SIZE = 128


class ParsedCache(Generic[T]):
    """A small LRU of parsed definitions."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[CacheKey, T] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def get(self, key: CacheKey) -> T | None:
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
        return found

    def get_or_parse(self, key: CacheKey, parse: Callable[[], T]) -> T:
        found = self.get(key)
        if found is None:
            found = parse()
            self._items[key] = found
            if len(self._items) > self._size:
                self._items.popitem(last=False)
        return found


class ParsedDefinitions:
    """The parsed flow and protocol caches of one ``Database``."""

    def __init__(
        self, *, flow_size: int = FLOW_CACHE_SIZE, protocol_size: int = PROTOCOL_CACHE_SIZE
    ) -> None:
        self.flows: ParsedCache[Flow] = ParsedCache(flow_size)
        self.protocols: ParsedCache[Protocol] = ParsedCache(protocol_size)


def parsed_definitions(session: AsyncSession) -> ParsedDefinitions | None:
    """The caches ``session`` carries; None for a session not made by a ``Database``."""
    found = session.info.get(SESSION_INFO_KEY)
    return found if isinstance(found, ParsedDefinitions) else None
