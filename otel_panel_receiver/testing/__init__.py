"""Helpers for testing an application that embeds the receiver (the receiver's tests use them).

* :func:`in_memory_telemetry` gives providers whose metrics, log records and spans are read
  back in the test (:class:`MemoryTelemetry`), to pass as ``create_app(telemetry=...)``;
* :class:`FakeClock` is a clock the test moves by hand;
* :func:`sample_payload` returns one of the sample payloads of the Grafana panel (the names in
  :data:`SAMPLE_PAYLOADS`): starts, heartbeats and ends of one session, flattened and 1.x forms,
  an anonymous viewer, many variables.

Example::

    from falcon.testing import TestClient
    from otel_panel_receiver import create_app
    from otel_panel_receiver.testing import in_memory_telemetry, sample_payload

    telemetry = in_memory_telemetry()
    client = TestClient(create_app(telemetry=telemetry))
    assert client.simulate_post("/write", body=sample_payload("v2-start.json")).status_code == 201
    [(labels, sessions)] = telemetry.points("grafana_analytics_sessions")
"""

from __future__ import annotations

from importlib import resources
from typing import Final

from otel_panel_receiver.export.memory import MemoryTelemetry, in_memory_telemetry

__all__ = [
    "SAMPLE_PAYLOADS",
    "FakeClock",
    "MemoryTelemetry",
    "in_memory_telemetry",
    "sample_payload",
]

_PAYLOADS: Final = resources.files(__name__) / "payloads"

#: The names of the sample payloads, sorted.
SAMPLE_PAYLOADS: Final = tuple(
    sorted(entry.name for entry in _PAYLOADS.iterdir() if entry.name.endswith(".json"))
)


def sample_payload(name: str) -> bytes:
    """Return the body of the sample payload ``name`` (one of :data:`SAMPLE_PAYLOADS`)."""
    if name not in SAMPLE_PAYLOADS:
        raise LookupError(f"no sample payload {name!r}; there are: {', '.join(SAMPLE_PAYLOADS)}")
    return (_PAYLOADS / name).read_bytes()


class FakeClock:
    """A clock that stands still until told: call it for the time, :meth:`advance` to move it."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        """Return the current time."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        self.now += seconds
