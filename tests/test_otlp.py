"""OTLP push: standard variables switch signals on; metrics, logs and spans arrive over OTLP;
a collector that is down is reported once and costs ``/write`` nothing."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import falcon.testing
import pytest
from opentelemetry._logs import Logger, LogRecord
from opentelemetry._logs import LoggerProvider as ApiLoggerProvider
from opentelemetry.sdk._logs.export import LogRecordExportResult

from otel_panel_receiver.app import ReceiverApp
from otel_panel_receiver.config import Settings
from otel_panel_receiver.errors import ConfigError
from otel_panel_receiver.export.logproviders import StdoutLoggerProvider, TeeLoggerProvider
from otel_panel_receiver.export.otlp import (
    PROBE_INTERVAL,
    STALL,
    ExportHealth,
    _ReportingLogExporter,
    otlp_exporter,
    signal_endpoint,
)
from otel_panel_receiver.testing import FakeClock, sample_payload
from tests.support.otlp_sink import OtlpSink, attributes
from tests.support.procs import free_port

if TYPE_CHECKING:
    from tests.conftest import AppFactory

UUID_HEX = "3f0c6a9e2b7d4c1e9a517d2e4b8f6c10"


@pytest.mark.parametrize(
    ("settings", "environ", "signal", "expected"),
    [
        (Settings(), {}, "metrics", ""),
        (Settings(otlp_endpoint="http://c:4318"), {}, "metrics", "http://c:4318/v1/metrics"),
        (Settings(otlp_endpoint="http://c:4318/"), {}, "logs", "http://c:4318/v1/logs"),
        (Settings(otlp_endpoint="http://c:4317", otlp_protocol="grpc"), {}, "traces", "http://c:4317"),
        (Settings(), {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t/x"}, "traces", "http://t/x"),
        (Settings(), {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t/x"}, "metrics", ""),
        (Settings(otlp_endpoint="http://c:4318"), {"OTEL_TRACES_EXPORTER": "none"}, "traces", ""),
        (Settings(otlp_endpoint="http://c:4318"), {"OTEL_TRACES_EXPORTER": "none"}, "logs", "http://c:4318/v1/logs"),
    ],
)  # fmt: skip
def test_signal_endpoints_follow_the_standard_variables(
    settings: Settings, environ: dict[str, str], signal: str, expected: str
) -> None:
    assert signal_endpoint(signal, settings, environ) == expected  # type: ignore[arg-type]


def test_grpc_without_the_extra_is_a_config_error() -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    try:
        import opentelemetry.exporter.otlp.proto.grpc  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r"\[grpc\]"):
            otlp_exporter("metrics", Settings(otlp_endpoint="c:4317", otlp_protocol="grpc"), {})
    else:
        pytest.skip("the grpc extra is installed")


def test_bad_per_signal_protocol_is_a_config_error() -> None:
    env = {"OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "json"}
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_LOGS_PROTOCOL"):
        otlp_exporter("logs", Settings(otlp_endpoint="http://c:4318"), env)


class Flaky:
    def __init__(self, results: list[LogRecordExportResult | None]) -> None:
        self.results = results

    def export(self, batch: object) -> LogRecordExportResult:
        result = self.results.pop(0)
        if result is None:
            raise OSError("boom")
        return result


def test_failures_are_reported_once_and_recovery_once(caplog: pytest.LogCaptureFixture) -> None:
    F, OK = LogRecordExportResult.FAILURE, LogRecordExportResult.SUCCESS
    flaky = Flaky([F, None, F, OK, OK, F, None])
    exporter = _ReportingLogExporter(flaky, ExportHealth("logs", "http://x"))  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="otel_panel_receiver"):
        results = [exporter.export([]) for _ in range(7)]
    assert results == [F, F, F, OK, OK, F, F]
    assert [r.getMessage() for r in caplog.records] == [
        "OTLP export failing; data of failed exports is dropped, ingest goes on",
        "OTLP exporter raised; counted as a failed export",
        "OTLP export recovered",
        "OTLP export failing; data of failed exports is dropped, ingest goes on",
    ]
    raised = caplog.records[1]
    assert raised.exc_info is not None and str(raised.exc_info[1]) == "boom"  # findable bug


def run_session(
    make_app: AppFactory, environ: dict[str, str], settings: Settings
) -> tuple[ReceiverApp, io.StringIO]:
    """Send one session's start, heartbeat and end to a new app; flush its telemetry."""
    out = io.StringIO()
    app = make_app(settings, environ=environ, stream=out)
    client = falcon.testing.TestClient(app)
    for name in ("v2-start.json", "v2-heartbeat.json", "v2-end.json"):
        assert client.simulate_post("/write", body=sample_payload(name)).status_code == 201
    app.telemetry.force_flush()
    return app, out


def test_metrics_logs_and_the_session_span_arrive_over_otlp_http(make_app: AppFactory) -> None:
    with OtlpSink() as sink:
        settings = Settings(otlp_endpoint=sink.url, new_series_delay=0)  # values at once
        app, _ = run_session(make_app, {}, settings)
        try:
            sums = sink.latest_sums()
            [(labels, sessions)] = sums["grafana_analytics_sessions"].items()
            assert sessions == 1 and ("grafana_host", "grafana.example.com") in labels
            [duration] = sums["grafana_analytics_sessions_duration"].values()
            assert duration == 135
            assert sink.resources()[0]["service.name"] == "otel-panel-receiver"
            records = [
                r for r in sink.log_records() if r.body.string_value == "Received session data"
            ]
            assert len(records) == 3
            assert attributes(records[0].attributes)["dashboard_uid"] == "ZQZXRMXMk"
            [span] = list(sink.spans())
            assert span.trace_id.hex() == UUID_HEX
            assert (span.start_time_unix_nano, span.end_time_unix_nano) == (
                1618803734 * 10**9, (1618803734 + 185) * 10**9,
            )  # fmt: skip
        finally:
            app.close()


def test_prometheus_pull_and_otlp_push_show_the_same_totals(make_app: AppFactory) -> None:
    with OtlpSink() as sink:
        settings = Settings(otlp_endpoint=sink.url, new_series_delay=0)  # values at once
        app, _ = run_session(make_app, {}, settings)
        try:
            text = falcon.testing.TestClient(app).simulate_get("/metrics").text
            assert "grafana_analytics_sessions_duration_seconds_total{" in text
            assert "} 135.0" in text
            assert list(sink.latest_sums()["grafana_analytics_sessions_duration"].values()) == [135]
        finally:
            app.close()


def test_collector_down_every_write_succeeds_and_the_failure_is_logged_once(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    with caplog.at_level(logging.INFO, logger="otel_panel_receiver"):
        app, out = run_session(
            make_app, {"OTEL_EXPORTER_OTLP_TIMEOUT": "1"}, Settings(otlp_endpoint=closed)
        )
        app.telemetry.force_flush()
        app.close()
    assert out.getvalue().count("Received session data") == 3  # stdout lines unaffected
    failing = [r for r in caplog.records if r.getMessage().startswith("OTLP export failing")]
    assert 1 <= len(failing) <= 3  # at most once per signal
    # The receiver's log calls pass their fields as ``extra``: attributes of the record.
    assert {vars(r)["fields"]["signal"] for r in failing} <= {"metrics", "logs", "traces"}


def test_spans_reach_stdout_only_when_otel_traces_exporter_is_console(make_app: AppFactory) -> None:
    _, out = run_session(make_app, {}, Settings(disable_session_log=True))
    assert out.getvalue() == ""
    console = {"OTEL_TRACES_EXPORTER": "console"}
    _, out = run_session(make_app, console, Settings(disable_session_log=True))
    assert '"name": "grafana.dashboard.session"' in out.getvalue()
    assert f'"trace_id": "0x{UUID_HEX}"' in out.getvalue()


def test_stdout_lines_are_identical_with_and_without_otlp_logs(make_app: AppFactory) -> None:
    with OtlpSink() as sink:
        app, with_otlp = run_session(make_app, {}, Settings(otlp_endpoint=sink.url))
        app.close()
    app, alone = run_session(make_app, {}, Settings())
    app.close()
    assert with_otlp.getvalue() == alone.getvalue()
    assert alone.getvalue().count("\n") == 3


def test_while_exports_fail_one_record_a_second_is_let_through(clock: FakeClock) -> None:
    health = ExportHealth("logs", "http://x", clock)
    assert all(health.admit() for _ in range(5))  # healthy: everything goes
    health.report(False)
    assert [health.admit() for _ in range(3)] == [False, False, False]
    clock.advance(PROBE_INTERVAL)
    assert [health.admit() for _ in range(3)] == [True, False, False]  # the probe
    health.report(True)
    assert all(health.admit() for _ in range(5))
    assert health.turned_away == 0  # reported with the recovery, then reset


def test_an_export_stuck_on_the_collector_turns_records_away(clock: FakeClock) -> None:
    health = ExportHealth("logs", "http://x", clock)
    health.busy_since = clock.now
    assert health.admit()  # a normal export in flight
    clock.advance(STALL)
    assert [health.admit() for _ in range(2)] == [True, False]  # probe, then turned away


def test_records_reach_stdout_whatever_the_collector_does() -> None:
    out = io.StringIO()
    admitted: list[bool] = []
    second = InMemoryLogs()
    tee = TeeLoggerProvider(
        stdout=StdoutLoggerProvider("logfmt", out), otlp=second, admit=lambda: admitted.pop(0)
    )
    logger = tee.get_logger("t")
    admitted.extend([True, False, True])
    for i in range(3):
        logger.emit(severity_text="info", body="m", attributes={"i": i})
    assert out.getvalue().count("\n") == 3
    assert [(r.attributes or {})["i"] for r in second.records] == [0, 2]


class InMemoryLogs(ApiLoggerProvider):
    def __init__(self) -> None:
        self.records: list[LogRecord] = []

    def get_logger(self, name: str, *args: object, **kwargs: object) -> Logger:
        provider = self

        class _Logger(Logger):
            def emit(self, record: LogRecord | None = None, **kw: object) -> None:
                assert record is not None
                provider.records.append(record)

            def enabled(self, **kw: object) -> bool:
                return True

        return _Logger(name)


BROWSER_SCHEMA = {
    "metrics": {
        "clicks": {"type": "counter", "labels": {"button": ["a", "b"]}},
        "load": {"type": "histogram", "unit": "s", "buckets": [0.5, 1, 2]},
        "tabs": {"type": "gauge", "ttl": 60},
    }
}


@pytest.mark.parametrize("delay", [0, 60])
def test_browser_metrics_go_over_otlp_and_count_once_in_metrics(
    make_app: AppFactory, tmp_path: Path, delay: float
) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(BROWSER_SCHEMA))
    values = [0.2, 0.7, 0.7, 1.5, 9.0]
    points = [{"name": "load", "value": v} for v in values] + [
        {"name": "clicks", "labels": {"button": "a"}, "value": 3},
        {"name": "tabs", "value": 2},
    ]
    with OtlpSink() as sink:
        settings = Settings(
            otlp_endpoint=sink.url, new_series_delay=delay, browser_metrics_schema=str(schema)
        )
        app = make_app(settings, stream=io.StringIO())
        try:
            client = falcon.testing.TestClient(app)
            body = json.dumps({"metrics": points}).encode()
            assert client.simulate_post("/v1/metrics", body=body).status_code == 202
            app.telemetry.force_flush()
            app.telemetry.force_flush()  # a second collection: the SDK's points must not add
            [hist] = sink.latest_metric("load").histogram.data_points
            [clicks] = sink.latest_metric("clicks").sum.data_points
            [tabs] = sink.latest_metric("tabs").gauge.data_points
            text = client.simulate_get("/metrics").text
        finally:
            app.close()
    assert tabs.as_double == 2
    if delay:  # new series: held at 0 over OTLP as in /metrics
        assert (hist.count, list(hist.bucket_counts), clicks.as_double) == (0, [0, 0, 0, 0], 0)
        assert "load_seconds_count 0.0" in text and 'clicks_total{button="a"} 0.0' in text
        return
    assert list(hist.explicit_bounds) == [0.5, 1, 2]
    assert list(hist.bucket_counts) == [1, 2, 1, 1] and hist.count == 5
    assert hist.sum == pytest.approx(sum(values))
    assert clicks.as_double == 3
    assert "load_seconds_count 5.0" in text and 'load_seconds_bucket{le="1.0"} 3.0' in text
    assert 'clicks_total{button="a"} 3.0' in text and "tabs 2.0" in text
