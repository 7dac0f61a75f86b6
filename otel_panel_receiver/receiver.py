"""One payload's whole way through the house, without HTTP: decode, apply, record."""

from __future__ import annotations

import time
from collections.abc import Callable

from otel_panel_receiver.model import PanelEvent, SessionUpdate
from otel_panel_receiver.payload import decode
from otel_panel_receiver.sessions import SessionRules, SessionState, pack, session_key, unpack
from otel_panel_receiver.stores import SessionStore
from otel_panel_receiver.telemetry import Recorder

__all__ = ["Receiver"]


class Receiver:
    """Handle panel payloads: what the web app, a non-HTTP embedder or a test calls.

    ``clock`` gives unix seconds; it stands in for the payload's ``time`` when that is missing.
    """

    def __init__(
        self,
        store: SessionStore,
        recorder: Recorder,
        rules: SessionRules | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.recorder = recorder
        self.rules = rules if rules is not None else SessionRules()
        self._clock = clock

    def handle(self, body: bytes) -> SessionUpdate:
        """Decode one body, update its session and record the result.

        Raises ``PayloadError`` for a body that is not a panel payload; nothing is recorded then.
        """
        return self.handle_event(decode(body, now=int(self._clock())))

    def handle_event(self, event: PanelEvent) -> SessionUpdate:
        """Update the event's session and record the result."""
        rules = self.rules

        def step(packed: int | None) -> tuple[int, tuple[SessionState, SessionUpdate]]:
            state, update = rules.apply(None if packed is None else unpack(packed), event)
            return pack(state), (state, update)

        key = session_key(event)
        _, update = self.store.apply(key, step)
        self.recorder.record(event, update, key)
        return update
