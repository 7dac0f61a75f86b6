"""One payload's whole way through the house, without HTTP: decode, apply, record."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import msgspec

from otel_panel_receiver.errors import PayloadError, StoreUnavailable
from otel_panel_receiver.model import START, PanelEvent, SessionUpdate, Viewer
from otel_panel_receiver.outcomes import Outcomes, excerpt
from otel_panel_receiver.payload import decode
from otel_panel_receiver.privacy import KEY_LIFETIME, Pseudonyms
from otel_panel_receiver.recorder import Recorder
from otel_panel_receiver.sessions import SessionRules, session_key
from otel_panel_receiver.stores import SessionStore
from otel_panel_receiver.usage import Usage

__all__ = ["Receiver"]


class Receiver:
    """Handle panel payloads: what the web app, a non-HTTP embedder or a test calls.

    ``clock`` gives unix seconds; it stands in for the payload's ``time`` when that is missing.
    With ``outcomes``, every payload is counted as accepted or refused (and a refusal logged,
    rate limited). With ``usage``, each payload's dashboard goes to the usage ledger (the
    answers of ``usage.py``). ``recorded`` is called after each payload is recorded, before it is
    answered: the telemetry's hook (``SeriesReader.recorded``, where the counters go through
    the SDK), which collects early enough that a burst of label sets never overflows the SDK.

    One outcome per payload: recorded in full (store, counters, log) and returned, or not
    recorded at all and raised (:class:`PayloadError`, or :class:`StoreUnavailable` when the
    store cannot take the update now).

    A session the store does not know is counted as a new one, except when its event is not a
    start and the store was found emptied or replaced (``store.reset_at``: an SQLite file
    deleted or replaced, a Redis that lost its data) within the event's longest gap (the
    session timeout, or 1.25 heartbeat intervals): the session is one the store held before,
    counted then. It is adopted: tracked from this event on, not counted again, the gap
    before this event lost.
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
        recorded: Callable[[], None] | None = None,
        usage: Usage | None = None,
    ) -> None:
        self.store = store
        self.recorder = recorder
        self.rules = rules if rules is not None else SessionRules()
        self.outcomes = outcomes
        self._viewers = viewers
        self._clock = clock
        self._recorded = recorded
        self.usage = usage

    def handle(
        self, body: bytes, *, client: str = "", identity: Viewer | None = None
    ) -> SessionUpdate:
        """Decode one body, update its session and record the result.

        Raises ``PayloadError`` for a body that is not a panel payload, ``StoreUnavailable``
        when the store cannot take it now; nothing is recorded then but the refusal
        (``client``, the sender's address, goes into its log line).
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
        try:
            return self.handle_event(event)
        except StoreUnavailable as exc:
            if self.outcomes is not None:
                self.outcomes.rejected("store_unavailable", status=503, client=client,
                                       detail=str(exc))  # fmt: skip
            raise

    def handle_event(self, event: PanelEvent) -> SessionUpdate:
        """Update the session of an already decoded event and record the result.

        Raises ``StoreUnavailable``, with nothing recorded, when the store cannot take it.
        """
        key = session_key(event)
        if self._viewers is not None:
            self._viewers.prepare()  # the one store call of the recording: before the update
        # Asked in the store's transaction (for a session the store does not know): a store that
        # finds its file replaced reopens it before the update runs.
        adopt = None if event.kind is START else functools.partial(self._adopts, event)
        update = self.store.apply(key, self.rules.updater(event, adopt=adopt))
        first_visit = False
        if update.started and self._viewers is not None and (event.user.id or event.user.login):
            # The session is recorded even if the mark fails: only this visit goes uncounted.
            try:  # noqa: SIM105  # contextlib.suppress costs 0.3 µs a payload, a try nothing
                first_visit = self.store.mark(self._viewers.marker(event), KEY_LIFETIME)
            except StoreUnavailable:
                pass
        self.recorder.record(event, update, key, first_visit=first_visit)
        if self.usage is not None:
            # After the update, so it must not fail the payload: a view the ledger cannot take
            # now is lost (the store's outage is logged by its guard).
            try:  # noqa: SIM105  # as above
                self.usage.seen(event, update)
            except StoreUnavailable:
                pass
        if self.outcomes is not None:
            self.outcomes.accepted()
        if self._recorded is not None:
            self._recorded()
        return update

    def _adopts(self, event: PanelEvent) -> bool:
        """Whether a session the store does not know, at this event, is one it lost (see the
        class): the store was emptied or replaced within the event's longest gap."""
        return self._clock() - getattr(self.store, "reset_at", 0) <= self.rules.cap(event)
