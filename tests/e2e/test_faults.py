"""End to end: the receiver's own faults, with real processes, files, disks and Redis.

Each test runs the ``otel-panel-receiver`` command and breaks something under it, with
traffic running: a worker killed with SIGKILL, a session store file made read-only or deleted,
a full disk (a small tmpfs: mounting needs root, and the test is skipped with the reason
without it), a Redis killed or frozen with SIGSTOP, a log pipe nobody reads, a log volume that
is full, a stalled client at SIGTERM. What each asserts is the receiver's promise: one truthful
outcome per payload (2xx and counted, or 503 and not counted; never a 500), a ``/healthz``
that stays fast, counts that are neither lost nor doubled.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from otel_panel_receiver.testing import sample_payload
from tests.e2e.test_workers import (
    CONNECTIONS,
    SPREAD,
    answered_and_in_flight,
    durations_outside,
    oracle,
    receiver_argv,
    wait_workers,
)
from tests.support.lanes import Answers, replay_lanes
from tests.support.metrics import (
    DURATION_TOTAL,
    SESSIONS_TOTAL,
    VALUES_AT_ONCE,
    scrape,
    wait_stable_totals,
)
from tests.support.mounts import fill, tmpfs
from tests.support.oracle import LABELS
from tests.support.peers import redis_server, wait_redis
from tests.support.procs import free_port, missing_peer, running, wait_until, worker_pids
from tests.support.traffic import generate_traffic, lanes

pytestmark = [pytest.mark.peers, pytest.mark.slow]

_BASE = json.loads(sample_payload("v2-start.json"))


def start_body(n: int) -> bytes:
    """Return the start payload of a session of its own (a distinct uuid)."""
    return json.dumps({**_BASE, "uuid": str(uuid.UUID(int=n + 1))}).encode()


def request(
    port: int, method: str, path: str, body: bytes | None = None, *, timeout: float = 15.0
) -> tuple[int, dict[str, str], float]:
    """Send one request on a new connection; return status, headers (names in lower case), s."""
    began = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        resp.read()
        headers = {name.lower(): value for name, value in resp.getheaders()}
        return resp.status, headers, time.perf_counter() - began
    finally:
        conn.close()


def counter(port: int, name: str, **labels: str) -> float:
    """Return the sum of a counter's samples on ``/metrics`` with the given labels."""
    return sum(
        value
        for sample_labels, value in scrape(f"http://127.0.0.1:{port}/metrics", name)
        if all(sample_labels.get(k) == v for k, v in labels.items())
    )


class Prober(threading.Thread):
    """GET ``/healthz`` every 20 ms for as long as it runs; keep each probe's seconds."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.times: list[float] = []
        self.failures: list[str] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                status, _, took = request(self.port, "GET", "/healthz", timeout=5)
                self.times.append(took)
                if status != 200:
                    self.failures.append(f"status {status}")
            except OSError as exc:
                self.failures.append(repr(exc))
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)


@contextlib.contextmanager
def probing(port: int) -> Iterator[Prober]:
    """Probe ``/healthz`` for the block."""
    prober = Prober(port)
    prober.start()
    try:
        yield prober
    finally:
        prober.stop()


# --------------------------------------------------------------------------------------------
# kill -9 of a worker: what was answered 201 is counted, once
# --------------------------------------------------------------------------------------------


def test_kill_9_of_one_of_two_workers_loses_no_count_it_answered(tmp_path: Path) -> None:
    """Every payload answered 201 is in the totals, and nothing is counted twice.

    Each session's events go one after another in one lane; a lane stops at its first broken
    connection, so only the request in flight there (sent, never answered) may or may not have
    been recorded. Before each answer, a worker puts the payload's counts in the workers'
    shared table: a worker killed right after answering loses none (it used to lose up to a
    second of them, its unexported deltas).
    """
    events = generate_traffic(800)
    traffic = lanes(events, CONNECTIONS)
    port = free_port()
    argv = receiver_argv(
        port, "--workers", "2", "--session-store", f"sqlite:///{tmp_path / 's.db'}",
        "--disable-session-log",
    )  # fmt: skip
    answers = Answers()
    with (
        running(argv, ready_url=f"http://127.0.0.1:{port}/healthz", env=VALUES_AT_ONCE,
                log=tmp_path / "receiver.log") as proc,
        ThreadPoolExecutor(1) as pool,
    ):  # fmt: skip
        workers = wait_workers(proc, 2)
        requests = [[(port, e.encode()) for e in lane] for lane in traffic]
        replay = pool.submit(replay_lanes, requests, spread=SPREAD, answers=answers)
        answers.wait_for(len(events) // 3)
        os.kill(workers[0], signal.SIGKILL)
        results = replay.result()
        wait_until(lambda: len(worker_pids(proc.pid)) == 2, deadline=20, what="a new worker")
        totals = wait_stable_totals(port, LABELS, quiet=2.0)
    answered, in_flight = answered_and_in_flight(traffic, results)
    assert 0 < len(answered) < len(events) and in_flight, "the kill did not cut the traffic"
    sent = answered + in_flight
    low, high = oracle(answered), oracle(sent)
    for metric in (SESSIONS_TOTAL, DURATION_TOTAL):
        outside = durations_outside(totals[metric], low=low[metric], high=high[metric])
        assert not outside, f"{metric} not within [answered, sent]:\n" + "\n".join(outside)


# --------------------------------------------------------------------------------------------
# SQLite: read-only, deleted, full
# --------------------------------------------------------------------------------------------


def without_dac_override(argv: Sequence[str]) -> list[str]:
    """Return ``argv`` run without the power to ignore file modes (root's CAP_DAC_OVERRIDE).

    A read-only file is read-only for the receiver then, as for any user who is not root.
    """
    setpriv = "/usr/bin/setpriv"
    if not os.path.exists(setpriv):
        missing_peer("setpriv (util-linux) is needed to run the receiver without DAC override")
    drop = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={drop}", f"--bounding-set={drop}", *argv]


def test_a_read_only_store_and_a_worker_restart_keep_the_server_answering(
    tmp_path: Path,
) -> None:
    """The new workers cannot write the store: they serve 503, never stop the server.

    gunicorn used to stop the whole server when a worker failed to boot on a store it could
    not open. Here SIGHUP replaces both workers while the file is read-only; ``/healthz``
    stays fast throughout, ``/write`` answers 503 with Retry-After, and once the file is
    writable again the same workers answer 201 and count.
    """
    store = tmp_path / "data" / "sessions.db"
    store.parent.mkdir(mode=0o700)
    port = free_port()
    argv = without_dac_override(receiver_argv(
        port, "--server", "gunicorn", "--workers", "2", "--session-store", f"sqlite:///{store}",
        "--disable-session-log",
    ))  # fmt: skip
    with running(argv, ready_url=f"http://127.0.0.1:{port}/healthz", env=VALUES_AT_ONCE,
                 log=tmp_path / "receiver.log") as proc:  # fmt: skip
        before = [request(port, "POST", "/write", start_body(n))[0] for n in range(20)]
        old = wait_workers(proc, 2)
        files = [p for p in store.parent.iterdir() if p.name.startswith("sessions.db")]
        for path in files:
            path.chmod(0o444)
        with probing(port) as prober:
            proc.send_signal(signal.SIGHUP)  # gunicorn: new workers, the old ones leave

            def replaced() -> bool:
                pids = worker_pids(proc.pid)
                return len(pids) == 2 and not set(pids) & set(old)

            wait_until(replaced, deadline=30, what="two new workers")
            time.sleep(1.0)
            refused = [request(port, "POST", "/write", start_body(100 + n)) for n in range(20)]
            ready = request(port, "GET", "/readyz")
            for path in files:
                if path.exists():  # the last connection to close removes the -wal and -shm
                    path.chmod(0o644)
            time.sleep(1.2)  # the guard tries the store again after a second
            after = [request(port, "POST", "/write", start_body(200 + n))[0] for n in range(20)]
        counted = counter(port, "grafana_analytics_sessions_total")
        assert proc.poll() is None, "the server stopped"
    assert before == [201] * 20
    assert [status for status, _, _ in refused] == [503] * 20
    assert all(headers.get("retry-after") == "1" for _, headers, _ in refused)
    assert ready[0] == 503
    assert after == [201] * 20
    assert counted == 40  # the 503s were not counted
    assert not prober.failures and max(prober.times) < 0.1, (prober.failures, max(prober.times))
    log = (tmp_path / "receiver.log").read_text(errors="replace")
    assert "Session store cannot be opened" in log or "Session store unavailable" in log
    assert "Worker failed to boot" not in log


def test_a_deleted_store_file_is_reported_and_counts_no_session_twice(tmp_path: Path) -> None:
    """Sessions whose state went with the file are adopted by the new one, not counted again."""
    store = tmp_path / "sessions.db"
    port = free_port()
    argv = receiver_argv(port, "--workers", "2", "--session-store", f"sqlite:///{store}",
                         "--disable-session-log")  # fmt: skip
    starts = [start_body(n) for n in range(100)]
    beats = [json.loads(body) | {"type": "heartbeat"} for body in starts]
    with running(argv, ready_url=f"http://127.0.0.1:{port}/healthz", env=VALUES_AT_ONCE,
                 log=tmp_path / "receiver.log"):  # fmt: skip
        first = [request(port, "POST", "/write", body)[0] for body in starts]
        for suffix in ("", "-wal", "-shm"):
            Path(f"{store}{suffix}").unlink(missing_ok=True)
        time.sleep(1.2)  # each worker checks the file's identity at most once a second
        later = []
        for beat in beats:
            beat["time"] += 60
            later.append(request(port, "POST", "/write", json.dumps(beat).encode())[0])
        time.sleep(1.5)
        counted = counter(port, "grafana_analytics_sessions_total")
        resets = counter(port, "grafana_analytics_session_store_resets_total")
    assert first == [201] * 100 and later == [201] * 100
    assert counted == 100, "sessions whose state was deleted were counted again"
    assert resets >= 1
    assert "Session store file deleted" in (tmp_path / "receiver.log").read_text()


def test_a_full_disk_under_the_store_answers_503_or_201_never_500(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "2m") as disk:
        port = free_port()
        store = f"sqlite:///{disk / 'sessions.db'}"
        argv = receiver_argv(
            port, "--workers", "2", "--session-store", store, "--disable-session-log"
        )
        with running(argv, ready_url=f"http://127.0.0.1:{port}/healthz", env=VALUES_AT_ONCE,
                     log=tmp_path / "receiver.log"):  # fmt: skip
            assert request(port, "POST", "/write", start_body(0))[0] == 201
            filler = fill(disk)
            full = [request(port, "POST", "/write", start_body(n))[0] for n in range(1, 3001)]
            filler.unlink()
            time.sleep(1.2)
            after = [request(port, "POST", "/write", start_body(n))[0] for n in range(3001, 3011)]
            time.sleep(1.5)
            counted = counter(port, "grafana_analytics_sessions_total")
            refused = counter(port, "grafana_analytics_payloads_total", outcome="store_unavailable")
    statuses = Counter(full)
    assert set(statuses) <= {201, 503}, statuses
    assert statuses[503] > 0, "the disk never filled up"
    assert after == [201] * 10
    assert counted == 1 + statuses[201] + 10  # every 201 counted, no 503
    assert refused == statuses[503]
    log = (tmp_path / "receiver.log").read_text(errors="replace")
    assert log.count("Traceback") == 0 and len(log) < 20_000  # no traceback per request


# --------------------------------------------------------------------------------------------
# Redis killed, Redis frozen
# --------------------------------------------------------------------------------------------


def test_a_frozen_redis_costs_a_request_at_most_the_store_timeout_and_healthz_nothing(
    tmp_path: Path,
) -> None:
    with redis_server(tmp_path) as redis:
        redis_pid = int(subprocess.run(
            ["redis-cli", "-p", str(redis.port), "info", "server"], capture_output=True,
            text=True, check=True,
        ).stdout.split("process_id:")[1].split()[0])  # fmt: skip
        port = free_port()
        argv = receiver_argv(port, "--session-store", redis.url, "--store-timeout", "1s",
                             "--disable-session-log")  # fmt: skip
        with running(argv, ready_url=f"http://127.0.0.1:{port}/healthz", env=VALUES_AT_ONCE,
                     log=tmp_path / "receiver.log"):  # fmt: skip
            assert request(port, "POST", "/write", start_body(0))[0] == 201
            with probing(port) as prober, ThreadPoolExecutor(8) as pool:
                os.kill(redis_pid, signal.SIGSTOP)
                try:
                    frozen = list(pool.map(
                        lambda n: request(port, "POST", "/write", start_body(n)),
                        range(1, 41),
                    ))  # fmt: skip
                    time.sleep(3.0)  # frozen for a while longer, with probes running
                finally:
                    os.kill(redis_pid, signal.SIGCONT)
                time.sleep(1.2)
                thawed = [request(port, "POST", "/write", start_body(n))[0] for n in range(41, 51)]
            counted = counter(port, "grafana_analytics_sessions_total")
    assert {status for status, _, _ in frozen} == {503}
    # At most the timeout, or twice it for a request that queued behind the first ones.
    assert max(took for _, _, took in frozen) < 2 * 1.0 + 0.5, "a request waited too long"
    assert thawed == [201] * 10 and counted == 11
    assert not prober.failures and max(prober.times) < 0.1, (prober.failures, max(prober.times))


def test_a_killed_redis_is_refused_fast_and_its_lost_data_found_when_it_is_back(
    tmp_path: Path,
) -> None:
    (tmp_path / "first").mkdir()
    with redis_server(tmp_path / "first") as redis:
        argv_redis = ["redis-server", "--bind", "127.0.0.1", "--port", str(redis.port),
                      "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]  # fmt: skip
        port = free_port()
        argv = receiver_argv(port, "--session-store", redis.url, "--disable-session-log")
        with running(argv, ready_url=f"http://127.0.0.1:{port}/healthz", env=VALUES_AT_ONCE,
                     log=tmp_path / "receiver.log"):  # fmt: skip
            first = [request(port, "POST", "/write", start_body(n))[0] for n in range(10)]
            subprocess.run(["redis-cli", "-p", str(redis.port), "shutdown", "nosave"],
                           check=False, capture_output=True)  # fmt: skip
            down = [request(port, "POST", "/write", start_body(n)) for n in range(10, 20)]
            with running(argv_redis, log=tmp_path / "second.log") as second:
                wait_redis(redis.port, proc=second)
                time.sleep(1.2)
                beats = []
                for n in range(10):  # sessions Redis forgot: adopted, not counted again
                    beat = json.loads(start_body(n)) | {"type": "heartbeat"}
                    beat["time"] += 60
                    beats.append(request(port, "POST", "/write", json.dumps(beat).encode())[0])
                time.sleep(1.5)
                counted = counter(port, "grafana_analytics_sessions_total")
                resets = counter(port, "grafana_analytics_session_store_resets_total")
    assert first == [201] * 10
    assert {status for status, _, _ in down} == {503}
    assert max(took for _, _, took in down) < 0.5
    assert beats == [201] * 10
    assert counted == 10 and resets == 1


# --------------------------------------------------------------------------------------------
# The log: a pipe nobody reads, a full volume
# --------------------------------------------------------------------------------------------


def test_a_log_pipe_nobody_reads_never_delays_or_fails_a_payload(tmp_path: Path) -> None:
    """stdout is a pipe the test does not read while it posts: the lines wait, ingest goes on."""
    port = free_port()
    with open(tmp_path / "err.log", "wb") as err:
        proc = subprocess.Popen(receiver_argv(port), stdout=subprocess.PIPE, stderr=err,
                                env={**os.environ, **VALUES_AT_ONCE})  # fmt: skip
    try:
        wait_until(lambda: _answers(port), deadline=20, what="the receiver")
        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(
                lambda n: request(port, "POST", "/write", start_body(n), timeout=10)[0],
                range(3000),
            ))  # fmt: skip
        counted = counter(port, "grafana_analytics_sessions_total")
        assert proc.stdout is not None
        proc.send_signal(signal.SIGTERM)
        with proc.stdout:
            out = proc.stdout.read().splitlines()
        lines = [line for line in out if b"Received session" in line]
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert statuses == [201] * 3000
    assert counted == 3000
    assert len(lines) == 3000  # queued while the pipe was full, written once it was read


def test_a_full_log_volume_drops_lines_counts_them_and_fails_no_payload(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "logs", "256k") as logs:
        port = free_port()
        with open(logs / "stdout.log", "wb") as out:
            proc = subprocess.Popen(receiver_argv(port), stdout=out, stderr=subprocess.DEVNULL,
                                    env={**os.environ, **VALUES_AT_ONCE})  # fmt: skip
        try:
            wait_until(lambda: _answers(port), deadline=20, what="the receiver")
            statuses = [request(port, "POST", "/write", start_body(n))[0] for n in range(1000)]
            time.sleep(1.5)
            counted = counter(port, "grafana_analytics_sessions_total")
            dropped = counter(port, "grafana_analytics_log_lines_dropped_total", reason="error")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    assert statuses == [201] * 1000
    assert counted == 1000
    assert dropped > 0, "the volume never filled up"


def _answers(port: int) -> bool:
    try:
        return request(port, "GET", "/healthz", timeout=1)[0] == 200
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# SIGTERM with a stalled client: bounded by --graceful-timeout
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("server", ["gunicorn", "granian"])
def test_a_stalled_client_cannot_hold_the_stop_past_the_graceful_timeout(
    tmp_path: Path, server: str
) -> None:
    port = free_port()
    argv = receiver_argv(port, "--server", server, "--graceful-timeout", "3s")
    with running(argv, ready_url=f"http://127.0.0.1:{port}/healthz",
                 log=tmp_path / "receiver.log") as proc:  # fmt: skip
        stalled = socket.create_connection(("127.0.0.1", port))
        stalled.sendall(b"POST /write HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        time.sleep(0.5)
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        took = time.monotonic() - began
        stalled.close()
    assert took < 3.0 + 2.0, f"{server} took {took:.1f} s to stop"


# --------------------------------------------------------------------------------------------
# A flood past --max-cache-size
# --------------------------------------------------------------------------------------------


def test_a_session_evicted_by_a_flood_continues_when_it_comes_back(tmp_path: Path) -> None:
    """Evicted mid-way by 1,050 new sessions (cache 1,000), a real session is counted once and
    its heartbeat's minute is added (it used to be counted twice and lose that minute)."""
    port = free_port()
    argv = receiver_argv(port, "--max-cache-size", "1000", "--disable-session-log")
    real = json.loads(sample_payload("v2-start.json")) | {"uuid": str(uuid.uuid4())}
    real["dashboard"] = {**real["dashboard"], "uid": "real-dashboard"}
    with running(argv, ready_url=f"http://127.0.0.1:{port}/healthz", env=VALUES_AT_ONCE,
                 log=tmp_path / "receiver.log"):  # fmt: skip
        assert request(port, "POST", "/write", json.dumps(real).encode())[0] == 201
        with ThreadPoolExecutor(4) as pool:
            flood = set(pool.map(
                lambda n: request(port, "POST", "/write", start_body(n))[0], range(1050)
            ))  # fmt: skip
        beat = real | {"type": "heartbeat", "time": real["time"] + 60}
        assert request(port, "POST", "/write", json.dumps(beat).encode())[0] == 201
        time.sleep(1.5)
        sessions = counter(port, "grafana_analytics_sessions_total", dashboard_uid="real-dashboard")
        seconds = counter(port, "grafana_analytics_sessions_duration_seconds_total",
                          dashboard_uid="real-dashboard")  # fmt: skip
        evicted = counter(port, "grafana_analytics_evicted_sessions_total")
        resumed = counter(port, "grafana_analytics_resumed_sessions_total")
    assert flood == {201}
    assert evicted >= 51 and resumed == 1
    assert (sessions, seconds) == (1, 60)
