"""A bounded memory of values derived from what clients send, keyed by it.

A viewer's payloads repeat their groups (host, dashboard, viewer, variables) unchanged, so what
the receiver derives from a group (its model value, its labels, its log fields, its markers)
is worth keeping: the next payload finds it in one lookup. What clients send is unbounded, so
the memory is not: at most ``kept`` entries and ``budget`` bytes of keys (their size in JSON,
unless told), none larger than ``largest``; when either would be passed, every entry is
forgotten at once and remembering starts again (no order to maintain on a hit). Under a flood
of distinct groups, or with more viewers active at once than a memory holds, lookups miss and
a payload costs about what it would without the memory.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Final, TypeVar

import msgspec

__all__ = ["KEPT", "Memo", "json_size"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: The default bounds: entries, bytes of keys in all, bytes of one key.
KEPT: Final = 4096
BUDGET: Final = 2 << 20
LARGEST: Final = 4096

_ENCODE: Final = msgspec.json.Encoder().encode


def json_size(value: object) -> int:
    """Return the size of ``value`` in JSON: what a client sent of it, within a few bytes."""
    return len(_ENCODE(value))


class Memo(dict[K, V]):
    """Remember values by key: ``memo.get(key)``, and on a miss ``memo.put(key, value)``.

    Safe to share between threads: a race only costs a value made twice (or a key's size
    counted twice, which empties the memory a little early).
    """

    __slots__ = ("_budget", "_largest", "_size", "_used", "kept")

    def __init__(
        self,
        kept: int = KEPT,
        budget: int = BUDGET,
        largest: int = LARGEST,
        size: Callable[[K], int] = json_size,
    ) -> None:
        super().__init__()
        self.kept = kept
        self._budget = budget
        self._largest = largest
        self._size = size
        self._used = 0

    def put(self, key: K, value: V) -> V:
        """Remember ``value`` for ``key`` if the key is small enough; return ``value``."""
        size = self._size(key)
        if size <= self._largest:
            if len(self) >= self.kept or self._used + size > self._budget:
                self.clear()
                self._used = 0
            self[key] = value
            self._used += size
        return value
