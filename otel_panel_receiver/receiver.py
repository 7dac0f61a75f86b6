"""One payload's whole way through the house, without HTTP: decode, apply, record."""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec

from otel_panel_receiver.errors import PayloadError
from otel_panel_receiver.model import PanelEvent, SessionUpdate, Viewer
from otel_panel_receiver.outcomes import Outcomes, excerpt
from otel_panel_receiver.payload import decode
from otel_panel_receiver.privacy import KEY_LIFETIME, Pseudonyms
from otel_panel_receiver.recorder import Recorder
from otel_panel_receiver.sessions import SessionRules, session_key
from otel_panel_receiver.stores import SessionStore

__all__ = ["Receiver"]


class Receiver:
    """Handle panel payloads: what the web app, a non-HTTP embedder or a test calls.

    ``clock`` gives unix seconds; it stands in for the payload's ``time`` when that is missing.
    With ``outcomes``, every payload is counted as accepted or malformed (and a malformed one
    logged, rate limited).
    """

    def __init__(
        self,
        store: SessionStore,
        recorder: Recorder,
        rules: SessionRules | None = None,
        *,
        clock: Callable[[], float] = time.time,
        outcomes: Outcomes | None = None,
        viewers: Pseudonyms | None = None,
    ) -> None:
        self.store = store
        self.recorder = recorder
        self.rules = rules if rules is not None else SessionRules()
        self.outcomes = outcomes
        self._viewers = viewers
        self._clock = clock

    def handle(
        self, body: bytes, *, client: str = "", identity: Viewer | None = None
    ) -> SessionUpdate:
        """Decode one body, update its session and record the result.

        Raises ``PayloadError`` for a body that is not a panel payload; nothing is recorded
        then but the rejection (``client``, the sender's address, goes into its log line).
        With an ``identity`` (the viewer Grafana vouched for), the payload's own claims about
        who it is are ignored; its theme, time zone and locale are kept.
        """
        try:
            event = decode(body, now=int(self._clock()))
        except PayloadError as exc:
            if self.outcomes is not None:
                detail = f"{exc}; body starts {excerpt(body)!r}"
                self.outcomes.rejected("malformed", status=400, client=client, detail=detail)
            raise
        if identity is not None:
            claimed = event.user
            event = msgspec.structs.replace(
                event,
                user=msgspec.structs.replace(
                    identity,
                    light_theme=claimed.light_theme,
                    timezone=claimed.timezone,
                    locale=claimed.locale,
                ),
            )
        return self.handle_event(event)

    def handle_event(self, event: PanelEvent) -> SessionUpdate:
        """Update the session of an already decoded event and record the result."""
        key = session_key(event)
        update = self.store.apply(key, self.rules.updater(event))
        first_visit = False
        if update.started and self._viewers is not None and (event.user.id or event.user.login):
            first_visit = self.store.mark(self._viewers.marker(event), KEY_LIFETIME)
        self.recorder.record(event, update, key, first_visit=first_visit)
        if self.outcomes is not None:
            self.outcomes.accepted()
        return update
