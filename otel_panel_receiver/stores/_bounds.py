"""What every store shares: its size and idleness bounds, the sweep schedule, eviction reports."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Final

from otel_panel_receiver.errors import ConfigError
from otel_panel_receiver.stores._protocol import EvictionCallback

__all__ = ["Bounded"]

_MIN_TOMBSTONES: Final = 64


class Bounded:
    """Base of the stores: ``max_size`` sessions at most, none idle ``idle_ttl`` seconds or more.

    ``max_size`` 0 means no size bound and ``idle_ttl`` 0 no idle expiry. Past ``max_size``
    a store evicts the least recently active :attr:`batch` sessions (1 %) in one step, and it
    sweeps idle sessions by itself, from ``apply``, at most every ``idle_ttl / 10`` seconds.
    ``evicted`` and ``expired`` count the sessions dropped for size and for idleness;
    ``on_evict`` hears of each one, in the process that dropped it.

    An evicted session leaves a tombstone, its state, among at most :attr:`tombstones` (a
    tenth of ``max_size``, the most recent kept): if it comes back before its tombstone goes,
    it continues where it was (``resumed`` counts them) instead of starting over as a new
    session with its gap lost. An idle session leaves none: it comes back as a new session.
    ``resets`` counts the times a shared store was found emptied or replaced under the
    receiver, ``reset_at`` is when it last was (unix seconds, 0 for never).
    """

    def __init__(
        self, *, max_size: int, idle_ttl: float, now: float, on_evict: EvictionCallback | None
    ) -> None:
        if max_size < 0:
            raise ConfigError(f"the session store's max size must be >= 0, got {max_size}")
        if idle_ttl < 0:
            raise ConfigError(f"the session store's idle TTL must be >= 0 s, got {idle_ttl}")
        self.max_size = max_size
        self.idle_ttl = idle_ttl
        self.batch = max(1, max_size // 100)
        self.tombstones = max(_MIN_TOMBSTONES, max_size // 10) if max_size else 0
        self.evicted = 0
        self.expired = 0
        self.resumed = 0
        self.resets = 0
        self.reset_at = 0.0
        self._on_evict = on_evict
        self._sweep_every = idle_ttl / 10
        self._next_sweep = now + self._sweep_every
        self._counting = threading.Lock()  # the counters are shared by the worker's threads

    def _sweep_due(self, now: float) -> bool:
        """Return whether ``apply`` should sweep first; a true answer starts the next period."""
        if not self.idle_ttl or now < self._next_sweep:
            return False
        self._next_sweep = now + self._sweep_every
        return True

    def _dropped(self, sessions: Iterable[tuple[int, int]], *, idle: bool) -> int:
        """Count and report the ``(key, packed state)`` a store dropped; return how many."""
        dropped = list(sessions)
        if not dropped:  # the common case: no lock taken
            return 0
        with self._counting:
            if idle:
                self.expired += len(dropped)
            else:
                self.evicted += len(dropped)
        if self._on_evict is not None:
            for key, state in dropped:
                self._on_evict(key, state)
        return len(dropped)
