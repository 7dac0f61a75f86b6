"""A bounded memory of values derived from what clients send, keyed by it.

A viewer's payloads repeat their groups (host, dashboard, viewer, variables) unchanged, so what
the receiver derives from a group (its model value, its labels, its log fields, its markers)
is worth keeping: the next payload finds it in one lookup. What clients send is unbounded, so
the memory is not: at most ``kept`` entries (then all are forgotten and remembering starts
again: no order to maintain on a hit), and only those whose key is at most ``largest`` in
``size``. Under a flood of distinct groups it costs the misses and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TypeVar

import msgspec

__all__ = ["Memo", "text_size"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def text_size(value: object) -> int:
    """Return how many characters of text ``value`` holds: in its strings, structs and tuples."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, msgspec.Struct):
        value = msgspec.structs.astuple(value)
    if isinstance(value, tuple):
        return sum(text_size(item) for item in value)
    return 0


class Memo(dict[K, V]):
    """Remember values by key: ``memo.get(key)``, and on a miss ``memo.put(key, value)``.

    A key larger than ``largest`` by ``size`` (:func:`text_size` unless told) is not kept.
    Safe to share between threads: a race only costs a value made twice.
    """

    __slots__ = ("_largest", "_size", "kept")

    def __init__(
        self, kept: int = 1024, largest: int = 2048, size: Callable[[K], int] = text_size
    ) -> None:
        super().__init__()
        self.kept = kept
        self._largest = largest
        self._size = size

    def put(self, key: K, value: V) -> V:
        """Remember ``value`` for ``key`` if the key is small enough; return ``value``."""
        if self._size(key) <= self._largest:
            if len(self) >= self.kept:
                self.clear()
            self[key] = value
        return value
