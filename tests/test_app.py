"""The composition root: each app holds its own parts, and closes what it built, only that."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

import falcon.testing
import pytest
from opentelemetry.metrics import NoOpMeter

from otel_panel_receiver.config import Settings
from otel_panel_receiver.testing import MemoryTelemetry, sample_payload

if TYPE_CHECKING:
    from tests.conftest import AppFactory

SESSIONS_SERIES = "grafana_analytics_sessions_total{"


def test_two_apps_share_no_counts(make_app: AppFactory) -> None:
    a, b = (falcon.testing.TestClient(make_app(Settings(disable_session_log=True))) for _ in "ab")
    a.simulate_post("/write", body=sample_payload("v2-start.json"))
    assert SESSIONS_SERIES in a.simulate_get("/metrics").text
    assert SESSIONS_SERIES not in b.simulate_get("/metrics").text


def test_close_writes_open_spans_then_shuts_the_providers_down_and_closes_the_store(
    make_app: AppFactory, tmp_path: Path
) -> None:
    out = io.StringIO()
    settings = Settings(session_store=f"sqlite://{tmp_path}/s.db", disable_session_log=True)
    # OTEL_TRACES_EXPORTER=console: the app builds a tracer provider whose spans reach ``out``.
    app = make_app(settings, environ={"OTEL_TRACES_EXPORTER": "console"}, stream=out)
    client = falcon.testing.TestClient(app)
    assert client.simulate_post("/write", body=sample_payload("v2-start.json")).status_code == 201
    assert len(app.receiver.store) == 1 and out.getvalue() == ""

    app.close()

    assert '"session.end_reason": "shutdown"' in out.getvalue()  # the open session's span
    # A MeterProvider that was shut down hands out no-op meters only.
    assert isinstance(app.telemetry.meter_provider.get_meter("after"), NoOpMeter)
    with pytest.raises(sqlite3.ProgrammingError, match="is closed"):
        len(app.receiver.store)
    written = out.getvalue()
    app.close()  # servers' exit hooks and atexit may all call it: twice is harmless
    assert out.getvalue() == written


def test_close_leaves_the_telemetry_it_was_given_running(
    make_app: AppFactory, telemetry: MemoryTelemetry
) -> None:
    app = make_app(telemetry=telemetry)
    app.close()
    assert not isinstance(telemetry.meter_provider.get_meter("after"), NoOpMeter)
    app.receiver.handle(sample_payload("v2-start.json"))
    [(_, sessions)] = telemetry.points("grafana_analytics_sessions")
    assert sessions == 1
