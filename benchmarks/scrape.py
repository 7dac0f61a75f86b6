"""Measure ``GET /metrics``: latency and size of the exposition at a given number of series."""

from __future__ import annotations

import statistics
import time

import falcon.testing

from benchmarks import targets
from benchmarks.payloads import labelled_pair
from benchmarks.plan import Plan
from benchmarks.report import Table
from otel_panel_receiver import Settings, Telemetry, build_telemetry, create_app
from otel_panel_receiver.app import ReceiverApp

__all__ = ["run"]

#: What each format's scraper sends; Prometheus 2.42 asks for OpenMetrics first.
FORMATS = (
    ("Prometheus text 0.0.4", "text/plain;version=0.0.4"),
    (
        "OpenMetrics (Prometheus 2.42's Accept)",
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
        "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    ),
)


def _app_with_series(series: int) -> tuple[ReceiverApp, Telemetry]:
    """Return a receiver app whose two session counters hold ``series`` series in all, and
    its telemetry (``app.close()`` leaves a telemetry it was given open: shut it down too, or
    its table's collection every second takes CPU from the sections measured later)."""
    settings = Settings(disable_session_log=True)
    telemetry = build_telemetry(settings)
    app = create_app(settings, telemetry=telemetry)
    for k in range(series // 2):  # a start and a heartbeat: one series in each counter
        start, heartbeat = labelled_pair(k)
        app.receiver.handle(start)
        app.receiver.handle(heartbeat)
    return app, telemetry


def _scrape(
    client: falcon.testing.TestClient, accept: str, repeats: int
) -> tuple[list[float], str]:
    client.simulate_get("/metrics", headers={"Accept": accept})  # unmeasured first scrape
    latencies, text = [], ""
    for _ in range(repeats):
        start = time.perf_counter()
        result = client.simulate_get("/metrics", headers={"Accept": accept})
        latencies.append((time.perf_counter() - start) * 1_000)
        text = result.text
    return latencies, text


def run(plan: Plan) -> list[Table]:
    """Scrape receivers holding each of ``plan.scrape_series`` series, in both formats."""
    table = Table(
        "Scrape cost: GET /metrics",
        ("series", "format", "median ms", "max ms", "size KiB", "target", "met"),
    )
    for series in plan.scrape_series:
        app, telemetry = _app_with_series(series)
        client = falcon.testing.TestClient(app)
        for name, accept in FORMATS:
            latencies, text = _scrape(client, accept, plan.scrape_repeats)
            counted = sum(
                line.startswith("grafana_analytics_sessions") and not line.startswith("#")
                for line in text.splitlines()
            )
            if counted < series:
                raise RuntimeError(f"expected {series} session series, /metrics shows {counted}")
            median = statistics.median(latencies)
            target = targets.SCRAPE_MS_AT_2000 if series == 2_000 else None
            verdict = ""
            if target is not None:
                what = f"/metrics at {series:,} series, {name}"
                verdict = table.check(what, f"{median:.1f} ms", target, median)
            table.add(
                f"{series:,}",
                name,
                f"{median:.1f}",
                f"{max(latencies):.1f}",
                f"{len(text.encode()) / 1024:,.0f}",
                target or "",
                verdict,
            )
        app.close()
        telemetry.shutdown()
    table.notes.append(
        f"series = samples of the two session counters (half grafana_analytics_sessions_total, "
        f"half ..._duration_seconds_total), each its own label set L; median and max of "
        f"{plan.scrape_repeats} scrapes through the WSGI app in process (falcon.testing, no "
        "socket), after one unmeasured scrape."
    )
    return [table]
