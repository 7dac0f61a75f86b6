"""End to end: the receiver's counters reach a real InfluxDB 1.x by the route the docs recommend.

InfluxDB 1.x has no OTLP and no v2 API, so ``docs/collector.md`` sends metrics to its own
Prometheus remote-write endpoint ``/api/v1/prom/write?db=<db>``; a collector's
``prometheusremotewrite`` exporter or a plain Prometheus can do that. No collector with that
exporter can be installed here (rotel has none), so this test runs the second form the docs
give: a real Prometheus scrapes the CLI under real gunicorn and ``remote_write``-s to a real
InfluxDB 1.x (Debian's ``influxdb``). InfluxQL over HTTP (``/query``) reads the last value of
each series back: each metric is a measurement named after it, with a ``value`` field and the
labels as tags, and the totals per label set must be the receiver's ``/metrics`` and the oracle's.
"""

from __future__ import annotations

import contextlib
import json
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.lanes import post_bodies
from tests.support.metrics import VALUES_AT_ONCE, by_label_set, diff_series, scrape
from tests.support.oracle import LABELS, LabelSet, expected_counters
from tests.support.procs import free_port, require_binary, running, wait_until
from tests.support.traffic import Event, generate_traffic, lanes

pytestmark = [pytest.mark.peers, pytest.mark.slow]

SESSIONS = 300
CONNECTIONS = 4
DB = "panel_analytics"
JOB = "panel_receiver"
METRICS = ("grafana_analytics_sessions_total", "grafana_analytics_sessions_duration_seconds_total")
#: Tags a series may carry besides L: what Prometheus adds per target, and InfluxDB 1.x keeps
#: the metric name as a tag too (besides naming the measurement after it).
TARGET_TAGS = {"job", "instance", "__name__"}


def influxdb_config(tmp: Path, http_port: int, rpc_port: int) -> Path:
    """Write an influxd config: data under ``tmp``, loopback ports only, nothing reported."""
    path = tmp / "influxdb.conf"
    path.write_text(
        # Upstream 1.x reads reporting-disabled, Debian's build reporting-enabled (default off);
        # each ignores the other's key.
        "reporting-disabled = true\n"
        "reporting-enabled = false\n"
        f'bind-address = "127.0.0.1:{rpc_port}"\n'
        "[meta]\n"
        f'  dir = "{tmp / "meta"}"\n'
        "  logging-enabled = false\n"
        "[data]\n"
        f'  dir = "{tmp / "data"}"\n'
        f'  wal-dir = "{tmp / "wal"}"\n'
        "  query-log-enabled = false\n"
        "[monitor]\n"
        "  store-enabled = false\n"
        "[retention]\n"
        "  enabled = false\n"
        "[shard-precreation]\n"
        "  enabled = false\n"
        "[subscriber]\n"
        "  enabled = false\n"
        "[continuous_queries]\n"
        "  enabled = false\n"
        "[http]\n"
        f'  bind-address = "127.0.0.1:{http_port}"\n'
        "  log-enabled = false\n"
        "  pprof-enabled = false\n"
        "[ifql]\n"
        "  enabled = false\n"
        "[logging]\n"
        '  level = "warn"\n'
        "  suppress-logo = true\n"
    )
    return path


def prometheus_config(path: Path, target: str, remote_write: str) -> Path:
    """Write a Prometheus config: scrape ``target`` every second, remote-write right away."""
    path.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "scrape_configs:\n"
        f"  - job_name: {JOB}\n"
        "    static_configs:\n"
        f"      - targets: ['{target}']\n"
        "remote_write:\n"
        f"  - url: '{remote_write}'\n"
        "    queue_config:\n"
        "      batch_send_deadline: 200ms\n"
        "      min_backoff: 50ms\n"
        "      max_backoff: 1s\n"
        "    metadata_config:\n"
        "      send: false\n"  # InfluxDB 1.x keeps samples only
    )
    return path


def influxql(base: str, query: str, *, post: bool = False) -> list[dict[str, Any]]:
    """Run an InfluxQL query in ``DB``; return the first result's series."""
    params = urllib.parse.urlencode({"db": DB, "q": query})
    if post:
        request = urllib.request.Request(
            f"{base}/query",
            data=params.encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    else:
        request = urllib.request.Request(f"{base}/query?{params}")
    with urllib.request.urlopen(request, timeout=10) as resp:
        doc = json.load(resp)
    [result] = doc["results"]
    assert "error" not in result, result
    series: list[dict[str, Any]] = result.get("series", [])
    return series


def stored_series(base: str, measurement: str) -> dict[LabelSet, float]:
    """Return the last value of every series of ``measurement`` by label set L."""
    rows = []
    for series in influxql(base, f'SELECT last("value") FROM "{measurement}" GROUP BY *'):
        assert series["columns"] == ["time", "last"], series
        [(_, value)] = series["values"]
        tags = {k: v for k, v in series.get("tags", {}).items() if v != ""}
        assert series["name"] == tags.get("__name__", measurement) == measurement, series
        assert tags.get("job") == JOB, series
        rows.append((tags, float(value)))
    return by_label_set(rows, LABELS, ignore=TARGET_TAGS.__contains__)


@dataclass(frozen=True, slots=True)
class Written:
    """What was sent, what the receiver exposed, and what InfluxDB held."""

    events: Sequence[Event]
    statuses: list[int]
    pulled: dict[str, dict[LabelSet, float]]
    stored: dict[str, dict[LabelSet, float]]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Written]:
    """Run InfluxDB, the receiver and Prometheus; replay the traffic; read InfluxDB back."""
    receiver = require_binary("otel-panel-receiver", "pip install -e '.[test]'")
    influxd = require_binary("influxd", "apt-get install influxdb (scripts/install-peers.sh)")
    prometheus = require_binary("prometheus", "apt-get install prometheus")
    tmp: Path = tmp_path_factory.mktemp("e2e-influxdb")
    http_port, rpc_port, port, prom_port = free_port(), free_port(), free_port(), free_port()
    influx = f"http://127.0.0.1:{http_port}"
    config = prometheus_config(
        tmp / "prometheus.yml", f"127.0.0.1:{port}", f"{influx}/api/v1/prom/write?db={DB}"
    )
    events = generate_traffic(SESSIONS)
    stored: dict[str, dict[LabelSet, float]] = {}
    # Nested so that Prometheus stops first: with its remote-write target gone, its shutdown
    # would retry for about a minute.
    with running(
        [influxd, "-config", str(influxdb_config(tmp, http_port, rpc_port))],
        ready_url=f"{influx}/ping",
        log=tmp / "influxd.log",
    ):
        influxql(influx, f'CREATE DATABASE "{DB}"', post=True)
        with (
            running(
                [receiver, "--http-address", f"127.0.0.1:{port}"],
                ready_url=f"http://127.0.0.1:{port}/healthz",
                env=VALUES_AT_ONCE,
                log=tmp / "receiver.log",
            ),
            running(
                [
                    prometheus,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp / 'prometheus'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                ready_url=f"http://127.0.0.1:{prom_port}/-/ready",
                log=tmp / "prometheus.log",
            ),
        ):
            # Prometheus takes about 5 s to start scraping a new target: replay meanwhile.
            with ThreadPoolExecutor(CONNECTIONS) as pool:
                results = pool.map(
                    lambda lane: post_bodies(port, [e.encode() for e in lane]),
                    lanes(events, CONNECTIONS),
                )
                statuses = [status for result in results for status, _ in result]
            pulled = {
                name: by_label_set(scrape(f"http://127.0.0.1:{port}/metrics", name), LABELS)
                for name in METRICS
            }

            def stored_equals_pulled() -> bool:
                stored.update({name: stored_series(influx, name) for name in METRICS})
                return stored == pulled

            with contextlib.suppress(TimeoutError):  # the tests compare and show the difference
                wait_until(stored_equals_pulled, deadline=30, interval=0.3, what="InfluxDB")
    yield Written(events, statuses, pulled, stored)


def test_every_write_is_answered_201(written: Written) -> None:
    """Every payload is accepted."""
    assert written.statuses == [201] * len(written.events)


@pytest.mark.parametrize("measurement", METRICS)
def test_influxdb_holds_the_receivers_totals_per_label_set(
    written: Written, measurement: str
) -> None:
    """InfluxQL's last value per series is, per label set, what /metrics says."""
    assert written.pulled[measurement], "the receiver exposed no series"
    diff = diff_series(written.stored.get(measurement, {}), written.pulled[measurement], LABELS)
    assert not diff, "InfluxDB (got) != /metrics (want):\n" + "\n".join(diff)


def test_influxdb_totals_equal_the_oracle(written: Written) -> None:
    """The totals in InfluxDB are the oracle's: sessions and duration seconds per label set."""
    expected = expected_counters(e.body for e in written.events)
    sessions = {k: float(v) for k, v in expected.sessions.items()}
    diff = diff_series(written.stored.get(METRICS[0], {}), sessions, LABELS)
    diff += diff_series(written.stored.get(METRICS[1], {}), expected.durations, LABELS)
    assert not diff, "InfluxDB (got) != oracle (want):\n" + "\n".join(diff)
    assert sum(written.stored[METRICS[0]].values()) == SESSIONS
