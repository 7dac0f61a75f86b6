"""End to end: the CLI under real gunicorn, scraped every second by a real Prometheus.

A few hundred generated sessions (``tests/traffic.py``) are replayed over HTTP in rounds, from
several connections at once (each session's events stay on one connection, in order). After
each round the test waits for a scrape that began after the round's last answer, then reads
every series through PromQL and compares it with the independent oracle for the events sent so
far. Durations are sums of multiples of 1/8 s well below 2**50, so float sums are exact and
the comparison is ``==``.
"""

from __future__ import annotations

import http.client
import itertools
import json
import math
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.peers import free_port, payload, require_binary, running
from tests.traffic import (
    LABELS,
    Event,
    Expected,
    LabelSet,
    expected_counters,
    generate_traffic,
    label_set,
    lanes,
)

SESSIONS = 400
ROUNDS = 5
CONNECTIONS = 4
JOB = "panel_receiver"
SESSIONS_TOTAL = "grafana_analytics_sessions_total"
DURATION_TOTAL = "grafana_analytics_sessions_duration_seconds_total"
#: Labels a series may carry besides L: the metric name and what Prometheus adds per target.
TARGET_LABELS = {"__name__", "job", "instance"}


# --------------------------------------------------------------------------------------------
# The oracle itself, against the spec's worked examples (no peers needed)
# --------------------------------------------------------------------------------------------

T0 = 1_618_803_734


def _bodies(events: str, interval: float = 60) -> list[dict[str, Any]]:
    """Return minimal bodies of one session from ``"start@0 heartbeat@60 end@185"``."""
    out = []
    for item in events.split():
        kind, _, offset = item.partition("@")
        out.append(
            {
                "uuid": "3f0c6a9e-2b7d-4c1e-9a51-7d2e4b8f6c10",
                "type": kind,
                "options": {"heartbeatInterval": interval},
                "time": T0 + int(offset),
            }
        )
    return out


@pytest.mark.parametrize(
    ("events", "interval", "timeout", "duration"),
    [
        ("start@0 heartbeat@60 end@185", 60, 0, 135),
        ("heartbeat@0 heartbeat@60 heartbeat@400", 60, 0, 135),
        ("start@0 end@7200", 60, 0, 7200),
        ("heartbeat@1 heartbeat@0 heartbeat@7200", 3600, 0, 4501),
        ("start@0 end@100", 60, 30, 30),
        ("start@0 heartbeat@60 heartbeat@400", 60, 30, 60),
        ("end@0", 60, 0, 0),
        ("start@0 start@500 end@100", 60, 0, 100),
        ("start@0 heartbeat@7 heartbeat@22 end@25", 7.5, 0, 7 + 9.375 + 3),
    ],
)
def test_oracle_reproduces_the_spec_worked_examples(
    events: str, interval: float, timeout: float, duration: float
) -> None:
    """The oracle gives spec 2.5's durations (and 1.25 x a decimal interval as the cap)."""
    expected = expected_counters(_bodies(events, interval), timeout=timeout)
    assert list(expected.sessions.values()) == [1]
    assert list(expected.durations.values()) == [duration]


def test_oracle_gives_a_start_only_session_no_duration_series() -> None:
    """A session with only a start counts 1 and has no duration series (spec 2.6)."""
    expected = expected_counters(_bodies("start@0"))
    assert list(expected.sessions.values()) == [1]
    assert expected.durations == {}


@pytest.mark.parametrize("style", ["nested", "flattened"])
def test_oracle_labels_the_sample_session_as_spec_2_6_with_the_host_fix(style: str) -> None:
    """The sample start/heartbeat/end give 135 s under L, host without a trailing colon."""
    names = ["v2-start", "v2-heartbeat", "v2-end"]
    if style == "flattened":
        names[:2] = ["v2-start-flattened", "v2-heartbeat-flattened"]
    expected = expected_counters(json.loads(payload(f"{name}.json")) for name in names)
    labels = (
        "grafana.example.com", "production", "Service Overview", "ZQZXRMXMk", "browser", "dark",
        "browser", "en-US", "editor", "jdoe", "Jane Doe",
    )  # fmt: skip
    assert expected == Expected({labels: 1}, {labels: 135.0})


def _skipped_heartbeat(events: Sequence[Event]) -> bool:
    """Return whether two heartbeats of a session are more than 1.25 intervals apart."""
    body = events[0].body
    interval = (
        body["options.heartbeatInterval"]
        if events[0].flattened
        else body["options"]["heartbeatInterval"]
    )
    beats = [e.time for e in events if e.type == "heartbeat"]
    return any(b - a > 1.25 * interval for a, b in itertools.pairwise(beats))


def test_traffic_is_deterministic_and_covers_every_case() -> None:
    """The same seed gives the same bytes, and the traffic holds every case the e2e test needs."""
    events = generate_traffic(SESSIONS)
    assert [e.encode() for e in events] == [e.encode() for e in generate_traffic(SESSIONS)]
    assert [e.encode() for e in events] != [e.encode() for e in generate_traffic(SESSIONS, seed=1)]
    per_session: dict[int, list[Event]] = {}
    for event in events:
        per_session.setdefault(event.session, []).append(event)
    assert len(per_session) == SESSIONS
    assert all(  # each session's events in time order, labels stable
        [e.time for e in evs] == sorted(e.time for e in evs)
        and len({label_set(e.body) for e in evs}) == 1
        for evs in per_session.values()
    )
    kinds = Counter(tuple(e.type for e in evs[:1] + evs[-1:]) for evs in per_session.values())
    assert kinds[("start", "end")] and kinds[("start", "start")] and kinds[("end", "end")]
    assert kinds[("heartbeat", "end")] and kinds[("heartbeat", "heartbeat")]
    assert any(e.flattened for e in events) and any(e.body["uuid"] == "" for e in events)
    assert any(_skipped_heartbeat(evs) for evs in per_session.values())
    assert max(len(e.encode()) for e in events) < 65_536  # the browser's keepalive limit
    expected = expected_counters(e.body for e in events)
    hosts = {labels[0] for labels in expected.sessions}
    assert {"grafana.example.com", "grafana.example.com:3000"} <= hosts
    assert set(expected.durations) < set(expected.sessions)  # some label sets are start-only
    assert 0.0 in expected.durations.values()  # some have only zero-length sessions
    assert any(v % 1 for v in expected.durations.values())  # 1.25 x 7.5 caps some gaps


# --------------------------------------------------------------------------------------------
# The replay against the real programs
# --------------------------------------------------------------------------------------------


class PromQL:
    """A tiny client of Prometheus' HTTP API."""

    def __init__(self, base: str) -> None:
        self.base = base

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Return the result vector of an instant query at the current time."""
        url = f"{self.base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            doc = json.load(resp)
        assert doc["status"] == "success", doc
        result: list[dict[str, Any]] = doc["data"]["result"]
        return result

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
        out: dict[LabelSet, float] = {}
        for item in self.query(f'{metric}{{job="{JOB}"}}'):
            labels = item["metric"]
            assert set(labels) <= set(LABELS) | TARGET_LABELS, labels
            key = tuple(labels.get(name, "") for name in LABELS)
            assert key not in out, f"two series for one label set: {labels}"
            out[key] = float(item["value"][1])
        return out


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
    """POST a lane's events in order on one keep-alive connection, as the browser's text/plain."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    statuses = []
    try:
        for event in lane:
            conn.request(
                "POST",
                "/write",
                body=event.encode(),
                headers={"Content-Type": "text/plain;charset=UTF-8"},
            )
            resp = conn.getresponse()
            resp.read()
            statuses.append(resp.status)
    finally:
        conn.close()
    return statuses


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


def _diff(got: dict[LabelSet, float], want: dict[LabelSet, Any]) -> list[str]:
    """Return a readable line per label set whose value differs."""
    lines = []
    for key in sorted(set(got) | set(want)):
        if got.get(key) != want.get(key):
            labels = dict(zip(LABELS, key, strict=True))
            lines.append(f"{labels}: Prometheus {got.get(key)}, oracle {want.get(key)}")
    if len(lines) > 12:
        lines[12:] = [f"... and {len(lines) - 12} more"]
    return lines


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
        diff = _diff(rnd.sessions, rnd.expected.sessions)
        assert not diff, f"round {n}:\n" + "\n".join(diff)
    assert sum(replay.rounds[-1].sessions.values()) == SESSIONS


@pytest.mark.peers
@pytest.mark.slow
def test_duration_total_per_label_set_equals_the_oracle_after_every_round(replay: Replay) -> None:
    """After each round, sessions_duration_seconds_total{L} is the oracle's sum (spec 2.5)."""
    for n, rnd in enumerate(replay.rounds, 1):
        diff = _diff(rnd.durations, rnd.expected.durations)
        assert not diff, f"round {n}:\n" + "\n".join(diff)


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
