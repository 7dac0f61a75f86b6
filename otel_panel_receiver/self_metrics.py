"""The receiver's own state as metrics: sessions tracked, dropped, resumed; store resets; and
the answers about dashboards: each one's last view, and Grafana's inventory.

Only the OpenTelemetry API is used: observable instruments read the store when metrics are
collected. With a shared store, ``grafana_analytics_tracked_sessions`` counts every worker's
sessions; the eviction and expiry counters count what this process dropped, and ``/metrics``
sums them over the workers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from otel_panel_receiver.stores import SessionStore
from otel_panel_receiver.version import INSTRUMENTATION_SCOPE, __version__

__all__ = [
    "DASHBOARD_INFO",
    "INVENTORY_UP",
    "LAST_VIEW",
    "TRACKED",
    "observe_dashboards",
    "observe_store",
]

#: Instrument names (the Prometheus exposition appends the unit: ``LAST_VIEW`` + ``_seconds``).
TRACKED = "grafana_analytics_tracked_sessions"
LAST_VIEW = "grafana_analytics_dashboard_last_view_timestamp"
DASHBOARD_INFO = "grafana_analytics_dashboard_info"
INVENTORY_UP = "grafana_analytics_inventory_up"

T = TypeVar("T")

log = logging.getLogger(__name__)


def observe_store(meter_provider: MeterProvider, store: SessionStore) -> None:
    """Report the store's size and what it dropped, at every collection."""
    meter = meter_provider.get_meter(INSTRUMENTATION_SCOPE, __version__)

    def tracked(options: CallbackOptions) -> Iterable[Observation]:
        try:
            return [Observation(len(store))]
        except Exception:  # a store that cannot answer now: no figure, rather than a wrong one
            return []

    def dropped(attribute: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(getattr(store, attribute, 0))]

        return observe

    meter.create_observable_gauge(
        TRACKED,
        callbacks=[tracked],
        unit="{session}",
        description="Sessions the session store holds now.",
    )
    meter.create_observable_counter(
        "grafana_analytics_evicted_sessions",
        callbacks=[dropped("evicted")],
        unit="{session}",
        description="Sessions dropped to stay within --max-cache-size (least recently active).",
    )
    meter.create_observable_counter(
        "grafana_analytics_expired_sessions",
        callbacks=[dropped("expired")],
        unit="{session}",
        description="Sessions forgotten after --session-ttl without an event.",
    )
    meter.create_observable_counter(
        "grafana_analytics_resumed_sessions",
        callbacks=[dropped("resumed")],
        unit="{session}",
        description="Evicted sessions that came back and continued from their tombstone.",
    )
    meter.create_observable_counter(
        "grafana_analytics_session_store_resets",
        callbacks=[dropped("resets")],
        unit="{reset}",
        description=(
            "Times the shared session store was found emptied or replaced under the receiver "
            "(an SQLite file deleted or replaced, a Redis that lost its data)."
        ),
    )


def observe_dashboards(
    meter_provider: MeterProvider,
    last_views: Callable[[], Iterable[tuple[dict[str, str], float]]],
    inventory: Callable[[], tuple[bool, Iterable[dict[str, str]]]] | None = None,
    *,
    every: float = 30.0,
    changed: Callable[[], int] | None = None,
) -> None:
    """Report each dashboard's last view, and the inventory when there is one.

    The readers collect every second; the ledger and the inventory are read at most every
    ``every`` seconds, and not at all while they cannot answer (no figure then, rather than a
    wrong one). ``changed`` counts this process's writes to the ledger: when it moved, the last
    views are read again after a second already.
    """
    meter = meter_provider.get_meter(INSTRUMENTATION_SCOPE, __version__)
    views: _Every[list[tuple[dict[str, str], float]]] = _Every(
        last_views, every, [], changed=changed
    )
    meter.create_observable_gauge(
        LAST_VIEW,
        callbacks=[lambda options: [Observation(at, labels) for labels, at in views()]],
        unit="s",
        description=(
            "When each dashboard was last viewed (unix seconds, the receiver's clock), from "
            "the usage ledger the workers and hosts share: 'not opened for 90 days' without a "
            "90-day range query."
        ),
    )
    if inventory is None:
        return
    polled: _Every[tuple[bool, list[dict[str, str]]]] = _Every(inventory, every, (False, []))
    meter.create_observable_gauge(
        DASHBOARD_INFO,
        callbacks=[lambda options: [Observation(1, labels) for labels in polled()[1]]],
        description="Each dashboard of Grafana's inventory (1), with its folder and url.",
    )
    meter.create_observable_gauge(
        INVENTORY_UP,
        callbacks=[lambda options: [Observation(1 if polled()[0] else 0)]],
        description="Whether the last poll of Grafana's dashboards worked (0: see the log).",
    )


class _Every(Generic[T]):
    """Call ``fn`` at most every ``every`` seconds (every second while ``changed`` moves);
    keep the last answer when it fails."""

    def __init__(
        self,
        fn: Callable[[], Any],
        every: float,
        initial: T,
        *,
        changed: Callable[[], int] | None = None,
    ) -> None:
        self._fn = fn
        self._every = every
        self._changed = changed
        self._seen = -1
        self._value: T = initial
        self._at = -every
        self._lock = threading.Lock()

    def __call__(self) -> T:
        now = time.monotonic()
        with self._lock:
            moved = self._changed is not None and self._changed() != self._seen
            if now - self._at >= self._every or (moved and now - self._at >= 1.0):
                self._at = now
                if self._changed is not None:
                    self._seen = self._changed()
                try:
                    self._value = self._fn()
                except Exception:  # a store that cannot answer now: the last figures stay
                    log.debug("dashboard metrics not refreshed", exc_info=True)
        return self._value
