"""End to end: the CLI under real gunicorn, scraped every second by a real Prometheus.

A few hundred generated sessions (``tests/support/traffic.py``) are replayed over HTTP in
rounds, from several connections at once (each session's events stay on one connection, in
order). After each round the test waits for a scrape that began after the round's last answer,
then reads every series through PromQL and compares it with the independent oracle
(``tests/support/oracle.py``) for the events sent so far. Durations are sums of multiples of
1/8 s well below 2**50, so float sums are exact and the comparison is ``==``.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.lanes import post_bodies
from tests.support.metrics import (
    DURATION_TOTAL,
    SESSIONS_TOTAL,
    VALUES_AT_ONCE,
    by_label_set,
    diff_series,
)
from tests.support.oracle import LABELS, Expected, LabelSet, expected_counters
from tests.support.peers import promql
from tests.support.procs import free_port, require_binary, running
from tests.support.traffic import Event, generate_traffic, lanes

SESSIONS = 400
ROUNDS = 5
CONNECTIONS = 4
JOB = "panel_receiver"
#: Labels a series may carry besides L: the metric name and what Prometheus adds per target.
TARGET_LABELS = {"__name__", "job", "instance"}


class PromQL:
    """A tiny client of Prometheus' HTTP API."""

    def __init__(self, base: str) -> None:
        self.base = base

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Return the result vector of an instant query at the current time."""
        return promql(self.base, expr)

    def wait_for_scrape(self, after: float, deadline: float = 15.0) -> None:
        """Wait until a scrape of the receiver that began after ``after`` is queryable."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            # timestamp() of a bare selector is the sample's own time (of any other expression,
            # the evaluation time). 10 ms of margin: Prometheus may round it to its schedule.
            stamp = self.query(f'timestamp(up{{job="{JOB}"}})')
            if stamp and float(stamp[0]["value"][1]) > after + 0.01:
                up = self.query(f'up{{job="{JOB}"}}')
                assert up[0]["value"][1] == "1", "the scrape of the receiver failed"
                return
            time.sleep(0.05)
        raise TimeoutError(f"Prometheus did not scrape the receiver within {deadline} s")

    def series(self, metric: str) -> dict[LabelSet, float]:
        """Return every series of ``metric`` by its label set L (an absent label reads ``""``)."""
        rows = [(r["metric"], float(r["value"][1])) for r in self.query(f'{metric}{{job="{JOB}"}}')]
        return by_label_set(rows, LABELS, ignore=TARGET_LABELS.__contains__)


@dataclass(frozen=True, slots=True)
class Round:
    """What Prometheus held after one round, and what the oracle says it should hold."""

    expected: Expected
    sessions: dict[LabelSet, float]
    durations: dict[LabelSet, float]


@dataclass(frozen=True, slots=True)
class Replay:
    """The outcome of replaying the traffic."""

    events: tuple[Event, ...]
    statuses: list[int]
    rounds: list[Round]
    prom: PromQL
    started: float


def _post_lane(port: int, lane: Sequence[Event]) -> list[int]:
    """POST a lane's events in order on one keep-alive connection; return the statuses."""
    return [status for status, _ in post_bodies(port, [e.encode() for e in lane])]


def _prometheus_config(path: Path, target: str) -> Path:
    path.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        f"  - job_name: {JOB}\n"
        "    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )
    return path


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replay]:
    """Run the receiver and Prometheus, replay the traffic in rounds, snapshot each round."""
    receiver = require_binary("otel-panel-receiver", "pip install -e '.[test]'")
    prometheus = require_binary("prometheus", "apt-get install prometheus")
    tmp = tmp_path_factory.mktemp("e2e-prometheus")
    port, prom_port = free_port(), free_port()
    config = _prometheus_config(tmp / "prometheus.yml", f"127.0.0.1:{port}")
    events = generate_traffic(SESSIONS)
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
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            ready_url=f"http://127.0.0.1:{prom_port}/-/ready",
            log=tmp / "prometheus.log",
        ),
    ):
        prom = PromQL(f"http://127.0.0.1:{prom_port}")
        started = time.time()
        # Prometheus hands new targets to its scrapers after about 5 s; then the first scrape.
        prom.wait_for_scrape(after=started, deadline=30.0)
        statuses: list[int] = []
        rounds: list[Round] = []
        done = 0
        with ThreadPoolExecutor(CONNECTIONS) as pool:
            for r in range(1, ROUNDS + 1):
                upto = len(events) * r // ROUNDS
                for result in pool.map(
                    lambda lane: _post_lane(port, lane), lanes(events[done:upto], CONNECTIONS)
                ):
                    statuses += result
                prom.wait_for_scrape(after=time.time())
                rounds.append(
                    Round(
                        expected_counters(e.body for e in events[:upto]),
                        prom.series(SESSIONS_TOTAL),
                        prom.series(DURATION_TOTAL),
                    )
                )
                done = upto
        yield Replay(events, statuses, rounds, prom, started)


@pytest.mark.peers
@pytest.mark.slow
def test_every_write_is_answered_201(replay: Replay) -> None:
    """Every generated payload, nested or flattened, uuid or not, is answered 201."""
    assert len(replay.statuses) == len(replay.events)
    assert Counter(replay.statuses) == {201: len(replay.events)}


@pytest.mark.peers
@pytest.mark.slow
def test_sessions_total_per_label_set_equals_the_oracle_after_every_round(replay: Replay) -> None:
    """After each round, sessions_total{L} in Prometheus is the oracle's count of sessions."""
    for n, rnd in enumerate(replay.rounds, 1):
        diff = diff_series(rnd.sessions, rnd.expected.sessions, LABELS)
        assert not diff, f"round {n}, Prometheus (got) != oracle (want):\n" + "\n".join(diff)
    assert sum(replay.rounds[-1].sessions.values()) == SESSIONS


@pytest.mark.peers
@pytest.mark.slow
def test_duration_total_per_label_set_equals_the_oracle_after_every_round(replay: Replay) -> None:
    """After each round, sessions_duration_seconds_total{L} is the oracle's sum of durations."""
    for n, rnd in enumerate(replay.rounds, 1):
        diff = diff_series(rnd.durations, rnd.expected.durations, LABELS)
        assert not diff, f"round {n}, Prometheus (got) != oracle (want):\n" + "\n".join(diff)


@pytest.mark.peers
@pytest.mark.slow
def test_only_label_sets_with_a_heartbeat_or_an_end_have_a_duration_series(
    replay: Replay,
) -> None:
    """Start-only label sets have no duration series; end-only ones have a series at 0."""
    final = replay.rounds[-1]
    start_only = set(final.expected.sessions) - set(final.expected.durations)
    zero = {k for k, v in final.expected.durations.items() if v == 0}
    assert start_only and zero  # the traffic has both cases
    assert start_only <= set(final.sessions)
    assert not start_only & set(final.durations)
    assert all(final.durations.get(k) == 0.0 for k in zero)


@pytest.mark.peers
@pytest.mark.slow
def test_counters_never_decrease_between_scrapes(replay: Replay) -> None:
    """No series ever goes down: neither between rounds nor between any two scrapes."""
    for before, after in zip(replay.rounds, replay.rounds[1:], strict=False):
        for old, new in ((before.sessions, after.sessions), (before.durations, after.durations)):
            shrunk = {k: (v, new.get(k)) for k, v in old.items() if new.get(k, -1.0) < v}
            assert not shrunk
    window = math.ceil(time.time() - replay.started) + 5
    for metric in (SESSIONS_TOTAL, DURATION_TOTAL):
        resets = replay.prom.query(f'resets({metric}{{job="{JOB}"}}[{window}s])')
        assert len(resets) == len(replay.prom.series(metric))
        assert {r["value"][1] for r in resets} == {"0"}
        scrapes = replay.prom.query(f'max(count_over_time({metric}{{job="{JOB}"}}[{window}s]))')
        assert float(scrapes[0]["value"][1]) >= ROUNDS  # resets() compared several scrapes
