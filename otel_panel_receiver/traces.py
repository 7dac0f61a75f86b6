"""Session traces: one span per dashboard session, from its first event to its end.

A session's events arrive as separate requests, so its span is written when the session closes:
at its ``end``, or when it has been idle for ``idle_timeout`` (its end never came: the tab was
closed), or when the session store evicts it. Until then this process keeps a small record per
open session: start and latest time, the latest span attributes, and up to ``max_events``
heartbeat and focus events.

The trace id is the session's key, so a session uuid *is* its trace id (dashes removed) and a
trace can be looked up by uuid; the span id is derived from it. The ids reach the SDK through
:data:`SESSION_IDS`, read by the id generator that ``export/providers.py`` installs. Only the
OpenTelemetry API is used here.
"""

from __future__ import annotations

import contextvars
import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from opentelemetry.trace import SpanKind, TracerProvider

from otel_panel_receiver.attributes import span_attributes
from otel_panel_receiver.model import END, HEARTBEAT, PanelEvent, SessionUpdate
from otel_panel_receiver.version import INSTRUMENTATION_SCOPE, __version__

__all__ = ["SESSION_IDS", "SPAN_NAME", "SessionTracer", "span_id_for", "trace_id_for"]

SPAN_NAME: Final = "grafana.dashboard.session"
_NS: Final = 1_000_000_000

#: The (trace id, span id) the next span started in this context must take.
SESSION_IDS: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "otel_panel_receiver_session_ids", default=None
)


def trace_id_for(key: int) -> int:
    """Return the trace id of a session: its 128-bit key (never the invalid 0)."""
    return key or 1


def span_id_for(key: int) -> int:
    """Return the span id of a session, derived from its key (never the invalid 0)."""
    digest = hashlib.blake2b(key.to_bytes(16, "big"), digest_size=8).digest()
    return int.from_bytes(digest, "big") or 1


class _OpenSession:
    __slots__ = ("added", "attrs", "dropped", "events", "focus", "heartbeats", "last", "start")

    def __init__(self, start: int) -> None:
        self.start = start
        self.last = start
        self.attrs: dict[str, Any] = {}
        self.events: list[tuple[str, int, bool]] = []
        self.dropped = 0
        self.heartbeats = 0
        self.focus: bool | None = None
        self.added = 0.0


class SessionTracer:
    """Keep open sessions and write one span per session when it closes.

    ``clock`` is the server's monotonic clock in seconds (idleness is judged by it, not by the
    browser's timestamps); ``max_sessions`` bounds the open records (the least recently active
    are closed first), ``max_events`` the span events kept per session. With ``background``, a
    daemon thread (started at the first event, so after a fork) sweeps idle sessions every
    tenth of ``idle_timeout`` even when no payload arrives.
    """

    def __init__(
        self,
        tracer_provider: TracerProvider,
        *,
        users: bool = True,
        idle_timeout: float = 600.0,
        max_sessions: int = 100_000,
        max_events: int = 32,
        clock: Callable[[], float] = time.monotonic,
        background: bool = True,
    ) -> None:
        self._tracer = tracer_provider.get_tracer(INSTRUMENTATION_SCOPE, __version__)
        self._users = users
        self._idle = idle_timeout
        self._max_sessions = max_sessions
        self._max_events = max_events
        self._clock = clock
        self._open: dict[int, tuple[_OpenSession, float]] = {}
        self._lock = threading.Lock()
        self._next_sweep = clock() + idle_timeout / 10
        self._background = background
        self._sweeper: threading.Thread | None = None
        self._stop = threading.Event()

    def __len__(self) -> int:
        return len(self._open)

    def observe(self, key: int, event: PanelEvent, update: SessionUpdate) -> None:
        """Add one event to its session's record; write the span if the event ends it."""
        now = self._clock()
        if self._background and self._sweeper is None:
            self._start_sweeper()
        closing: list[tuple[int, _OpenSession, str, int]] = []
        with self._lock:
            entry = self._open.pop(key, None)
            rec = entry[0] if entry is not None else _OpenSession(update.start_time)
            self._add(rec, event, update)
            if event.kind is END:
                closing.append((key, rec, "end", event.time))
            else:
                self._open[key] = (rec, now)
                if self._max_sessions and len(self._open) > self._max_sessions:
                    oldest = next(iter(self._open))
                    closing.append((oldest, self._open.pop(oldest)[0], "evicted", 0))
        for args in closing:
            self._write(*args)
        if now >= self._next_sweep:
            self.sweep()

    def _add(self, rec: _OpenSession, event: PanelEvent, update: SessionUpdate) -> None:
        rec.start = min(rec.start, update.start_time)
        rec.last = max(rec.last, event.time)
        if not rec.attrs or event.kind is not HEARTBEAT:
            # From the first and the closing payloads: heartbeats repeat the same context.
            rec.attrs = span_attributes(event, users=self._users)
        rec.added += update.duration
        if event.kind is HEARTBEAT:
            rec.heartbeats += 1
            self._event(rec, "heartbeat", event.time, event.has_focus)
        if rec.focus is not None and event.has_focus != rec.focus:
            self._event(rec, "focus_gained" if event.has_focus else "focus_lost", event.time,
                        event.has_focus)  # fmt: skip
        rec.focus = event.has_focus

    def _event(self, rec: _OpenSession, name: str, t: int, focus: bool) -> None:
        if len(rec.events) < self._max_events:
            rec.events.append((name, t, focus))
        else:
            rec.dropped += 1

    def _start_sweeper(self) -> None:
        with self._lock:
            if self._sweeper is not None:
                return
            self._sweeper = threading.Thread(
                target=self._sweep_forever, name="otel-panel-receiver-span-sweeper", daemon=True
            )
        self._sweeper.start()

    def _sweep_forever(self) -> None:
        period = min(max(self._idle / 10, 0.2), 60.0)
        while not self._stop.wait(period):
            self.sweep()

    def dropped(self, key: int, state: int) -> None:
        """Close the span of a session the store dropped; an ``EvictionCallback``."""
        with self._lock:
            entry = self._open.pop(key, None)
        if entry is not None:
            self._write(key, entry[0], "evicted", 0)

    def sweep(self) -> int:
        """Close the spans of sessions idle for ``idle_timeout``; return how many."""
        now = self._clock()
        self._next_sweep = now + self._idle / 10
        idle: list[tuple[int, _OpenSession]] = []
        with self._lock:
            for key, (rec, seen) in self._open.items():
                if now - seen < self._idle:
                    break
                idle.append((key, rec))
            for key, _ in idle:
                del self._open[key]
        for key, rec in idle:
            self._write(key, rec, "idle", 0)
        return len(idle)

    def close_all(self) -> None:
        """Stop the sweeper and close every open span (their sessions end with the process)."""
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join(timeout=5)
        with self._lock:
            items = [(key, rec) for key, (rec, _) in self._open.items()]
            self._open.clear()
        for key, rec in items:
            self._write(key, rec, "shutdown", 0)

    def _write(self, key: int, rec: _OpenSession, reason: str, end: int) -> None:
        end = max(end or rec.last, rec.start)
        token = SESSION_IDS.set((trace_id_for(key), span_id_for(key)))
        try:
            span = self._tracer.start_span(
                SPAN_NAME,
                kind=SpanKind.INTERNAL,
                attributes=rec.attrs,
                start_time=rec.start * _NS,
            )
        finally:
            SESSION_IDS.reset(token)
        if not rec.attrs.get("session.id"):  # Post Start off: the derived key stands in
            span.set_attribute("session.id", f"{key:032x}")
        for name, t, focus in rec.events:
            span.add_event(name, {"has_focus": focus}, timestamp=t * _NS)
        span.set_attribute("session.end_reason", reason)
        span.set_attribute("session.heartbeats", rec.heartbeats)
        span.set_attribute("session.duration_counted", rec.added)
        if rec.dropped:
            span.set_attribute("session.events_dropped", rec.dropped)
        span.end(end_time=end * _NS)
