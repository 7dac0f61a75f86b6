"""Session spans: one per session, ids from the uuid, events, idle and eviction closing."""

from __future__ import annotations

import time
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_panel_receiver.export.providers import SessionIdGenerator
from otel_panel_receiver.model import SessionUpdate
from otel_panel_receiver.payload import decode
from otel_panel_receiver.sessions import session_key
from otel_panel_receiver.traces import SPAN_NAME, SessionTracer, span_id_for
from tests.peers import payload

UUID = "3f0c6a9e-2b7d-4c1e-9a51-7d2e4b8f6c10"
T0 = 1618803734
S = 1_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def setup(**kw: Any) -> tuple[SessionTracer, InMemorySpanExporter, Clock]:
    spans = InMemorySpanExporter()
    provider = TracerProvider(id_generator=SessionIdGenerator(), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(spans))
    clock = Clock()
    return SessionTracer(provider, clock=clock, background=False, **kw), spans, clock


def feed(tracer: SessionTracer, name: str, *, start: int = T0, added: float = 0.0) -> None:
    ev = decode(payload(name), now=0)
    tracer.observe(session_key(ev), ev, SessionUpdate(False, added, False, start))


def only(spans: InMemorySpanExporter) -> ReadableSpan:
    [span] = spans.get_finished_spans()
    return span


def test_one_span_per_session_from_first_event_to_end() -> None:
    tracer, spans, _ = setup()
    feed(tracer, "v2-start.json")
    feed(tracer, "v2-heartbeat.json", added=60)
    assert spans.get_finished_spans() == ()
    feed(tracer, "v2-end.json", added=75)
    span = only(spans)
    assert span.name == SPAN_NAME
    assert (span.start_time, span.end_time) == (T0 * S, (T0 + 185) * S)
    assert span.attributes is not None
    assert span.attributes["session.end_reason"] == "end"
    assert span.attributes["session.heartbeats"] == 1
    assert span.attributes["session.duration_counted"] == 135.0
    assert len(tracer) == 0


def test_trace_id_is_the_session_uuid_and_span_id_is_stable() -> None:
    tracer, spans, _ = setup()
    feed(tracer, "v2-start.json")
    feed(tracer, "v2-end.json")
    ctx = only(spans).get_span_context()
    assert ctx is not None
    assert f"{ctx.trace_id:032x}" == UUID.replace("-", "")
    assert ctx.span_id == span_id_for(int(UUID.replace("-", ""), 16))
    assert only(spans).parent is None


def test_span_carries_dashboard_host_user_and_variables() -> None:
    tracer, spans, _ = setup()
    feed(tracer, "v2-start.json")
    feed(tracer, "v2-end.json")
    attrs = dict(only(spans).attributes or {})
    assert attrs["grafana.dashboard.name"] == "Service Overview"
    assert attrs["grafana.dashboard.uid"] == "ZQZXRMXMk"
    assert attrs["grafana.host"] == "grafana.example.com"
    assert attrs["session.id"] == UUID
    assert (attrs["user.name"], attrs["user.full_name"], attrs["user.roles"]) == (
        "jdoe", "Jane Doe", ("editor",),
    )  # fmt: skip
    assert attrs["grafana.variable.instance"] == ("web-1:9100", "web-2:9100")


def test_without_users_no_user_attribute_is_set() -> None:
    tracer, spans, _ = setup(users=False)
    feed(tracer, "v2-start.json")
    feed(tracer, "v2-end.json")
    assert not [k for k in (only(spans).attributes or {}) if k.startswith("user.")]


def test_heartbeats_and_focus_changes_are_span_events() -> None:
    tracer, spans, _ = setup()
    feed(tracer, "v2-start.json")  # has_focus true
    blurred = payload("v2-heartbeat.json").replace(b'"hasFocus": true', b'"hasFocus": false')
    ev = decode(blurred, now=0)
    tracer.observe(session_key(ev), ev, SessionUpdate(False, 60, False, T0))
    feed(tracer, "v2-end.json")  # has_focus true again
    events = [(e.name, e.timestamp, dict(e.attributes or {})) for e in only(spans).events]
    assert events == [
        ("heartbeat", (T0 + 60) * S, {"has_focus": False}),
        ("focus_lost", (T0 + 60) * S, {"has_focus": False}),
        ("focus_gained", (T0 + 185) * S, {"has_focus": True}),
    ]


def test_events_beyond_the_limit_are_counted_not_kept() -> None:
    tracer, spans, _ = setup(max_events=1)
    feed(tracer, "v2-start.json")
    feed(tracer, "v2-heartbeat.json")
    feed(tracer, "v2-heartbeat.json")
    feed(tracer, "v2-end.json")
    span = only(spans)
    assert len(span.events) == 1
    assert (span.attributes or {})["session.events_dropped"] == 1


def test_idle_session_is_closed_at_its_latest_event_by_the_sweep() -> None:
    tracer, spans, clock = setup(idle_timeout=600)
    feed(tracer, "v2-start.json")
    feed(tracer, "v2-heartbeat.json")
    clock.now += 599
    assert tracer.sweep() == 0
    clock.now += 1
    assert tracer.sweep() == 1
    span = only(spans)
    assert span.end_time == (T0 + 60) * S
    assert (span.attributes or {})["session.end_reason"] == "idle"


def test_evicted_session_is_closed() -> None:
    tracer, spans, _ = setup()
    feed(tracer, "v2-start.json")
    tracer.dropped(int(UUID.replace("-", ""), 16), 0)
    assert (only(spans).attributes or {})["session.end_reason"] == "evicted"


def test_open_sessions_are_bounded_closing_the_least_recently_active() -> None:
    tracer, spans, _ = setup(max_sessions=1)
    feed(tracer, "v2-start.json")
    feed(tracer, "v2-variables-multi.json")
    assert len(tracer) == 1
    assert (only(spans).attributes or {})["session.id"] == UUID


def test_close_all_writes_every_open_span() -> None:
    tracer, spans, _ = setup()
    feed(tracer, "v2-start.json")
    feed(tracer, "v2-variables-multi.json")
    tracer.close_all()
    assert {(s.attributes or {})["session.end_reason"] for s in spans.get_finished_spans()} == {
        "shutdown"
    }
    assert len(spans.get_finished_spans()) == 2


def test_empty_uuid_session_gets_its_key_as_session_id() -> None:
    tracer, spans, _ = setup()
    ev = decode(payload("v2-heartbeat-without-start.json"), now=0)
    key = session_key(ev)
    tracer.observe(key, ev, SessionUpdate(True, 0, False, ev.time))
    tracer.close_all()
    span = only(spans)
    assert (span.attributes or {})["session.id"] == f"{key:032x}"
    assert span.get_span_context().trace_id == key


def test_idle_sessions_are_closed_without_further_traffic() -> None:
    spans = InMemorySpanExporter()
    provider = TracerProvider(id_generator=SessionIdGenerator(), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracer = SessionTracer(provider, idle_timeout=0.3)  # real clock, background sweeper
    feed(tracer, "v2-start.json")
    deadline = time.monotonic() + 5
    while not spans.get_finished_spans() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (only(spans).attributes or {})["session.end_reason"] == "idle"
    tracer.close_all()
