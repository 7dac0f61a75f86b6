"""The receiver without HTTP: one payload's whole way, and bad bodies recording nothing."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_panel_receiver import MemorySessionStore, PayloadError, Receiver, Recorder
from otel_panel_receiver.sessions import SessionRules
from tests.peers import payload


def make(timeout: float = 0.0) -> tuple[Receiver, InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    recorder = Recorder(MeterProvider(metric_readers=[reader]), None)
    return Receiver(
        MemorySessionStore(), recorder, SessionRules(timeout), clock=lambda: 5.0
    ), reader


def test_start_heartbeat_end_updates() -> None:
    receiver, _ = make()
    updates = [
        receiver.handle(payload(n)) for n in ("v2-start.json", "v2-heartbeat.json", "v2-end.json")
    ]
    assert [(u.started, u.duration, u.ended) for u in updates] == [
        (True, 0.0, False), (False, 60.0, False), (False, 75.0, True),
    ]  # fmt: skip
    assert len(receiver.store) == 1


def test_flattened_heartbeat_continues_the_nested_session() -> None:
    receiver, _ = make()
    receiver.handle(payload("v2-start.json"))
    update = receiver.handle(payload("v2-heartbeat-flattened.json"))
    assert (update.started, update.duration) == (False, 60.0)


def test_fixed_timeout_caps_gaps() -> None:
    receiver, _ = make(timeout=30)
    receiver.handle(payload("v2-start.json"))
    assert receiver.handle(payload("v2-heartbeat.json")).duration == 30.0


def test_bad_body_raises_and_touches_no_session() -> None:
    receiver, _ = make()
    with pytest.raises(PayloadError):
        receiver.handle(b"{")
    assert len(receiver.store) == 0


def test_missing_time_uses_the_clock() -> None:
    receiver, _ = make()
    assert receiver.handle(b'{"uuid": "a", "type": "start"}').start_time == 5
