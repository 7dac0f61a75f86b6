"""The receiver reports its own state: sessions tracked, evicted, expired; failed OTLP exports."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import falcon.testing
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client.parser import text_string_to_metric_families

from otel_panel_receiver.config import Settings
from otel_panel_receiver.self_metrics import observe_store
from otel_panel_receiver.stores import SessionStore
from otel_panel_receiver.stores.memory import MemorySessionStore
from otel_panel_receiver.testing import FakeClock, sample_payload
from tests.support.procs import free_port

if TYPE_CHECKING:
    from tests.conftest import AppFactory


def put(store: SessionStore, key: int) -> None:
    store.apply(key, lambda old: (1, None))


def readings(reader: InMemoryMetricReader) -> dict[str, float]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        metric.name: point.value  # type: ignore[union-attr]
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        for point in metric.data.data_points
    }


def test_tracked_evicted_expired_and_resumed_follow_the_store(clock: FakeClock) -> None:
    reader = InMemoryMetricReader()
    store = MemorySessionStore(max_size=100, idle_ttl=60, clock=clock)
    observe_store(MeterProvider(metric_readers=[reader]), store)
    for key in range(100):
        put(store, key)
    assert readings(reader) == {
        "grafana_analytics_tracked_sessions": 100,
        "grafana_analytics_evicted_sessions": 0,
        "grafana_analytics_expired_sessions": 0,
        "grafana_analytics_resumed_sessions": 0,
        "grafana_analytics_session_store_resets": 0,
    }
    put(store, 100)  # over the cap: the least recently active 1% goes (key 0)
    put(store, 0)  # back from its tombstone, which evicts key 1
    clock.advance(61)
    put(store, 101)
    store.sweep()  # the 100 older sessions are idle past the TTL
    assert readings(reader) == {
        "grafana_analytics_tracked_sessions": 1,
        "grafana_analytics_evicted_sessions": 2,
        "grafana_analytics_expired_sessions": 100,
        "grafana_analytics_resumed_sessions": 1,
        "grafana_analytics_session_store_resets": 0,
    }


class Unreachable(MemorySessionStore):
    def __len__(self) -> int:
        raise ConnectionError("store down")


def test_a_store_that_cannot_answer_gives_no_figure_and_breaks_no_collection() -> None:
    reader = InMemoryMetricReader()
    observe_store(MeterProvider(metric_readers=[reader]), Unreachable())
    got = readings(reader)
    assert "grafana_analytics_tracked_sessions" not in got
    assert got["grafana_analytics_evicted_sessions"] == 0


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: falcon.testing.TestClient) -> Samples:
    text = client.simulate_get("/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_shows_the_tracked_sessions(make_app: AppFactory) -> None:
    client = falcon.testing.TestClient(make_app(Settings(disable_session_log=True)))
    assert client.simulate_post("/write", body=sample_payload("v2-start.json")).status_code == 201
    got = scrape(client)
    assert got[("grafana_analytics_tracked_sessions", ())] == 1
    assert got[("grafana_analytics_evicted_sessions_total", ())] == 0


def test_failed_otlp_exports_are_counted_by_signal(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: every export fails
    settings = Settings(otlp_endpoint=closed, new_series_delay=0)
    with caplog.at_level(logging.ERROR, logger="otel_panel_receiver"):
        app = make_app(settings, environ={"OTEL_EXPORTER_OTLP_TIMEOUT": "1"}, stream=io.StringIO())
        client = falcon.testing.TestClient(app)
        for name in ("v2-start.json", "v2-heartbeat.json", "v2-end.json"):
            assert client.simulate_post("/write", body=sample_payload(name)).status_code == 201
        app.telemetry.force_flush()
        got = scrape(client)
    failures = {
        dict(labels)["signal"]: value
        for (name, labels), value in got.items()
        if name == "grafana_analytics_otlp_export_failures_total"
    }
    assert set(failures) == {"metrics", "logs", "traces"}
    assert failures["logs"] >= 1 and failures["traces"] >= 1 and failures["metrics"] >= 1


def test_without_otlp_there_is_no_export_failure_metric(make_app: AppFactory) -> None:
    client = falcon.testing.TestClient(make_app(Settings(disable_session_log=True)))
    assert not any(
        name.startswith("grafana_analytics_otlp_export_failures") for name, _ in scrape(client)
    )


def test_one_worker_shows_the_standard_process_metrics(make_app: AppFactory) -> None:
    got = scrape(falcon.testing.TestClient(make_app(Settings(disable_session_log=True))))
    assert got[("process_resident_memory_bytes", ())] > 1_000_000
    assert got[("process_cpu_seconds_total", ())] > 0
    assert got[("process_open_fds", ())] >= 3


def test_several_workers_leave_process_metrics_out(make_app: AppFactory, tmp_path: Path) -> None:
    settings = Settings(disable_session_log=True, prometheus_multiproc_dir=str(tmp_path))
    got = scrape(falcon.testing.TestClient(make_app(settings)))
    assert ("grafana_analytics_tracked_sessions", ()) in got
    assert not any(name.startswith("process_") for name, _ in got)
