"""A session store that fails fast while its backend is down, and says so once.

The stores raise :class:`StoreUnavailable` for what their backend cannot do now (a file that
cannot be written, a full disk, Redis gone or frozen past ``--store-timeout``). The guard then
refuses every call at once for ``retry_after`` seconds, so a frozen backend costs one request
the timeout and the others nothing (their threads stay free for the next requests and for
``/healthz``); after that one call at a time probes the backend while the others are still
refused, until a call succeeds. The way down and the way back are each logged once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Final, ParamSpec, TypeVar

from otel_panel_receiver.errors import StoreUnavailable
from otel_panel_receiver.stores._protocol import R, SessionStore, Update

P = ParamSpec("P")
T = TypeVar("T")

__all__ = ["RETRY_AFTER", "GuardedStore"]

log = logging.getLogger(__name__)

#: Seconds a failed store is not tried again (and what ``Retry-After`` tells the client).
RETRY_AFTER: Final = 1.0


class GuardedStore:
    """Wrap ``store``: after a failure, refuse calls for ``retry_after`` s, then probe it.

    ``down`` is the reason the store is refusing now, ``""`` while it works.
    """

    def __init__(
        self,
        store: SessionStore,
        *,
        retry_after: float = RETRY_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.retry_after = retry_after
        self.down = ""
        self.failures = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._retry_at = 0.0
        self._probing = False
        self._refused = 0

    # The store's own figures (``stores/_bounds.py``), read by the receiver and self-metrics.
    @property
    def evicted(self) -> int:
        """Sessions the store evicted to stay within its size."""
        return int(getattr(self.store, "evicted", 0))

    @property
    def expired(self) -> int:
        """Sessions the store forgot for idleness."""
        return int(getattr(self.store, "expired", 0))

    @property
    def resumed(self) -> int:
        """Evicted sessions that came back and continued from their tombstone."""
        return int(getattr(self.store, "resumed", 0))

    @property
    def resets(self) -> int:
        """Times the store was found emptied or replaced under the receiver."""
        return int(getattr(self.store, "resets", 0))

    @property
    def reset_at(self) -> float:
        """When the store was last found emptied or replaced (unix seconds, 0 for never)."""
        return float(getattr(self.store, "reset_at", 0.0))

    def _admit(self) -> None:
        if not self.down:
            return
        now = self._clock()
        with self._lock:
            if not self.down:
                return
            if now < self._retry_at or self._probing:
                self._refused += 1
                raise StoreUnavailable(self.down)
            self._probing = True

    def _failed(self, exc: StoreUnavailable) -> None:
        with self._lock:
            was_down = bool(self.down)
            self.down = str(exc)
            self.failures += 1
            self._retry_at = self._clock() + self.retry_after
            self._probing = False
        if not was_down:
            log.error(
                "Session store unavailable; payloads are answered 503 until it is back",
                extra={"fields": {"reason": str(exc), "retry_after": self.retry_after}},
            )

    def _succeeded(self) -> None:
        if not self.down:
            return
        with self._lock:
            reason, refused = self.down, self._refused
            self.down, self._probing, self._refused = "", False, 0
        log.warning(
            "Session store available again",
            extra={"fields": {"was": reason, "refused_meanwhile": refused}},
        )

    def _call(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        # The store's method itself, not a lambda around it, and the state read here: this
        # runs for every payload (once more for a start), and a healthy store costs two reads.
        if self.down:
            self._admit()
        try:
            result = call(*args, **kwargs)
        except StoreUnavailable as exc:
            self._failed(exc)
            raise
        except BaseException:
            with self._lock:
                self._probing = False  # not the backend's fault: let the next call probe
            raise
        if self.down:
            self._succeeded()
        return result

    def apply(self, key: int, fn: Update[R]) -> R:
        """Run the store's ``apply``, unless it failed within the last ``retry_after`` s."""
        return self._call(self.store.apply, key, fn)

    def get(self, key: int) -> int | None:
        """Return the session's packed state, or ``None``."""
        return self._call(self.store.get, key)

    def secret(self, name: str, ttl: float) -> bytes:
        """Return the store's secret under ``name``."""
        return self._call(self.store.secret, name, ttl)

    def mark(self, key: int, ttl: float) -> bool:
        """Record ``key``; return whether it was new."""
        return self._call(self.store.mark, key, ttl)

    def ping(self) -> None:
        """Check that the store can take a write now; raise :class:`StoreUnavailable` if not."""
        self._call(self.store.ping)

    def __len__(self) -> int:
        return self._call(self.store.__len__)

    def sweep(self) -> int:
        """Drop the idle sessions."""
        return self._call(self.store.sweep)

    def close(self) -> None:
        """Close the store."""
        self.store.close()
