"""A small LRU of parsed definitions, keyed by (key, version, checksum).

A checksum names one exact YAML source, so an entry can never be stale; the
bound keeps memory flat however many versions a long-running process meets.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
CacheKey = tuple[str, int, str]


class ParsedCache(Generic[T]):
    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[CacheKey, T] = OrderedDict()

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
