"""What became of every payload: counted by outcome, and each kind of rejection logged.

The panel posts with ``no-cors``: the browser hides the answer, so a panel that sends what the
receiver refuses goes unnoticed unless the receiver says so. Every payload is counted in
``grafana_analytics_payloads_total{outcome}``, and a rejection writes one log line with the
client's address and the first bytes of the problem, at most one line per reason every
``interval`` seconds (the next one says how many were not logged in between), so a flood of bad
requests cannot flood the log. Only the OpenTelemetry API is used here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final, Literal, get_args

from opentelemetry.metrics import MeterProvider

from otel_panel_receiver.throttle import Throttle
from otel_panel_receiver.version import INSTRUMENTATION_SCOPE, __version__

__all__ = ["OUTCOMES", "PAYLOADS", "Outcome", "Outcomes", "excerpt"]

#: The instrument's name; the Prometheus exposition appends ``_total``.
PAYLOADS: Final = "grafana_analytics_payloads"

Outcome = Literal[
    "accepted",
    "malformed",
    "too_large",
    "unreadable",
    "timed_out",
    "unauthorized",
    "forbidden_origin",
    "rate_limited",
    "grafana_unavailable",
    "store_unavailable",
    "internal_error",
]
#: Every outcome, accepted first: the values of the ``outcome`` label.
OUTCOMES: Final[tuple[Outcome, ...]] = get_args(Outcome)
_EXCERPT: Final = 64

log = logging.getLogger(__name__)


def excerpt(body: bytes) -> str:
    """Return the first bytes of ``body`` as printable text, safe for any log line."""
    text = repr(body[:_EXCERPT])[2:-1]
    return text + ("..." if len(body) > _EXCERPT else "")


class Outcomes:
    """Count payloads by outcome; log rejections, one line per reason per ``interval`` at most."""

    def __init__(
        self,
        meter_provider: MeterProvider,
        *,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        meter = meter_provider.get_meter(INSTRUMENTATION_SCOPE, __version__)
        self._payloads = meter.create_counter(
            PAYLOADS,
            unit="{payload}",
            description="Payloads received, by outcome: accepted, or why they were refused.",
        )
        self._attributes = {outcome: {"outcome": outcome} for outcome in OUTCOMES}
        self._throttle = Throttle(interval, clock)

    def accepted(self) -> None:
        """Count one accepted payload."""
        self._payloads.add(1, self._attributes["accepted"])

    def count(self, outcome: Outcome) -> None:
        """Count one payload with ``outcome``, logging nothing (its caller logs)."""
        self._payloads.add(1, self._attributes[outcome])

    def rejected(self, outcome: Outcome, *, status: int, client: str, detail: str) -> None:
        """Count one refused payload; log it unless a line for ``outcome`` went out lately.

        ``detail`` says what was wrong (with the first bytes of the body where they help).
        """
        self._payloads.add(1, self._attributes[outcome])
        unlogged = self._throttle.admit(outcome)
        if unlogged is None:
            return
        fields: dict[str, object] = {
            "outcome": outcome,
            "status": status,
            "client": client,
            "detail": detail,
        }
        if unlogged:
            fields["not_logged_since_last"] = unlogged
        log.warning("Payload refused", extra={"fields": fields})
