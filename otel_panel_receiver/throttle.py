"""One log line per cause per interval: what keeps a flood of one problem out of the log."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable

__all__ = ["Throttle"]


class Throttle:
    """Admit at most one line per ``cause`` every ``interval`` seconds, and count the rest.

    The number of causes is bounded by the caller (outcomes, metric names, code locations).
    """

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._next: dict[Hashable, float] = {}
        self._held: dict[Hashable, int] = {}

    def admit(self, cause: Hashable, count: int = 1) -> int | None:
        """Return whether a line for ``cause`` may go out now, as the count held back before it.

        ``None``: a line went out lately, and ``count`` more are held back. Else the line may
        go out, and the number is how many were held back since the last one (0 for none).
        """
        now = self._clock()
        with self._lock:
            if now < self._next.get(cause, 0.0):
                self._held[cause] = self._held.get(cause, 0) + count
                return None
            self._next[cause] = now + self.interval
            return self._held.pop(cause, 0)
