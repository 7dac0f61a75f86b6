"""Grafana's dashboards, polled: what makes "never opened" an answer rather than a silence.

With ``--grafana-url`` and a service-account token (``--grafana-token-file``, or the
``GRAFANA_TOKEN`` variable), the receiver lists every dashboard through Grafana's search API
(``type=dash-db``, paged) every ``--inventory-interval``, with the grafana-client library.
One process of the deployment polls per interval: the first to mark the interval in the shared
session store (a mark is new once per store), so workers and hosts do not poll twice, and a
poll that happens twice all the same (the memory store, a race) only writes the same list again.
The list, with when and whether the last poll worked, is kept in the usage ledger, where every
process reads it. A failed poll keeps the previous list and says why once, until a poll works;
while the last poll failed, one process of the deployment tries again every tick (a quarter of
the interval, at most a minute) rather than waiting for the next interval.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import msgspec

from otel_panel_receiver.errors import StoreUnavailable
from otel_panel_receiver.grafana_api import grafana_client, list_dashboards
from otel_panel_receiver.stores import SessionStore
from otel_panel_receiver.stores.usage import UsageLedger
from otel_panel_receiver.usage import InventoryDashboard

__all__ = ["Inventory", "InventoryState"]

log = logging.getLogger(__name__)

_BLOB: Final = "inventory"


class InventoryState(msgspec.Struct, frozen=True):
    """The last poll: when, whether it worked (and why not), the dashboards it found."""

    at: float = 0.0
    ok: bool = False
    error: str = ""
    host: str = ""
    dashboards: tuple[InventoryDashboard, ...] = ()


@dataclass
class Inventory:
    """Poll Grafana every ``interval`` seconds (one process of the deployment per interval)."""

    ledger: UsageLedger
    store: SessionStore
    url: str
    token: Callable[[], str]
    interval: float = 600.0
    clock: Callable[[], float] = time.time
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _cached: tuple[float, InventoryState] = (0.0, InventoryState())
    _failing: bool = False

    def start(self) -> None:
        """Poll in a thread of this process until :meth:`close`."""
        self._thread = threading.Thread(
            target=self._run, name="otel-panel-receiver-inventory", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self.poll_if_due()
            except Exception:  # the thread must outlive any one poll
                log.exception("Dashboard inventory poll failed")
            if self._stop.wait(self.tick):
                return

    @property
    def tick(self) -> float:
        """How often this process looks whether a poll is due: a quarter interval, at most 60 s."""
        return min(60.0, self.interval / 4)

    def poll_if_due(self) -> bool:
        """Poll if no process of the deployment has polled in this interval; return whether.

        While the last poll (of any process) failed, one process polls again every tick.
        """
        now = self.clock()
        if not self._mark(f"{int(now // self.interval)}", self.interval * 2):
            last = self.state(fresh=True)  # at 0: this interval's first poll is still under way
            if (
                last.ok
                or not last.at
                or not self._mark(f"retry:{int(now // self.tick)}", self.tick * 2)
            ):
                return False
        self.poll()
        return True

    def _mark(self, key: str, ttl: float) -> bool:
        """Mark ``key`` for this Grafana in the shared store; return whether the mark is new."""
        mark = hashlib.blake2b(f"inventory:{self.url}:{key}".encode(), digest_size=16)
        try:
            return self.store.mark(int.from_bytes(mark.digest(), "big"), ttl)
        except StoreUnavailable:
            return False

    def poll(self) -> InventoryState:
        """Ask Grafana now; keep and return what it says (the previous list if it fails)."""
        from grafana_client.client import GrafanaException

        now = self.clock()
        host = _origin(self.url)
        try:
            hits = list_dashboards(grafana_client(self.url, self.token()))
        except (GrafanaException, OSError, ValueError) as exc:
            previous = self.state(fresh=True)
            state = InventoryState(now, False, _reason(exc), host, previous.dashboards)
            if not self._failing:
                self._failing = True
                log.error(
                    "Dashboard inventory poll failed; the last list is kept",
                    extra={"fields": {"grafana_url": self.url, "reason": state.error}},
                )
        else:
            dashboards = tuple(
                InventoryDashboard(
                    uid=str(hit.get("uid", "")),
                    name=str(hit.get("title", "")),
                    folder=str(hit.get("folderTitle", "") or "General"),
                    url=urllib.parse.urljoin(host + "/", str(hit.get("url", "")).lstrip("/")),
                )
                for hit in hits
                if hit.get("uid")
            )
            state = InventoryState(now, True, "", host, dashboards)
            if self._failing:
                self._failing = False
                log.warning("Dashboard inventory poll works again",
                            extra={"fields": {"dashboards": len(dashboards)}})  # fmt: skip
        self.ledger.put_blob(_BLOB, msgspec.json.encode(state))
        self._cached = (time.monotonic(), state)
        return state

    def state(self, *, fresh: bool = False) -> InventoryState:
        """Return the last poll of any process (read from the ledger at most every 10 s)."""
        at, state = self._cached
        if not fresh and time.monotonic() - at < 10.0:
            return state
        try:
            blob = self.ledger.get_blob(_BLOB)
        except StoreUnavailable:
            return state
        state = InventoryState() if blob is None else msgspec.json.decode(blob, type=InventoryState)
        self._cached = (time.monotonic(), state)
        return state

    def close(self) -> None:
        """Stop polling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _reason(exc: Exception) -> str:
    status = getattr(exc, "status_code", 0)
    text = getattr(exc, "message", "") or str(exc)
    return f"HTTP {status}: {text}" if status else f"{type(exc).__name__}: {text}"
