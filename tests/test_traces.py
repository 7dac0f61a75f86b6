"""Session spans: one per session, ids from the uuid, events, idle and eviction closing."""

from __future__ import annotations

import time
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from otel_panel_receiver.model import SessionUpdate
from otel_panel_receiver.payload import decode
from otel_panel_receiver.sessions import session_key
from otel_panel_receiver.testing import FakeClock, MemoryTelemetry, sample_payload
from otel_panel_receiver.traces import SPAN_NAME, SessionTracer, span_id_for

UUID = "3f0c6a9e-2b7d-4c1e-9a51-7d2e4b8f6c10"
T0 = 1618803734
S = 1_000_000_000


def tracer_for(telemetry: MemoryTelemetry, clock: FakeClock, **kw: Any) -> SessionTracer:
    """Return a tracer on ``telemetry``'s provider that sweeps only when told, by ``clock``."""
    assert telemetry.tracer_provider is not None
    return SessionTracer(telemetry.tracer_provider, clock=clock, background=False, **kw)


def feed(tracer: SessionTracer, name: str, *, start: int = T0, added: float = 0.0) -> None:
    ev = decode(sample_payload(name), now=0)
    tracer.observe(session_key(ev), ev, SessionUpdate(False, added, False, start))


def only(telemetry: MemoryTelemetry) -> ReadableSpan:
    """Return the one span ended so far."""
    [span] = telemetry.spans()
    return span


def test_one_span_per_session_from_first_event_to_end(
    telemetry: MemoryTelemetry, clock: FakeClock
) -> None:
    tracer = tracer_for(telemetry, clock)
    feed(tracer, "v2-start.json")
    feed(tracer, "v2-heartbeat.json", added=60)
    assert telemetry.spans() == ()
    feed(tracer, "v2-end.json", added=75)
    span = only(telemetry)
    assert span.name == SPAN_NAME
    assert (span.start_time, span.end_time) == (T0 * S, (T0 + 185) * S)
    assert span.attributes is not None
    assert span.attributes["session.end_reason"] == "end"
    assert span.attributes["session.heartbeats"] == 1
    assert span.attributes["session.duration_counted"] == 135.0
    assert len(tracer) == 0


def test_trace_id_is_the_session_uuid_and_span_id_is_stable(
    telemetry: MemoryTelemetry, clock: FakeClock
) -> None:
    tracer = tracer_for(telemetry, clock)
    feed(tracer, "v2-start.json")
    feed(tracer, "v2-end.json")
    ctx = only(telemetry).get_span_context()
    assert ctx is not None
    assert f"{ctx.trace_id:032x}" == UUID.replace("-", "")
    assert ctx.span_id == span_id_for(int(UUID.replace("-", ""), 16))
    assert only(telemetry).parent is None


def test_span_carries_dashboard_host_user_and_variables(
    telemetry: MemoryTelemetry, clock: FakeClock
) -> None:
    tracer = tracer_for(telemetry, clock)
    feed(tracer, "v2-start.json")
    feed(tracer, "v2-end.json")
    attrs = dict(only(telemetry).attributes or {})
    assert attrs["grafana.dashboard.name"] == "Service Overview"
    assert attrs["grafana.dashboard.uid"] == "ZQZXRMXMk"
    assert attrs["grafana.host"] == "grafana.example.com"
    assert attrs["session.id"] == UUID
    assert (attrs["user.name"], attrs["user.full_name"], attrs["user.roles"]) == (
        "jdoe", "Jane Doe", ("editor",),
    )  # fmt: skip
    assert attrs["grafana.variable.instance"] == ("web-1:9100", "web-2:9100")


def test_without_users_no_user_attribute_is_set(
    telemetry: MemoryTelemetry, clock: FakeClock
) -> None:
    tracer = tracer_for(telemetry, clock, users=False)
    feed(tracer, "v2-start.json")
    feed(tracer, "v2-end.json")
    assert not [k for k in (only(telemetry).attributes or {}) if k.startswith("user.")]


def test_heartbeats_and_focus_changes_are_span_events(
    telemetry: MemoryTelemetry, clock: FakeClock
) -> None:
    tracer = tracer_for(telemetry, clock)
    feed(tracer, "v2-start.json")  # has_focus true
    blurred = sample_payload("v2-heartbeat.json").replace(b'"hasFocus": true', b'"hasFocus": false')
    ev = decode(blurred, now=0)
    tracer.observe(session_key(ev), ev, SessionUpdate(False, 60, False, T0))
    feed(tracer, "v2-end.json")  # has_focus true again
    events = [(e.name, e.timestamp, dict(e.attributes or {})) for e in only(telemetry).events]
    assert events == [
        ("heartbeat", (T0 + 60) * S, {"has_focus": False}),
        ("focus_lost", (T0 + 60) * S, {"has_focus": False}),
        ("focus_gained", (T0 + 185) * S, {"has_focus": True}),
    ]


def test_events_beyond_the_limit_are_counted_not_kept(
    telemetry: MemoryTelemetry, clock: FakeClock
) -> None:
    tracer = tracer_for(telemetry, clock, max_events=1)
    feed(tracer, "v2-start.json")
    feed(tracer, "v2-heartbeat.json")
    feed(tracer, "v2-heartbeat.json")
    feed(tracer, "v2-end.json")
    span = only(telemetry)
    assert len(span.events) == 1
    assert (span.attributes or {})["session.events_dropped"] == 1


def test_idle_session_is_closed_at_its_latest_event_by_the_sweep(
    telemetry: MemoryTelemetry, clock: FakeClock
) -> None:
    tracer = tracer_for(telemetry, clock, idle_timeout=600)
    feed(tracer, "v2-start.json")
    feed(tracer, "v2-heartbeat.json")
    clock.advance(599)
    assert tracer.sweep() == 0
    clock.advance(1)
    assert tracer.sweep() == 1
    span = only(telemetry)
    assert span.end_time == (T0 + 60) * S
    assert (span.attributes or {})["session.end_reason"] == "idle"


def test_evicted_session_is_closed(telemetry: MemoryTelemetry, clock: FakeClock) -> None:
    tracer = tracer_for(telemetry, clock)
    feed(tracer, "v2-start.json")
    tracer.dropped(int(UUID.replace("-", ""), 16), 0)
    assert (only(telemetry).attributes or {})["session.end_reason"] == "evicted"


def test_open_sessions_are_bounded_closing_the_least_recently_active(
    telemetry: MemoryTelemetry, clock: FakeClock
) -> None:
    tracer = tracer_for(telemetry, clock, max_sessions=1)
    feed(tracer, "v2-start.json")
    feed(tracer, "v2-variables-multi.json")
    assert len(tracer) == 1
    assert (only(telemetry).attributes or {})["session.id"] == UUID


def test_close_all_writes_every_open_span(telemetry: MemoryTelemetry, clock: FakeClock) -> None:
    tracer = tracer_for(telemetry, clock)
    feed(tracer, "v2-start.json")
    feed(tracer, "v2-variables-multi.json")
    tracer.close_all()
    assert {(s.attributes or {})["session.end_reason"] for s in telemetry.spans()} == {"shutdown"}
    assert len(telemetry.spans()) == 2


def test_empty_uuid_session_gets_its_key_as_session_id(
    telemetry: MemoryTelemetry, clock: FakeClock
) -> None:
    tracer = tracer_for(telemetry, clock)
    ev = decode(sample_payload("v2-heartbeat-without-start.json"), now=0)
    key = session_key(ev)
    tracer.observe(key, ev, SessionUpdate(True, 0, False, ev.time))
    tracer.close_all()
    span = only(telemetry)
    assert (span.attributes or {})["session.id"] == f"{key:032x}"
    ctx = span.get_span_context()
    assert ctx is not None and ctx.trace_id == key


def test_idle_sessions_are_closed_without_further_traffic(telemetry: MemoryTelemetry) -> None:
    assert telemetry.tracer_provider is not None
    # The real clock and the background sweeper.
    tracer = SessionTracer(telemetry.tracer_provider, idle_timeout=0.3)
    try:
        feed(tracer, "v2-start.json")
        deadline = time.monotonic() + 5
        while not telemetry.spans() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        tracer.close_all()
    assert (only(telemetry).attributes or {})["session.end_reason"] == "idle"
