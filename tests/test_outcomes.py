"""Every payload's outcome is counted, and refusals are logged without flooding the log."""

from __future__ import annotations

import logging

import falcon.testing
import pytest

from otel_panel_receiver.config import Settings
from otel_panel_receiver.outcomes import Outcomes, excerpt
from otel_panel_receiver.testing import FakeClock, MemoryTelemetry, sample_payload
from tests.conftest import AppFactory

PAYLOADS = "grafana_analytics_payloads"


def outcomes(telemetry: MemoryTelemetry) -> dict[str, float]:
    return {attrs["outcome"]: value for attrs, value in telemetry.points(PAYLOADS)}


def test_each_payload_is_counted_once_by_its_outcome(
    make_app: AppFactory, telemetry: MemoryTelemetry
) -> None:
    client = falcon.testing.TestClient(
        make_app(Settings(max_body_size=2048, disable_session_log=True), telemetry=telemetry)
    )
    assert client.simulate_post("/write", body=sample_payload("v2-start.json")).status_code == 201
    assert client.simulate_post("/write", body=b"{").status_code == 400
    assert client.simulate_post("/write", body=b"[]").status_code == 400
    assert client.simulate_post("/write", body=b"x" * 4096).status_code == 413
    assert outcomes(telemetry) == {"accepted": 1, "malformed": 2, "too_large": 1}


def test_a_refusal_is_logged_with_the_client_and_the_first_bytes_of_the_body(
    make_app: AppFactory, telemetry: MemoryTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    client = falcon.testing.TestClient(make_app(telemetry=telemetry))
    with caplog.at_level(logging.WARNING, logger="otel_panel_receiver"):
        client.simulate_post("/write", body=b'{"time": "soon"\n}', remote_addr="203.0.113.9")
    [record] = caplog.records
    fields = record.fields  # type: ignore[attr-defined]
    assert record.getMessage() == "Payload refused"
    assert fields["outcome"] == "malformed" and fields["status"] == 400
    assert fields["client"] == "203.0.113.9"
    assert "expected integer, got string (at time)" in fields["detail"]
    assert '{"time": "soon"\\\\n}' in fields["detail"]  # escaped: one line whatever the body


def test_refusals_of_one_kind_make_one_line_per_interval_then_say_how_many_were_not_logged(
    telemetry: MemoryTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    counter = Outcomes(telemetry.meter_provider, interval=10, clock=clock)
    with caplog.at_level(logging.WARNING, logger="otel_panel_receiver"):
        for _ in range(1000):
            counter.rejected("malformed", status=400, client="a", detail="d")
        counter.rejected("too_large", status=413, client="a", detail="d")
        clock.advance(10)
        counter.rejected("malformed", status=400, client="a", detail="d")
    lines = [(r.fields["outcome"], r.fields.get("not_logged_since_last")) for r in caplog.records]  # type: ignore[attr-defined]
    assert lines == [("malformed", None), ("too_large", None), ("malformed", 999)]
    assert outcomes(telemetry) == {"malformed": 1001, "too_large": 1}


def test_an_excerpt_is_short_printable_and_says_it_was_cut() -> None:
    assert excerpt(b"\x00\xff\n" + b"a" * 100) == "\\x00\\xff\\n" + "a" * 61 + "..."
    assert excerpt(b"{}") == "{}"
