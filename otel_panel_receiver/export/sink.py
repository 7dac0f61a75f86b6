"""Where log lines go: a stream written by a thread of its own, so a stuck reader stops nobody.

Each line is rendered by the request's thread and queued; one writer thread per stream takes
everything queued, writes it in one call and flushes. A request never waits on the stream: a
full pipe (a log shipper that stopped reading), a full disk or a closed terminal cost it
nothing. What cannot be written is dropped and counted instead: lines past
:data:`MAX_PENDING` queued bytes (``backlog``), and lines whose write failed (``error``); the
first drop of each kind after a good spell is reported on stderr.

A stream that is no file of the operating system (a ``StringIO``, a test's capture) cannot
block: it is written at once, in the caller's thread.

Lines are kept in the order they were queued. :meth:`LineSink.flush` waits, up to a timeout,
for what was queued before it: the app's ``close`` calls it, so a graceful stop writes every
line; ``kill -9`` loses what was still queued, at most :data:`GATHER` (20 ms) of lines under load
(never counts: the counters do not depend on the log).
"""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref
from collections import deque
from typing import IO, Final

__all__ = ["MAX_PENDING", "LineSink", "sink_for"]

#: Bytes of lines that may wait for the stream; past it, new lines are dropped.
MAX_PENDING: Final = 8 << 20
#: Seconds the writer lets lines gather before it writes them: a write and a wake-up per
#: batch, not per line (per line, the thread taking the GIL at each one cost the request
#: threads more than the writes did). Under granian at ~11,000 payloads/s, 20 ms served about
#: 10 % more payloads than 2 ms (each wake-up takes the GIL from the event loop); 50 ms no more.
GATHER: Final = 0.02


class LineSink:
    """Queue lines for ``stream`` and write them from a thread; never block the caller."""

    def __init__(self, stream: IO[str], *, max_pending: int = MAX_PENDING) -> None:
        self._stream = stream
        self._threaded = _is_file(stream)
        self._max = max_pending
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[str] = deque()
        self._bytes = 0
        self._queued = 0  # lines ever queued, and ever written or dropped by the thread
        self._done = 0
        self._thread: threading.Thread | None = None
        self._idle = False  # the writer waits for a line
        #: Lines dropped, by reason: ``backlog`` (the queue was full), ``error`` (write failed).
        self.dropped = {"backlog": 0, "error": 0}
        self._unreported: set[str] = set()  # drops not yet said on stderr
        self._said = False  # a drop was said, and no line was written since
        os.register_at_fork(after_in_child=self._after_fork)

    def write(self, line: str) -> None:
        """Queue ``line`` (with its newline); drop it if the queue is full."""
        if not self._threaded:
            with self._cond:
                if not self._put(line):
                    self._drop("error", 1)
            return
        with self._cond:
            if self._bytes + len(line) > self._max:
                self._drop("backlog", 1)
                return
            self._queue.append(line)
            self._bytes += len(line)
            self._queued += 1
            if self._thread is None:
                self._start()
            elif self._idle:
                self._idle = False
                self._cond.notify()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until what was queued before the call is written; return whether it was."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._queued
            while self._done < target:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None:
                    return False
                self._cond.wait(left)
        return True

    def _start(self) -> None:  # under the lock
        self._thread = threading.Thread(
            target=self._run, name="otel-panel-receiver-log", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._idle = True
                    self._cond.wait()
                    self._idle = False
            time.sleep(GATHER)
            with self._cond:
                lines = list(self._queue)
                self._queue.clear()
            text = "".join(lines)
            ok = self._put(text)
            with self._cond:
                self._bytes -= len(text)
                self._done += len(lines)
                if not ok:
                    self._drop("error", len(lines))
                unreported, self._unreported = self._unreported, set()
                self._cond.notify_all()
            if unreported and not self._said:
                self._say(unreported)
            self._said = bool(unreported) or (self._said and not ok)

    def _put(self, text: str) -> bool:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # a full disk, a closed pipe or stream
            return False
        return True

    def _drop(self, reason: str, n: int) -> None:  # under the lock
        self.dropped[reason] += n
        self._unreported.add(reason)

    @staticmethod
    def _say(reasons: set[str]) -> None:
        """Say on stderr, from the writer thread, that lines were dropped and why."""
        why = {"backlog": "the stream is not keeping up", "error": "writing to it failed"}
        try:
            sys.stderr.write(
                "otel-panel-receiver: log lines dropped ("
                + "; ".join(why[r] for r in sorted(reasons))
                + "); counted in grafana_analytics_log_lines_dropped_total\n"
            )
            sys.stderr.flush()
        except (OSError, ValueError):
            pass

    def _after_fork(self) -> None:
        # Only the forking thread exists in the child: the writer thread must be started again.
        self._cond = threading.Condition(threading.Lock())
        self._thread = None
        self._idle = False
        self._queue.clear()
        self._bytes = self._queued = self._done = 0


def _is_file(stream: IO[str]) -> bool:
    try:
        stream.fileno()
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is an OSError
        return False
    return True


_SINKS: weakref.WeakKeyDictionary[IO[str], LineSink] = weakref.WeakKeyDictionary()
_SINKS_LOCK: Final = threading.Lock()


def sink_for(stream: IO[str] | None) -> LineSink:
    """Return the one sink of ``stream`` (stdout when ``None``): its lines keep their order."""
    stream = stream if stream is not None else sys.stdout
    with _SINKS_LOCK:
        sink = _SINKS.get(stream)
        if sink is None:
            sink = _SINKS[stream] = LineSink(stream)
        return sink
