"""The in-process session store: a dict in least-recently-active order, with a lock."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Final

from otel_panel_receiver.stores._bounds import Bounded
from otel_panel_receiver.stores._protocol import EvictionCallback, R, Update

__all__ = ["MemorySessionStore"]

_TOUCH_BITS: Final = 32
_TOUCH_MASK: Final = (1 << _TOUCH_BITS) - 1


class MemorySessionStore(Bounded):
    """Keep session states in this process, bounded by size and by idleness.

    The dict is kept in order of last activity (each update re-inserts its key), so the least
    recently active sessions are at its front. Past ``max_size`` sessions the oldest 1% are
    evicted together: one scan of the front instead of one per insert. Sessions idle for
    ``idle_ttl`` seconds are dropped by :meth:`sweep`, which :meth:`apply` runs by itself at most
    every ``idle_ttl / 10`` seconds. Nothing is ever flushed wholesale. ``max_size`` 0 means no
    size bound; ``idle_ttl`` 0 means no idle expiry.

    Each entry is one ``int``: the packed state shifted left by 32 bits, or'ed with the time of
    last activity in whole seconds since the store was made. Evicted entries wait in a second
    dict, at most :attr:`tombstones` of them, for their session to come back.
    """

    def __init__(
        self,
        *,
        max_size: int = 100_000,
        idle_ttl: float = 86_400.0,
        clock: Callable[[], float] = time.monotonic,
        on_evict: EvictionCallback | None = None,
    ) -> None:
        super().__init__(max_size=max_size, idle_ttl=idle_ttl, now=0, on_evict=on_evict)
        self._clock = clock
        self._epoch = clock()
        self._sessions: dict[int, int] = {}
        self._evicted: dict[int, int] = {}  # tombstones, in order of eviction
        self._secrets: dict[str, tuple[bytes, float]] = {}
        self._marks: dict[int, float] = {}  # in order of expiry: one ttl for every mark
        self._lock = threading.Lock()

    def _now(self) -> int:
        return int(self._clock() - self._epoch) & _TOUCH_MASK

    def apply(self, key: int, fn: Update[R]) -> R:
        """Run ``fn`` on the session's packed state and store the result, under the lock."""
        now = int(self._clock() - self._epoch) & _TOUCH_MASK  # _now(), without the call
        if now >= self._next_sweep and self._sweep_due(now):
            self.sweep()
        sessions = self._sessions
        with self._lock:
            entry = sessions.pop(key, None)
            if entry is None and self._evicted:
                entry = self._unearth(key, now)
            try:
                state, result = fn(None if entry is None else entry >> _TOUCH_BITS)
            except BaseException:
                if entry is not None:  # the update failed: the session stays as it was
                    sessions[key] = entry
                raise
            sessions[key] = (state << _TOUCH_BITS) | now
            if not self.max_size or len(sessions) <= self.max_size:
                return result
            victims = list(itertools.islice(sessions, self.batch))
            self._bury(victims)
            dropped = self._take(iter(victims))
        self._dropped(dropped, idle=False)
        return result

    def _unearth(self, key: int, now: int) -> int | None:
        """Return an evicted session's entry, unless it has been idle too long (under the lock)."""
        entry = self._evicted.pop(key, None)
        if entry is None or (self.idle_ttl and now - (entry & _TOUCH_MASK) >= self.idle_ttl):
            return None
        with self._counting:
            self.resumed += 1
        return entry

    def _bury(self, keys: list[int]) -> None:
        """Keep the entries of evicted sessions, the most recent :attr:`tombstones` (locked)."""
        tombs = self._evicted
        for key in keys:
            tombs[key] = self._sessions[key]
        for old in list(itertools.islice(tombs, max(0, len(tombs) - self.tombstones))):
            del tombs[old]

    def sweep(self) -> int:
        """Drop every session idle for ``idle_ttl`` seconds or more; return how many."""
        if not self.idle_ttl:
            return 0
        now = self._now()
        with self._lock:
            idle = itertools.takewhile(
                lambda key: now - (self._sessions[key] & _TOUCH_MASK) >= self.idle_ttl,
                self._sessions,
            )
            dropped = self._take(idle)
            tombs = self._evicted
            for key in [k for k, e in tombs.items() if now - (e & _TOUCH_MASK) >= self.idle_ttl]:
                del tombs[key]
        return self._dropped(dropped, idle=True)

    def _take(self, keys: Iterator[int]) -> list[tuple[int, int]]:
        victims = list(keys)  # the iterator reads the dict: finish it before popping
        return [(key, self._sessions.pop(key) >> _TOUCH_BITS) for key in victims]

    def get(self, key: int) -> int | None:
        """Return the session's packed state, or ``None``; a read that is not activity."""
        entry = self._sessions.get(key)
        return None if entry is None else entry >> _TOUCH_BITS

    def secret(self, name: str, ttl: float) -> bytes:
        """Return the secret kept under ``name`` in this process, made at the first call."""
        now = self._clock()
        with self._lock:
            for old in [k for k, (_, until) in self._secrets.items() if until <= now]:
                del self._secrets[old]
            if name not in self._secrets:
                self._secrets[name] = (os.urandom(32), now + ttl)
            return self._secrets[name][0]

    def mark(self, key: int, ttl: float) -> bool:
        """Record ``key`` in this process; return whether it was new (at most ``max_size``)."""
        now = self._clock()
        with self._lock:
            marks = self._marks
            if marks and marks[next(iter(marks))] <= now:  # the oldest has expired: not usually
                expired = list(itertools.takewhile(lambda k: marks[k] <= now, marks))
                for old in expired:
                    del marks[old]
            if key in marks:
                return False
            if self.max_size and len(marks) >= self.max_size:
                del marks[next(iter(marks))]
            marks[key] = now + ttl
            return True

    def ping(self) -> None:
        """Nothing to check: the store is this process's memory."""

    def __len__(self) -> int:
        return len(self._sessions)

    def close(self) -> None:
        """Forget every session (nothing is held open)."""
        with self._lock:
            self._sessions.clear()
            self._evicted.clear()
            self._secrets.clear()
            self._marks.clear()
