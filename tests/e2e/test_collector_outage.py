"""End to end: the OTLP collector goes away mid-traffic and comes back.

The CLI under real gunicorn pushes OTLP/HTTP to a real **rotel** collector that forwards metrics
to a real **VictoriaMetrics 1.112** (logs and traces to
:class:`~tests.support.otlp_sink.OtlpSink`).
Generated traffic is sent in three phases: with the collector up, with it stopped (long enough
for every signal's exports to fail after the SDK's retries), and after a new rotel is started on
the same port. ``docs/collector.md`` promises what is checked:

* "Export never blocks ``/write``": every write is answered 2xx during the outage, its median
  latency stays near the one before (a generous bound: this is behaviour, not a benchmark), no
  write waits for an export's retries, and the worker's memory stays bounded;
* "the receiver logs ``OTLP export failing`` once per signal, and ``OTLP export recovered`` when
  it is back", and nothing else besides the per-payload lines;
* "metrics are cumulative, so the first export after an outage carries the right totals again":
  VictoriaMetrics' latest values are the oracle's totals of all traffic, the outage's included.
"""

from __future__ import annotations

import contextlib
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.lanes import post_bodies
from tests.support.metrics import VALUES_AT_ONCE, by_label_set, diff_series, scrape, vm_series
from tests.support.oracle import LABELS, Expected, LabelSet, expected_counters
from tests.support.otlp_sink import OtlpSink
from tests.support.peers import require_rotel, rotel_argv, victoria_metrics, vm_flush
from tests.support.procs import (
    free_port,
    listening,
    require_binary,
    rss_bytes,
    running,
    stop,
    wait_until,
    worker_pids,
)
from tests.support.traffic import Event, generate_traffic, lanes

pytestmark = [pytest.mark.peers, pytest.mark.slow]

SESSIONS = 240
CONNECTIONS = 2
BEFORE = 2.0  # seconds of traffic with the collector up
#: Seconds of traffic with the collector down: longer than the SDK's retries of one export
#: (1 s + 2 s of backoff, then the 5 s deadline gives up), so every signal reports its failure.
OUTAGE = 6.0
SIGNALS = {"metrics", "logs", "traces"}
#: The names VictoriaMetrics gives the OTLP sums, and the receiver's /metrics names.
PULLED_NAMES = {
    "grafana_analytics_sessions": "grafana_analytics_sessions_total",
    "grafana_analytics_sessions_duration": "grafana_analytics_sessions_duration_seconds_total",
}
PUSH_ENV = {
    **VALUES_AT_ONCE,  # pulled and pushed values are compared at once
    "OTEL_METRIC_EXPORT_INTERVAL": "1000",
    "OTEL_BLRP_SCHEDULE_DELAY": "200",
    "OTEL_BSP_SCHEDULE_DELAY": "200",
}
#: The receiver's own lines that may appear on its stdout in this test.
LINE = re.compile(r'^level=(?:info|warn) msg="(?P<msg>[^"]*)"(?:.*\bsignal=(?P<signal>\w+))?')
EXPECTED_MESSAGES = {
    "Starting otel-panel-receiver",
    "Received session data",
    "OTLP export failing; data of failed exports is dropped, ingest goes on",
    "OTLP export recovered",
}


@dataclass(frozen=True, slots=True)
class Phase:
    """One phase of the traffic: each answer's status and latency in seconds."""

    answers: list[tuple[int, float]]

    @property
    def median(self) -> float:
        """Return the median latency."""
        return statistics.median(latency for _, latency in self.answers)


@dataclass(frozen=True, slots=True)
class Outage:
    """What the three phases saw."""

    events: tuple[Event, ...]
    before: Phase
    during: Phase
    after: Phase
    rss: dict[str, int]
    stored: dict[str, dict[LabelSet, float]]
    pulled: dict[str, dict[LabelSet, float]]
    log: list[str]


def send(port: int, events: Sequence[Event], seconds: float) -> Phase:
    """Send ``events`` on ``CONNECTIONS`` connections, spread evenly over ``seconds``."""
    split = [lane for lane in lanes(events, CONNECTIONS) if lane]
    with ThreadPoolExecutor(len(split)) as pool:
        results = pool.map(
            lambda lane: post_bodies(port, [e.encode() for e in lane], pace=seconds / len(lane)),
            split,
        )
        return Phase([answer for result in results for answer in result])


def as_stored(expected: Expected) -> dict[str, dict[LabelSet, float]]:
    """Return the oracle's totals under the names VictoriaMetrics gives the OTLP sums."""
    return {
        "grafana_analytics_sessions": {k: float(v) for k, v in expected.sessions.items()},
        "grafana_analytics_sessions_duration": dict(expected.durations),
    }


def reports(lines: Iterable[str]) -> Counter[tuple[str, str]]:
    """Count the receiver's export reports in its output lines, by message and signal."""
    found: Counter[tuple[str, str]] = Counter()
    for line in lines:
        match = LINE.match(line)
        if match and match["msg"].startswith("OTLP export"):
            found[(match["msg"].split(";")[0], match["signal"] or "")] += 1
    return found


def read_lines(log: Path) -> list[str]:
    """Return the lines the receiver has written so far."""
    return log.read_text(errors="replace").splitlines()


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    """Send traffic before, during and after a collector outage; collect what each phase saw."""
    receiver = require_binary("otel-panel-receiver", "pip install -e '.[test]'")
    rotel = require_rotel()
    tmp: Path = tmp_path_factory.mktemp("e2e-collector-outage")
    events = generate_traffic(SESSIONS)
    third = len(events) // 3
    phases = events[:third], events[third : 2 * third], events[2 * third :]
    log = tmp / "receiver.log"
    rss: dict[str, int] = {}
    stored: dict[str, dict[LabelSet, float]] = {}
    with contextlib.ExitStack() as stack:
        vm = stack.enter_context(victoria_metrics(tmp))
        sink = stack.enter_context(OtlpSink())
        http_port, grpc_port, port = free_port(), free_port(), free_port()
        collector = rotel_argv(
            rotel, tmp, http_port=http_port, grpc_port=grpc_port,
            metrics_url=f"{vm}/opentelemetry/v1/metrics",
            logs_url=f"{sink.url}/v1/logs", traces_url=f"{sink.url}/v1/traces",
        )  # fmt: skip
        first = stack.enter_context(listening(collector, port=http_port, log=tmp / "rotel.log"))
        argv = [
            receiver,
            "--http-address", f"127.0.0.1:{port}",
            "--otlp-endpoint", f"http://127.0.0.1:{http_port}",
        ]  # fmt: skip
        proc = stack.enter_context(
            running(argv, ready_url=f"http://127.0.0.1:{port}/healthz", env=PUSH_ENV, log=log)
        )
        [worker] = worker_pids(proc.pid)

        def stored_is(want: dict[str, dict[LabelSet, float]]) -> bool:
            vm_flush(vm)
            stored.update({name: vm_series(vm, name, LABELS) for name in want})
            return stored == want

        before = send(port, phases[0], BEFORE)
        wait_until(
            lambda: stored_is(as_stored(expected_counters(e.body for e in phases[0]))),
            deadline=15,
            what="the first phase's totals in VictoriaMetrics",
        )
        rss["before"] = rss_bytes(worker)
        stop(first)  # SIGTERM: rotel exits; its port refuses connections
        during = send(port, phases[1], OUTAGE)
        rss["during"] = rss_bytes(worker)
        with contextlib.suppress(TimeoutError):  # the test shows which reports are missing
            wait_until(
                lambda: (
                    {s for (m, s) in reports(read_lines(log)) if m == "OTLP export failing"}
                    >= SIGNALS
                ),
                deadline=10,
                what="an OTLP export failing line for every signal",
            )
        stack.enter_context(listening(collector, port=http_port, log=tmp / "rotel.log"))
        after = send(port, phases[2], 1.0)
        everything = as_stored(expected_counters(e.body for e in events))
        with contextlib.suppress(TimeoutError):
            wait_until(
                lambda: (
                    stored_is(everything)
                    and {s for (m, s) in reports(read_lines(log)) if m == "OTLP export recovered"}
                    >= SIGNALS
                ),
                deadline=20,
                what="all totals in VictoriaMetrics and a recovery line for every signal",
            )
        rss["after"] = rss_bytes(worker)
        pulled = {
            stored_name: by_label_set(scrape(f"http://127.0.0.1:{port}/metrics", name), LABELS)
            for stored_name, name in PULLED_NAMES.items()
        }
        lines = read_lines(log)
        stop(proc)  # before the collector, so its last export goes somewhere
    yield Outage(events, before, during, after, rss, stored, pulled, lines)


def test_every_write_is_answered_2xx_before_during_and_after_the_outage(outage: Outage) -> None:
    """No write fails because the collector is down."""
    answers = [*outage.before.answers, *outage.during.answers, *outage.after.answers]
    assert len(answers) == len(outage.events)
    assert all(200 <= status < 300 for status, _ in answers), Counter(s for s, _ in answers)


def test_write_latency_is_not_degraded_by_the_outage(outage: Outage) -> None:
    """Median latency during the outage is within 3x (+5 ms) of before; no write waits on export.

    A write blocked behind an export would take a retry's backoff (>= 1 s) or the 5 s timeout.
    """
    before, during = outage.before.median, outage.during.median
    assert during <= 3 * before + 0.005, f"median {during * 1000:.1f} ms vs {before * 1000:.1f} ms"
    slowest = max(latency for _, latency in outage.during.answers)
    assert slowest < 1.0, f"a write took {slowest:.2f} s during the outage"


def test_receiver_memory_stays_bounded_during_the_outage(outage: Outage) -> None:
    """The worker's RSS grows by less than 50 MB while exports fail (bounded queues)."""
    growth = max(outage.rss["during"], outage.rss["after"]) - outage.rss["before"]
    assert growth < 50 * 2**20, f"RSS grew by {growth / 2**20:.1f} MB: {outage.rss}"


def test_failure_and_recovery_are_each_logged_once_per_signal(outage: Outage) -> None:
    """Exactly one "OTLP export failing" and one "recovered" line per signal, not per payload."""
    want = Counter(
        {(msg, s): 1 for msg in ("OTLP export failing", "OTLP export recovered") for s in SIGNALS}
    )
    assert reports(outage.log) == want


def test_receiver_prints_nothing_but_its_own_lines(outage: Outage) -> None:
    """Besides the payload lines and the export reports, the outage adds nothing to stdout."""
    strange = [
        line
        for line in outage.log
        if (match := LINE.match(line)) is None or match["msg"] not in EXPECTED_MESSAGES
    ]
    assert not strange, "\n".join(strange[:10])
    payload_lines = sum('msg="Received session data"' in line for line in outage.log)
    assert payload_lines == len(outage.events)


@pytest.mark.parametrize("metric", list(PULLED_NAMES))
def test_victoria_metrics_holds_all_traffic_after_the_collector_returns(
    outage: Outage, metric: str
) -> None:
    """The latest values in VictoriaMetrics are the totals of all traffic, the outage's too."""
    want = as_stored(expected_counters(e.body for e in outage.events))[metric]
    diff = diff_series(outage.stored.get(metric, {}), want, LABELS)
    assert not diff, "VictoriaMetrics (got) != oracle (want):\n" + "\n".join(diff)
    diff = diff_series(outage.pulled[metric], want, LABELS)
    assert not diff, "/metrics (got) != oracle (want):\n" + "\n".join(diff)
