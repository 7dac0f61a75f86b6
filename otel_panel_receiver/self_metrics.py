"""The receiver's own state as metrics: the sessions it tracks, drops, resumes; store resets.

Only the OpenTelemetry API is used: observable instruments read the store when metrics are
collected. With a shared store, ``grafana_analytics_tracked_sessions`` counts every worker's
sessions; the eviction and expiry counters count what this process dropped, and ``/metrics``
sums them over the workers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from otel_panel_receiver.stores import SessionStore
from otel_panel_receiver.version import INSTRUMENTATION_SCOPE, __version__

__all__ = ["observe_store"]

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
        "grafana_analytics_tracked_sessions",
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
