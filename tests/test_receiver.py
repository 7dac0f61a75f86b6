"""The receiver without HTTP: one payload's whole way, and bad bodies recording nothing."""

from __future__ import annotations

import pytest

from otel_panel_receiver import MemorySessionStore, PayloadError, Receiver, Recorder
from otel_panel_receiver.sessions import SessionRules
from otel_panel_receiver.testing import FakeClock, MemoryTelemetry, sample_payload


def make_receiver(telemetry: MemoryTelemetry, clock: FakeClock, timeout: float = 0.0) -> Receiver:
    """Return a receiver with a memory store, recording into ``telemetry``."""
    recorder = Recorder(telemetry.meter_provider, telemetry.logger_provider)
    return Receiver(MemorySessionStore(), recorder, SessionRules(timeout), clock=clock)


@pytest.fixture
def receiver(telemetry: MemoryTelemetry, clock: FakeClock) -> Receiver:
    """Return a receiver in auto mode (no session timeout)."""
    return make_receiver(telemetry, clock)


def test_start_heartbeat_end_count_one_session_and_add_the_capped_gaps(
    receiver: Receiver, telemetry: MemoryTelemetry
) -> None:
    updates = [
        receiver.handle(sample_payload(n))
        for n in ("v2-start.json", "v2-heartbeat.json", "v2-end.json")
    ]
    assert [(u.started, u.duration, u.ended) for u in updates] == [
        (True, 0.0, False), (False, 60.0, False), (False, 75.0, True),
    ]  # fmt: skip
    assert len(receiver.store) == 1
    assert [v for _, v in telemetry.points("grafana_analytics_sessions")] == [1]
    assert len(telemetry.log_records()) == 3


def test_flattened_heartbeat_continues_the_nested_session(receiver: Receiver) -> None:
    receiver.handle(sample_payload("v2-start.json"))
    update = receiver.handle(sample_payload("v2-heartbeat-flattened.json"))
    assert (update.started, update.duration) == (False, 60.0)


def test_fixed_timeout_caps_gaps(telemetry: MemoryTelemetry, clock: FakeClock) -> None:
    receiver = make_receiver(telemetry, clock, timeout=30)
    receiver.handle(sample_payload("v2-start.json"))
    assert receiver.handle(sample_payload("v2-heartbeat.json")).duration == 30.0


def test_bad_body_raises_and_touches_no_session(
    receiver: Receiver, telemetry: MemoryTelemetry
) -> None:
    with pytest.raises(PayloadError):
        receiver.handle(b"{")
    assert len(receiver.store) == 0
    assert telemetry.points("grafana_analytics_sessions") == []
    assert telemetry.log_records() == ()


def test_missing_time_uses_the_clock(receiver: Receiver, clock: FakeClock) -> None:
    clock.advance(5)
    assert receiver.handle(b'{"uuid": "a", "type": "start"}').start_time == 1_700_000_005
