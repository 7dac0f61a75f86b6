"""End to end: several workers on one host, as ``docs/deployment.md`` promises them.

"The numbers are exact in every layout": with ``--workers > 1`` each worker adds its counts to
one shared table every ``--multiproc-export-interval`` (1 s) and whichever worker answers a
scrape serves it; the SQLite store keeps sessions across restarts, even ``kill -9``; gunicorn's
recycled workers keep their counts; on SIGTERM every payload answered 2xx is in the exported
metrics and logs; granian runs the same app given the environment gunicorn's hook would set.

Each test replays generated traffic (``tests/support/traffic.py``) from 16 lanes at once: a lane
sends its sessions' events one after another (each answered before the next is sent), sessions
interleaved, on 4 kept-alive connections used in turn, so a session's events land on several
workers. The totals are compared, per label set and with ``==``, with one in-process app fed
the same bodies (:func:`~tests.support.metrics.single_process_totals`) and with the
independent oracle (``tests/support/oracle.py``). Durations are sums of multiples of 1/8 s, so
float sums in any order are exact.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import math
import signal
import subprocess
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from otel_panel_receiver import load_settings
from otel_panel_receiver.export.exposition import Exposition
from otel_panel_receiver.export.series import SERIES_FILE, LmdbSeries
from otel_panel_receiver.serving import GRANIAN_TARGET, granian_options
from tests.support.lanes import Answers, LaneResult, replay_lanes
from tests.support.metrics import (
    DURATION_TOTAL,
    SESSIONS_TOTAL,
    VALUES_AT_ONCE,
    Totals,
    diff_totals,
    scrape_totals,
    single_process_totals,
    totals_of,
    wait_stable_totals,
)
from tests.support.oracle import LABELS, LabelSet, expected_counters, label_set
from tests.support.otlp_sink import OtlpSink, attributes
from tests.support.peers import require_rotel, rotel_argv
from tests.support.procs import (
    free_port,
    free_ports,
    kill_all,
    listening,
    require_binary,
    running,
    stop,
    wait_until,
    worker_pids,
)
from tests.support.traffic import Event, generate_traffic, lanes

pytestmark = [pytest.mark.peers, pytest.mark.slow]

INSTALL = "pip install -e '.[test]'"
CONNECTIONS = 16
#: Kept-alive connections per lane, used in turn: a session's events reach several workers.
SPREAD = 4
#: Longer than ``--multiproc-export-interval`` (1 s): no delta is still on its way after it.
QUIET = 2.0
#: Scrapes compared after the totals settled (each a new connection, so any worker answers).
SCRAPES = 8
#: OTLP names of the two counters, and the names ``/metrics`` gives them.
PUSHED = {"grafana_analytics_sessions": SESSIONS_TOTAL,
          "grafana_analytics_sessions_duration": DURATION_TOTAL}  # fmt: skip
CUMULATIVE = 2  # opentelemetry.proto.metrics.v1.AggregationTemporality


def requests_to(port: int, events: Sequence[Event]) -> list[list[tuple[int, bytes]]]:
    """Return the events as lanes of requests to ``port``, each session within one lane."""
    return [[(port, e.encode()) for e in lane] for lane in lanes(events, CONNECTIONS)]


def oracle(events: Iterable[Event]) -> Totals:
    """Return the oracle's totals for the events, as ``/metrics`` names them."""
    expected = expected_counters(e.body for e in events)
    return {
        SESSIONS_TOTAL: {k: float(v) for k, v in expected.sessions.items()},
        DURATION_TOTAL: dict(expected.durations),
    }


def reference(events: Sequence[Event]) -> Totals:
    """Return what one in-process app shows for the events; check it against the oracle."""
    totals = single_process_totals((e.encode() for e in events), LABELS)
    diff = diff_totals(totals, oracle(events), LABELS)
    assert not diff, "one process (got) != oracle (want):\n" + "\n".join(diff)
    return totals


def statuses(results: Iterable[LaneResult]) -> Counter[int]:
    """Return how often each status was answered."""
    return Counter(status for result in results for status in result.statuses)


def assert_every_scrape_equals(scrapes: Sequence[Totals], want: Totals) -> None:
    """Fail with the differing series of the first scrape that is not ``want``."""
    for n, got in enumerate(scrapes, 1):
        diff = "\n".join(diff_totals(got, want, LABELS))
        assert not diff, f"scrape {n} of {len(scrapes)} (got) != one process (want):\n{diff}"


def receiver_argv(port: int, *options: str) -> list[str]:
    """Return the CLI's command line on 127.0.0.1:``port`` with ``options``."""
    binary = require_binary("otel-panel-receiver", INSTALL)
    return [binary, "--http-address", f"127.0.0.1:{port}", *options]


def wait_workers(proc: subprocess.Popen[bytes], n: int) -> list[int]:
    """Wait until the server has forked its ``n`` workers; return their pids."""
    wait_until(lambda: len(worker_pids(proc.pid)) == n, deadline=20, interval=0.05,
               what=f"{n} workers")  # fmt: skip
    return worker_pids(proc.pid)


# --------------------------------------------------------------------------------------------
# gunicorn workers, granian workers: exact totals from any worker
# --------------------------------------------------------------------------------------------


def test_four_workers_serve_the_single_process_totals_in_every_scrape(tmp_path: Path) -> None:
    """With --workers 4 and SQLite, every scrape shows what one process shows, per label set."""
    events = generate_traffic(800)  # about 3,200 payloads
    port = free_port()
    argv = receiver_argv(
        port, "--workers", "4", "--session-store", f"sqlite:///{tmp_path / 's.db'}",
        "--disable-session-log",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/healthz"
    with running(argv, ready_url=url, env=VALUES_AT_ONCE, log=tmp_path / "receiver.log") as proc:
        results = replay_lanes(requests_to(port, events), spread=SPREAD)
        settled = wait_stable_totals(port, LABELS, quiet=QUIET)
        scrapes = [scrape_totals(port, LABELS) for _ in range(SCRAPES)]
        workers = worker_pids(proc.pid)
    assert statuses(results) == {201: len(events)}
    assert len(workers) == 4
    assert_every_scrape_equals([settled, *scrapes], reference(events))
    assert sum(settled[SESSIONS_TOTAL].values()) == 800


class Watcher(threading.Thread):
    """Scrape ``/metrics`` and note the master's workers, every 50 ms until stopped."""

    def __init__(self, port: int, master: int) -> None:
        super().__init__(daemon=True)
        self.port, self.master = port, master
        self.scrapes: list[Totals] = []
        self.errors: list[str] = []
        self.pids: set[int] = set()
        self._halt = threading.Event()

    def run(self) -> None:
        """Scrape until stopped; a failed scrape is noted, not raised."""
        while not self._halt.is_set():
            self.pids.update(worker_pids(self.master))
            try:
                self.scrapes.append(scrape_totals(self.port, LABELS))
            except (OSError, http.client.HTTPException) as exc:
                self.errors.append(repr(exc))
            self._halt.wait(0.05)

    def stop(self) -> None:
        """Stop scraping and wait for the thread."""
        self._halt.set()
        self.join(10)


def decreases(scrapes: Sequence[Totals]) -> list[str]:
    """Return a line per series that fell, or vanished, from one scrape to the next."""
    lines = []
    for n, (before, after) in enumerate(itertools.pairwise(scrapes), 1):
        for metric, series in before.items():
            for key, value in series.items():
                if after[metric].get(key, -math.inf) < value:
                    labels = dict(zip(LABELS, key, strict=True))
                    lines.append(f"scrape {n}->{n + 1} {metric} {labels}: {value} -> "
                                 f"{after[metric].get(key)}")  # fmt: skip
    return lines[:12]


def test_recycled_workers_keep_their_counts_and_totals_never_fall(tmp_path: Path) -> None:
    """gunicorn --max-requests 50 recycles the workers often; no scrape ever goes down."""
    gunicorn = require_binary("gunicorn", INSTALL)
    events = generate_traffic(400)  # about 1,600 payloads: some 30 workers of ~55 requests
    port = free_port()
    argv = [
        gunicorn, "-c", "python:otel_panel_receiver.gunicorn_conf", "-w", "2",
        "--max-requests", "50", "--max-requests-jitter", "10", "-b", f"127.0.0.1:{port}",
        "otel_panel_receiver.wsgi:app",
    ]  # fmt: skip
    env = {
        **VALUES_AT_ONCE,
        "SESSION_STORE": f"sqlite:///{tmp_path / 's.db'}",
        "DISABLE_SESSION_LOG": "true",
    }
    url = f"http://127.0.0.1:{port}/healthz"
    with running(argv, ready_url=url, env=env, log=tmp_path / "gunicorn.log") as proc:
        watcher = Watcher(port, proc.pid)
        watcher.start()
        try:
            # A worker that reaches --max-requests closes its kept-alive connections; a client
            # sends again on a new one. Safe here: a repeated event adds nothing.
            results = replay_lanes(requests_to(port, events), spread=SPREAD, retry=True)
            settled = wait_stable_totals(port, LABELS, quiet=QUIET)
        finally:
            watcher.stop()
    assert statuses(results) == {201: len(events)}, [r.error for r in results if r.error]
    assert len(watcher.pids) >= 6, f"only {len(watcher.pids)} workers seen: not recycled"
    assert len(watcher.scrapes) >= 20 and not watcher.errors, watcher.errors[:5]
    fell = decreases([*watcher.scrapes, settled])
    assert not fell, "a scrape went down while workers were recycled:\n" + "\n".join(fell)
    assert_every_scrape_equals([settled], reference(events))


def granian_command(tmp_path: Path, port: int) -> tuple[list[str], dict[str, str]]:
    """Return granian's command line and the environment ``docs/deployment.md`` gives it.

    The options come from ``serving.granian_options`` for the settings the app reads from that
    environment, as gunicorn's come from ``serving.gunicorn_settings``.
    """
    granian = require_binary("granian", INSTALL)
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()  # created and empty, as docs/deployment.md asks (granian has no hook)
    env = {
        **VALUES_AT_ONCE,
        "WORKERS": "2",
        "SESSION_STORE": f"sqlite:///{tmp_path / 's.db'}",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "DISABLE_SESSION_LOG": "true",
    }
    settings = load_settings(["--http-address", f"127.0.0.1:{port}"], env)
    return [granian, *granian_options(settings), GRANIAN_TARGET], env


def test_granian_workers_serve_exact_totals_given_the_environment(tmp_path: Path) -> None:
    """granian --workers 2 with SESSION_STORE and a prepared PROMETHEUS_MULTIPROC_DIR is exact.

    The traffic comes in three rounds, each followed by a settled scrape, so that the workers
    add several exports into their shared table.
    """
    events = generate_traffic(150)
    port = free_port()
    argv, env = granian_command(tmp_path, port)
    ends = [len(events) * r // 3 for r in range(4)]
    results: list[LaneResult] = []
    settled: list[Totals] = []
    url = f"http://127.0.0.1:{port}/healthz"
    with running(argv, ready_url=url, env=env, log=tmp_path / "granian.log") as proc:
        workers = wait_workers(proc, 2)
        for begin, end in itertools.pairwise(ends):
            results += replay_lanes(requests_to(port, events[begin:end]), spread=SPREAD)
            settled.append(wait_stable_totals(port, LABELS, quiet=QUIET))
        scrapes = [scrape_totals(port, LABELS) for _ in range(SCRAPES)]
    assert statuses(results) == {201: len(events)}
    for n, (got, end) in enumerate(zip(settled, ends[1:], strict=True), 1):
        diff = diff_totals(got, reference(events[:end]), LABELS)
        assert not diff, f"after round {n} (got) != one process (want):\n" + "\n".join(diff)
    assert_every_scrape_equals(scrapes, reference(events))
    # Both workers served, and the totals came from the table they share.
    assert len(workers) == 2
    assert (Path(env["PROMETHEUS_MULTIPROC_DIR"]) / SERIES_FILE).exists()


def test_granian_shutdown_writes_each_workers_last_deltas(tmp_path: Path) -> None:
    """Stopping granian keeps every count in the shared table, as gunicorn's worker_exit does.

    With a 60 s export interval only the workers' shutdown can write the counts.
    """
    events = generate_traffic(100)
    port = free_port()
    argv, env = granian_command(tmp_path, port)
    env["MULTIPROC_EXPORT_INTERVAL"] = "60s"
    url = f"http://127.0.0.1:{port}/healthz"
    with running(argv, ready_url=url, env=env, log=tmp_path / "granian.log") as proc:
        wait_workers(proc, 2)
        results = replay_lanes(requests_to(port, events), spread=SPREAD)
        exit_status = stop(proc)
    # What any worker would serve from the shared table now, every value at once.
    table = LmdbSeries(f"{env['PROMETHEUS_MULTIPROC_DIR']}/{SERIES_FILE}", limit=10_000)
    left = totals_of(
        Exposition(table.families, delay=0, exposures=table).scrape()[0].decode(), LABELS
    )
    table.close()
    assert statuses(results) == {201: len(events)} and exit_status == 0
    assert_every_scrape_equals([left], reference(events))


# --------------------------------------------------------------------------------------------
# SIGTERM: the last OTLP export carries everything answered
# --------------------------------------------------------------------------------------------


def answered_and_in_flight(
    lanes_: Sequence[Sequence[Event]], results: Sequence[LaneResult]
) -> tuple[list[Event], list[Event]]:
    """Return the events answered, and the one per broken lane sent but never answered."""
    answered: list[Event] = []
    in_flight: list[Event] = []
    for lane, result in zip(lanes_, results, strict=True):
        assert set(result.statuses) <= {201}, result.statuses
        answered += lane[: len(result.statuses)]
        if result.error and len(result.statuses) < len(lane):
            in_flight.append(lane[len(result.statuses)])
    return answered, in_flight


def event_key(event: Event) -> tuple[Any, ...]:
    """Return what identifies an event in its log record."""
    labels = label_set(event.body)
    return (str(event.body["uuid"]), event.type, event.time, event.body["timeOrigin"],
            labels[LABELS.index("dashboard_uid")], labels[LABELS.index("user_login")])  # fmt: skip


def log_key(record: Any) -> tuple[Any, ...]:
    """Return what identifies the event of a "Received session data" record."""
    a = attributes(record.attributes)
    return (a["uuid"], a["type"], a["time"], a["timeorigin"], a["dashboard_uid"], a["user_login"])


def pushed_totals(sink: OtlpSink) -> tuple[Totals, dict[str, int]]:
    """Return the counters summed over workers, each worker's from its latest export.

    Also return, per ``service.instance.id``, how many exports (distinct timestamps) came.
    """
    latest: dict[tuple[str, str, LabelSet], tuple[int, float]] = {}
    stamps: dict[str, set[int]] = {}
    with sink.lock:
        requests = list(sink.requests["/v1/metrics"])
    for rm in (rm for req in requests for rm in req.resource_metrics):
        instance = attributes(rm.resource.attributes)["service.instance.id"]
        for metric in (m for sm in rm.scope_metrics for m in sm.metrics):
            data = getattr(metric, metric.WhichOneof("data"))
            stamps.setdefault(instance, set()).update(p.time_unix_nano for p in data.data_points)
            if metric.name not in PUSHED:
                continue
            assert data.aggregation_temporality == CUMULATIVE, metric.name
            for point in data.data_points:
                labels = attributes(point.attributes)
                assert set(labels) <= set(LABELS), labels
                key = (instance, PUSHED[metric.name], tuple(labels.get(n, "") for n in LABELS))
                value = float(getattr(point, point.WhichOneof("value")))
                if key not in latest or point.time_unix_nano >= latest[key][0]:
                    latest[key] = (point.time_unix_nano, value)
    totals: Totals = {SESSIONS_TOTAL: {}, DURATION_TOTAL: {}}
    for (_, metric, values), (_, value) in latest.items():
        totals[metric][values] = totals[metric].get(values, 0.0) + value
    return totals, {instance: len(s) for instance, s in stamps.items()}


def test_sigterm_mid_traffic_pushes_every_answered_payload(tmp_path: Path) -> None:
    """After SIGTERM, the workers' last exports hold every payload answered 2xx, and no more.

    rotel forwards all three signals to the sink. With a 60 s export interval the shutdown
    flush is each worker's only metrics export, so it alone must carry the counts.
    """
    rotel = require_rotel()
    events = generate_traffic(600)
    lanes_ = lanes(events, CONNECTIONS)
    http_port, grpc_port, port = free_ports(3)
    argv = receiver_argv(
        port, "--workers", "2", "--session-store", f"sqlite:///{tmp_path / 's.db'}",
        "--otlp-endpoint", f"http://127.0.0.1:{http_port}",
    )  # fmt: skip
    answers = Answers()
    with OtlpSink() as sink:
        collector = rotel_argv(
            rotel, tmp_path, http_port=http_port, grpc_port=grpc_port,
            metrics_url=f"{sink.url}/v1/metrics", logs_url=f"{sink.url}/v1/logs",
            traces_url=f"{sink.url}/v1/traces",
        )  # fmt: skip
        with listening(collector, port=http_port, log=tmp_path / "rotel.log"):
            with (
                running(
                    argv,
                    ready_url=f"http://127.0.0.1:{port}/healthz",
                    env={**VALUES_AT_ONCE, "OTEL_METRIC_EXPORT_INTERVAL": "60000"},
                    log=tmp_path / "receiver.log",
                ) as proc,
                ThreadPoolExecutor(1) as pool,
            ):
                workers = wait_workers(proc, 2)
                requests = [[(port, e.encode()) for e in lane] for lane in lanes_]
                replay = pool.submit(replay_lanes, requests, spread=SPREAD, answers=answers)
                answers.wait_for(len(events) * 2 // 5)
                proc.send_signal(signal.SIGTERM)
                results = replay.result()
                exit_status = proc.wait(40)
            answered, in_flight = answered_and_in_flight(lanes_, results)
            with contextlib.suppress(TimeoutError):  # the assertions below say what is missing
                wait_until(
                    lambda: (
                        len(list(sink.log_records())) >= len(answered)
                        and len(pushed_totals(sink)[1]) >= len(workers)
                    ),
                    deadline=15,
                    what="every worker's last export at the sink",
                )
        # rotel has stopped: whatever it still held was forwarded or is lost by now.
        logged = Counter(log_key(r) for r in sink.log_records())
        pushed, exports = pushed_totals(sink)
    assert exit_status == 0
    assert 0 < len(answered) < len(events), "SIGTERM did not fall in the middle of the traffic"
    assert "OTLP export failing" not in (tmp_path / "receiver.log").read_text(errors="replace")
    want_logs = Counter(event_key(e) for e in answered)
    assert not want_logs - logged, f"2xx payloads with no log record: {want_logs - logged}"
    assert not logged - want_logs - Counter(event_key(e) for e in in_flight), "extra records"
    # Sent but unanswered ones count when the receiver handled them (their record came).
    handled = {(e.session, e.seq) for e in answered} | {
        (e.session, e.seq) for e in in_flight if logged[event_key(e)] > want_logs[event_key(e)]
    }
    want = oracle(e for e in events if (e.session, e.seq) in handled)
    diff = diff_totals(pushed, want, LABELS)
    assert not diff, "pushed (got) != the payloads handled (want):\n" + "\n".join(diff)
    assert len(exports) == len(workers) == 2, f"exports per service.instance.id: {exports}"
    assert set(exports.values()) == {1}, f"not only the shutdown flush was exported: {exports}"


# --------------------------------------------------------------------------------------------
# kill -9 and a restart on the same SQLite file
# --------------------------------------------------------------------------------------------


def durations_outside(
    got: dict[LabelSet, float], low: dict[LabelSet, float], high: dict[LabelSet, float]
) -> list[str]:
    """Return a line per label set whose duration is not within ``[low, high]``."""
    return [
        f"{dict(zip(LABELS, key, strict=True))}: {got.get(key, 0.0)} not in "
        f"[{low.get(key, 0.0)}, {high.get(key, 0.0)}]"
        for key in sorted(set(got) | set(low) | set(high))
        if not low.get(key, 0.0) <= got.get(key, 0.0) <= high.get(key, 0.0)
    ][:12]


def minus(a: dict[LabelSet, float], b: dict[LabelSet, float]) -> dict[LabelSet, float]:
    """Return ``a - b`` per label set, without the zeros."""
    out = {key: value - b.get(key, 0.0) for key, value in a.items()}
    return {key: value for key, value in out.items() if value}


def test_kill_9_and_restart_on_the_same_file_counts_no_session_twice(tmp_path: Path) -> None:
    """After kill -9 of master and workers, a session seen before is continued, not recounted.

    Half the sessions are "old": phase 1 sends the first half of each one's events and waits
    until ``/metrics`` has settled, so that the scrape counts every old session. Phase 2 sends
    the rest of the old sessions' events (no first event among them) and SIGKILL cuts it.
    Phase 3, on a restart with the same file (and the same metrics directory, which the master
    empties), sends everything not answered yet: the old sessions' unanswered events and all
    of the new sessions, in time order.
    """
    events = generate_traffic(600)
    per_session: dict[int, list[Event]] = {}
    for event in events:
        per_session.setdefault(event.session, []).append(event)
    first = {
        (e.session, e.seq)
        for session, evs in per_session.items()
        if session < len(per_session) // 2  # their start times are spread over the traffic
        for e in evs[: (len(evs) + 1) // 2]
    }
    phase1_events = [e for e in events if (e.session, e.seq) in first]
    old = {e.session for e in phase1_events}
    window = [e for e in events if e.session in old and (e.session, e.seq) not in first]
    window_lanes = lanes(window, CONNECTIONS)
    options = (
        "--workers", "4", "--session-store", f"sqlite:///{tmp_path / 's.db'}",
        "--prometheus-multiproc-dir", str(tmp_path / "metrics"), "--disable-session-log",
    )  # fmt: skip
    port = free_port()
    url = f"http://127.0.0.1:{port}/healthz"
    answers = Answers()
    with (
        running(
            receiver_argv(port, *options),
            ready_url=url,
            env=VALUES_AT_ONCE,
            log=tmp_path / "first.log",
        ) as proc,
        ThreadPoolExecutor(1) as pool,
    ):
        phase1 = replay_lanes(requests_to(port, phase1_events), spread=SPREAD)
        before_kill = wait_stable_totals(port, LABELS, quiet=QUIET)
        requests = [[(port, e.encode()) for e in lane] for lane in window_lanes]
        replay = pool.submit(replay_lanes, requests, spread=SPREAD, answers=answers)
        answers.wait_for(len(window) * 2 // 5)
        kill_all(proc)
        phase2 = replay.result()
    answered, in_flight = answered_and_in_flight(window_lanes, phase2)
    done = first | {(e.session, e.seq) for e in answered}
    rest = [e for e in events if (e.session, e.seq) not in done]
    port = free_port()
    url = f"http://127.0.0.1:{port}/healthz"
    argv = receiver_argv(port, *options)
    with running(argv, ready_url=url, env=VALUES_AT_ONCE, log=tmp_path / "second.log"):
        fresh = scrape_totals(port, LABELS)
        phase3 = replay_lanes(requests_to(port, rest), spread=SPREAD)
        after_restart = wait_stable_totals(port, LABELS, quiet=QUIET)

    assert statuses(phase1) == {201: len(phase1_events)}
    assert statuses(phase3) == {201: len(rest)}
    assert 0 < len(answered) < len(window) and in_flight, "the kill did not cut the traffic"
    assert fresh == {SESSIONS_TOTAL: {}, DURATION_TOTAL: {}}, "counters did not restart at 0"
    diff = diff_totals(before_kill, oracle(phase1_events), LABELS)
    assert not diff, "before the kill (got) != oracle (want):\n" + "\n".join(diff)
    everything = oracle(events)
    new_sessions = minus(everything[SESSIONS_TOTAL], oracle(phase1_events)[SESSIONS_TOTAL])
    diff = diff_totals({SESSIONS_TOTAL: after_restart[SESSIONS_TOTAL]},
                       {SESSIONS_TOTAL: new_sessions}, LABELS)  # fmt: skip
    assert not diff, "after the restart (got) != new sessions (want):\n" + "\n".join(diff)
    counted = [sum(totals[SESSIONS_TOTAL].values()) for totals in (before_kill, after_restart)]
    assert sum(counted) == len(per_session), f"{counted} counted of {len(per_session)} sessions"
    # Durations: the restart adds what came after the events handled before the kill, which
    # are at least those answered and at most those sent (kill -9 loses unexported deltas).
    sent = done | {(e.session, e.seq) for e in in_flight}
    total = everything[DURATION_TOTAL]
    outside = durations_outside(
        after_restart[DURATION_TOTAL],
        low=minus(total, oracle(e for e in events if (e.session, e.seq) in sent)[DURATION_TOTAL]),
        high=minus(total, oracle(e for e in events if (e.session, e.seq) in done)[DURATION_TOTAL]),
    )
    assert not outside, "durations after the restart:\n" + "\n".join(outside)
