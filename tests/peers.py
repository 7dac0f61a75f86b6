"""Helpers for tests that run real programs: free ports, start-up deadlines, clean stops.

A test that needs a real peer which is missing **fails** under ``CI=true`` and skips elsewhere,
with the install command in the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn

import pytest

REPO = Path(__file__).resolve().parent.parent
PAYLOADS = REPO / "otel_panel_receiver" / "testing" / "payloads"
VENV_BIN = Path(sys.executable).parent


def in_ci() -> bool:
    """Return whether the tests run in CI, where a missing peer is a failure."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_binary(name: str, install: str) -> str:
    """Return the path of ``name``, or fail (CI) / skip (elsewhere) saying how to install it."""
    path = shutil.which(name) or (str(VENV_BIN / name) if (VENV_BIN / name).exists() else None)
    if path is None:
        reason = f"{name} is not installed; install it with: {install}"
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(n: int) -> list[int]:
    """Return ``n`` different TCP ports on 127.0.0.1 that were free a moment ago."""
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def wait_http(
    url: str, *, proc: subprocess.Popen[bytes] | None = None, deadline: float = 20.0
) -> None:
    """Wait until ``url`` answers 2xx; fail early if ``proc`` exits, fail at the deadline."""
    end = time.monotonic() + deadline
    last: Exception | None = None
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if 200 <= resp.status < 300:
                    return
        except urllib.error.HTTPError as exc:
            exc.close()  # an answer that is not 2xx (a starting Prometheus: 503) holds its socket
            last = exc
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {deadline} s (last error: {last})")


def stop(proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, grace: float = 15.0) -> int:
    """Send ``sig``, wait up to ``grace`` seconds, then kill; return the exit status."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@contextlib.contextmanager
def running(
    argv: Sequence[str],
    *,
    ready_url: str | None = None,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    deadline: float = 20.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` for the duration of the block, stdout and stderr into ``log``."""
    out = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        list(argv), stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
    )
    try:
        if ready_url is not None:
            try:
                wait_http(ready_url, proc=proc, deadline=deadline)
            except Exception:
                stop(proc)
                if log is not None:
                    sys.stderr.write(log.read_text(errors="replace")[-4000:])
                raise
        yield proc
    finally:
        stop(proc)
        if out is not subprocess.DEVNULL:
            out.close()


def payload(name: str) -> bytes:
    """Return one of the spec's sample payloads."""
    return (PAYLOADS / name).read_bytes()


@dataclasses.dataclass(frozen=True, slots=True)
class RedisServer:
    """A running ``redis-server``: its TCP port and its unix socket."""

    port: int
    socket_path: Path

    @property
    def url(self) -> str:
        """Return the URL of database 0 over TCP."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        """Return the URL of database 0 over the unix socket."""
        return f"unix://{self.socket_path}?db=0"


def wait_redis(port: int, *, proc: subprocess.Popen[bytes], deadline: float = 20.0) -> None:
    """Wait until a Redis server answers PING on ``port``; fail if ``proc`` exits first."""
    end = time.monotonic() + deadline
    last: Exception | None = None
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode} before answering")
        try:
            # Spoken raw, so that the helper needs no client library.
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"redis-server on port {port} did not answer within {deadline} s ({last})")


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[RedisServer]:
    """Run a ``redis-server`` with no persistence, its files in ``directory``, for the block."""
    binary = require_binary(
        "redis-server", "apt-get install redis-server (scripts/install-peers.sh)"
    )
    port = free_port()
    sock = directory / "redis.sock"
    argv = [
        binary,
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--unixsocket", str(sock),
        "--unixsocketperm", "700",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(directory),
    ]  # fmt: skip
    log = directory / "redis.log"
    with running(argv, log=log) as proc:
        try:
            wait_redis(port, proc=proc)
        except Exception:
            sys.stderr.write(log.read_text(errors="replace")[-4000:])
            raise
        yield RedisServer(port, sock)


# --------------------------------------------------------------------------------------------
# Peers that are not on PATH, and what tests of pushed telemetry need around them
# --------------------------------------------------------------------------------------------

#: Where ``scripts/install-peers.sh`` unpacks peers that are no Debian bookworm package.
PEERS_DIR = Path(os.environ.get("OTEL_PANEL_RECEIVER_PEERS_DIR", "/opt/otel-panel-receiver-peers"))
INSTALL_PEERS = "bash scripts/install-peers.sh"
#: The first VictoriaMetrics packaged by Debian (trixie) with OTLP ingest.
VICTORIA_METRICS_MIN = (1, 112)


def missing_peer(reason: str) -> NoReturn:
    """Fail under CI, skip elsewhere: a peer the test needs is not there."""
    if in_ci():
        pytest.fail(reason)
    pytest.skip(reason)


def require_victoria_metrics() -> str:
    """Return the path of VictoriaMetrics >= 1.112 (``$VICTORIA_METRICS_BIN`` or the peers dir).

    Debian bookworm's ``/usr/bin/victoria-metrics`` (1.79) has no OTLP ingest, so PATH is not
    searched; the peers dir's ``VERSION`` file (written by the install script) is checked.
    """
    explicit = os.environ.get("VICTORIA_METRICS_BIN", "")
    root = PEERS_DIR / "victoria-metrics"
    path = Path(explicit) if explicit else root / "usr" / "bin" / "victoria-metrics"
    if not os.access(path, os.X_OK):
        missing_peer(f"VictoriaMetrics >= 1.112 is not at {path}; install it with: {INSTALL_PEERS}")
    if not explicit and (root / "VERSION").exists():
        version = (root / "VERSION").read_text().strip()
        numbers = tuple(int(part) for part in version.split("+")[0].split(".")[:2])
        if numbers < VICTORIA_METRICS_MIN:
            missing_peer(f"VictoriaMetrics {version} at {path} has no OTLP ingest: {INSTALL_PEERS}")
    return str(path)


def require_rotel() -> str:
    """Return the path of the ``rotel-agent`` binary the ``rotel`` wheel ships."""
    try:
        import rotel
    except ImportError:
        missing_peer("rotel is not installed; install it with: pip install -e '.[test]'")
    path = Path(rotel.__file__).parent / "rotel-agent"
    if not os.access(path, os.X_OK):
        missing_peer(f"the rotel wheel has no executable {path}; reinstall: pip install rotel")
    return str(path)


def wait_tcp(
    port: int, *, proc: subprocess.Popen[bytes] | None = None, deadline: float = 20.0
) -> None:
    """Wait until 127.0.0.1:``port`` accepts a connection; fail early if ``proc`` exits."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {deadline} s")


@contextlib.contextmanager
def victoria_metrics(tmp: Path) -> Iterator[str]:
    """Run VictoriaMetrics (OTLP ingest) on a free port for the block; yield its base URL.

    The rollup cache is off and the latency offset 0, so a query sees what was just written
    (after :func:`vm_flush`).
    """
    binary = require_victoria_metrics()
    port = free_port()
    argv = [
        binary,
        f"-httpListenAddr=127.0.0.1:{port}",
        f"-storageDataPath={tmp / 'victoria-metrics'}",
        "-search.latencyOffset=0s",
        "-search.disableCache",
        "-loggerLevel=WARN",
    ]
    url = f"http://127.0.0.1:{port}"
    with running(argv, ready_url=f"{url}/health", log=tmp / "victoria-metrics.log"):
        yield url


def vm_flush(base: str) -> None:
    """Make every sample VictoriaMetrics received so far searchable."""
    with urllib.request.urlopen(f"{base}/internal/force_flush", timeout=10) as resp:
        resp.read()


def promql(base: str, expr: str) -> list[dict[str, Any]]:
    """Return the result vector of a PromQL instant query (Prometheus or VictoriaMetrics)."""
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        doc = json.load(resp)
    assert doc["status"] == "success", doc
    result: list[dict[str, Any]] = doc["data"]["result"]
    return result


def rotel_argv(
    binary: str,
    tmp: Path,
    *,
    http_port: int,
    grpc_port: int,
    metrics_url: str,
    logs_url: str,
    traces_url: str,
) -> list[str]:
    """Return the argv of a rotel collector: OTLP in on loopback, OTLP/HTTP out per signal."""
    return [
        binary,
        "start",
        "--pid-file", str(tmp / f"rotel-{http_port}.pid"),
        "--log-file", str(tmp / f"rotel-{http_port}.daemon.log"),
        "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}",
        "--otlp-http-endpoint", f"127.0.0.1:{http_port}",
        "--exporter", "otlp",
        "--otlp-exporter-protocol", "http",
        "--otlp-exporter-metrics-endpoint", metrics_url,
        "--otlp-exporter-logs-endpoint", logs_url,
        "--otlp-exporter-traces-endpoint", traces_url,
    ]  # fmt: skip


@contextlib.contextmanager
def listening(
    argv: Sequence[str], *, port: int, log: Path, deadline: float = 20.0
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` for the block, ready when ``port`` accepts connections; output into ``log``.

    For peers with no HTTP readiness URL (rotel's OTLP/HTTP port answers only POSTs). The log
    is appended to, so a restarted peer keeps one log.
    """
    with open(log, "ab") as out:
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_tcp(port, proc=proc, deadline=deadline)
            yield proc
        finally:
            stop(proc)


def worker_pids(pid: int) -> list[int]:
    """Return the child processes of ``pid`` (gunicorn's workers under its arbiter)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            out += [int(child) for child in (task / "children").read_text().split()]
    return out


def rss_bytes(pid: int) -> int:
    """Return the resident set size of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for process {pid}")


def post_bodies(
    port: int, bodies: Iterable[bytes], *, pace: float = 0.0
) -> list[tuple[int, float]]:
    """POST bodies in order on one keep-alive connection as the panel does (``text/plain``).

    Return each answer's status and latency in seconds; ``pace`` seconds pass between the
    start of one request and the next (0: back to back).
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    out: list[tuple[int, float]] = []
    next_at = time.monotonic()
    try:
        for body in bodies:
            if pace:
                time.sleep(max(0.0, next_at - time.monotonic()))
                next_at += pace
            began = time.perf_counter()
            conn.request(
                "POST", "/write", body=body, headers={"Content-Type": "text/plain;charset=UTF-8"}
            )
            resp = conn.getresponse()
            resp.read()
            out.append((resp.status, time.perf_counter() - began))
    finally:
        conn.close()
    return out


def scrape(url: str, metric: str) -> list[tuple[dict[str, str], float]]:
    """Return the samples named ``metric`` of a Prometheus text exposition at ``url``."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == metric
    ]


def by_label_set(
    samples: Iterable[tuple[Mapping[str, str], float]],
    names: Sequence[str],
    *,
    ignore: Callable[[str], bool] = lambda name: False,
) -> dict[tuple[str, ...], float]:
    """Key samples by the values of ``names`` (an absent label reads ``""``).

    Every other label must be ``ignore``-d (target or resource labels); two samples with one
    key are an error.
    """
    out: dict[tuple[str, ...], float] = {}
    for labels, value in samples:
        extra = {k for k in labels if k not in names and not ignore(k)}
        assert not extra, f"unexpected labels {extra} in {dict(labels)}"
        key = tuple(labels.get(name, "") for name in names)
        assert key not in out, f"two series for one label set: {dict(labels)}"
        out[key] = value
    return out


def wait_until(
    check: Callable[[], bool], *, deadline: float, interval: float = 0.2, what: str = "condition"
) -> None:
    """Poll ``check`` until it is true; raise ``TimeoutError`` naming ``what`` at the deadline."""
    end = time.monotonic() + deadline
    while not check():
        if time.monotonic() >= end:
            raise TimeoutError(f"{what} did not happen within {deadline} s")
        time.sleep(interval)


def vm_series(base: str, metric: str, names: Sequence[str]) -> dict[tuple[str, ...], float]:
    """Return the latest value of every series of ``metric`` in VictoriaMetrics, keyed by ``names``.

    Labels from OTLP resource attributes (``service.name``...) keep their dots and are ignored.
    """
    rows = [(r["metric"], float(r["value"][1])) for r in promql(base, metric)]
    return by_label_set(rows, names, ignore=lambda name: name == "__name__" or "." in name)


def diff_series(
    got: Mapping[tuple[str, ...], float],
    want: Mapping[tuple[str, ...], float],
    names: Sequence[str],
    *,
    limit: int = 12,
) -> list[str]:
    """Return one readable line per label set whose value differs (at most ``limit``)."""
    lines = [
        f"{dict(zip(names, key, strict=True))}: got {got.get(key)}, want {want.get(key)}"
        for key in sorted(set(got) | set(want))
        if got.get(key) != want.get(key)
    ]
    return lines[:limit] + ([f"... and {len(lines) - limit} more"] if len(lines) > limit else [])


# --------------------------------------------------------------------------------------------
# Replaying traffic against several processes, and reading their totals
# --------------------------------------------------------------------------------------------

#: The two counters of the receiver, as ``/metrics`` names them.
SESSIONS_TOTAL = "grafana_analytics_sessions_total"
DURATION_TOTAL = "grafana_analytics_sessions_duration_seconds_total"
#: Per metric, per label set (the values of the names given): the value.
Totals = dict[str, dict[tuple[str, ...], float]]


class Answers:
    """Count the answers of every lane, so that a test can act after the ``n``-th one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.count = 0

    def add(self) -> None:
        """Count one answer."""
        with self._cond:
            self.count += 1
            self._cond.notify_all()

    def wait_for(self, n: int, *, deadline: float = 30.0) -> None:
        """Wait until ``n`` answers have come; raise ``TimeoutError`` at the deadline."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.count >= n, deadline):
                raise TimeoutError(f"only {self.count} of {n} answers within {deadline} s")


@dataclasses.dataclass(slots=True)
class LaneResult:
    """What one lane got: the status of each answered request, in order, and how it ended.

    ``error`` names the connection error that ended the lane early ("" when every request was
    answered); the requests after it were not sent. ``retries`` counts requests sent again.
    """

    statuses: list[int] = dataclasses.field(default_factory=list)
    error: str = ""
    retries: int = 0


_CONNECTION_ERRORS = (OSError, http.client.HTTPException)


def post_lane(
    requests: Sequence[tuple[int, bytes]],
    *,
    spread: int = 1,
    retry: bool = False,
    answers: Answers | None = None,
) -> LaneResult:
    """POST each body to its port on 127.0.0.1, in order, on kept-alive connections.

    The lane keeps ``spread`` connections per port and sends its ``i``-th request on the
    ``i % spread``-th, so that consecutive requests may reach different worker processes (a
    worker serves a kept-alive connection to its end). A connection error (refused, reset,
    closed before the answer) ends the lane, so that a session's later events never overtake
    an earlier one. With ``retry`` the request is first sent once more on a new connection, as
    clients do on a kept-alive connection the server closed; only for traffic in which a
    repeated event adds nothing (a repeated time adds no duration, a known session is not
    counted again).
    """
    conns: dict[tuple[int, int], http.client.HTTPConnection] = {}
    result = LaneResult()
    attempts = 2 if retry else 1
    try:
        for i, (port, body) in enumerate(requests):
            slot = (port, i % spread)
            for attempt in range(attempts):
                if slot not in conns:
                    conns[slot] = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                try:
                    conns[slot].request(
                        "POST",
                        "/write",
                        body=body,
                        headers={"Content-Type": "text/plain;charset=UTF-8"},
                    )
                    resp = conns[slot].getresponse()
                    resp.read()
                except _CONNECTION_ERRORS as exc:
                    conns.pop(slot).close()
                    result.error = f"{type(exc).__name__}: {exc}"
                    result.retries += attempt + 1 < attempts
                    continue
                result.error = ""
                result.statuses.append(resp.status)
                if answers is not None:
                    answers.add()
                break
            if result.error:
                break
        return result
    finally:
        for conn in conns.values():
            conn.close()


def replay_lanes(
    lanes: Sequence[Sequence[tuple[int, bytes]]],
    *,
    spread: int = 1,
    retry: bool = False,
    answers: Answers | None = None,
) -> list[LaneResult]:
    """Run :func:`post_lane` for every lane at once, one thread per lane."""
    if not lanes:
        return []
    with ThreadPoolExecutor(len(lanes)) as pool:
        futures = [
            pool.submit(post_lane, lane, spread=spread, retry=retry, answers=answers)
            for lane in lanes
        ]
        return [future.result() for future in futures]


def totals_of(text: str, names: Sequence[str]) -> Totals:
    """Return both counters of a Prometheus text exposition, by label set (``by_label_set``)."""
    from prometheus_client.parser import text_string_to_metric_families

    rows: dict[str, list[tuple[dict[str, str], float]]] = {SESSIONS_TOTAL: [], DURATION_TOTAL: []}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in rows:
                rows[sample.name].append((sample.labels, sample.value))
    return {metric: by_label_set(samples, names) for metric, samples in rows.items()}


def scrape_totals(port: int, names: Sequence[str]) -> Totals:
    """Return both counters of one ``/metrics`` answer on 127.0.0.1:``port``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return totals_of(resp.read().decode(), names)


def add_totals(*parts: Totals) -> Totals:
    """Return the sum of several processes' totals, per metric and label set."""
    out: Totals = {SESSIONS_TOTAL: {}, DURATION_TOTAL: {}}
    for part in parts:
        for metric, series in part.items():
            for key, value in series.items():
                out[metric][key] = out[metric].get(key, 0.0) + value
    return out


def wait_stable_totals(
    port: int, names: Sequence[str], *, quiet: float, deadline: float = 20.0
) -> Totals:
    """Return ``/metrics``' totals once they stayed the same for ``quiet`` seconds.

    Give ``quiet`` longer than the workers' export interval: then no delta is still on its way.
    """
    end = time.monotonic() + deadline
    last, since = scrape_totals(port, names), time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() > end:
            raise TimeoutError(f"/metrics on port {port} still changed after {deadline} s")
        time.sleep(0.1)
        now = scrape_totals(port, names)
        if now != last:
            last, since = now, time.monotonic()
    return last


def single_process_totals(bodies: Iterable[bytes], names: Sequence[str]) -> Totals:
    """Return the totals one in-process app (memory store, Prometheus reader) shows for ``bodies``.

    The reference for the multi-process layouts: the same bodies in the same per-session order
    through ``create_app`` and ``falcon.testing``, then its own ``/metrics``.
    """
    from falcon.testing import TestClient

    from otel_panel_receiver import Settings, create_app

    app = create_app(Settings(disable_session_log=True))
    try:
        client = TestClient(app)
        for body in bodies:
            status = client.simulate_post("/write", body=body).status_code
            assert status == 201, f"the in-process app answered {status}"
        text = client.simulate_get("/metrics").text
    finally:
        app.close()
    return totals_of(text, names)


def kill_all(proc: subprocess.Popen[bytes], *, deadline: float = 10.0) -> list[int]:
    """SIGKILL a server and its workers (the master first, so that it forks no new one).

    Return the workers' pids, once each is gone or a zombie.
    """
    workers = worker_pids(proc.pid)
    proc.kill()
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(deadline)

    def all_dead() -> bool:
        for pid in workers:
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                # The third field of /proc/PID/stat is the state; Z: dead, not yet reaped.
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    return False
        return True

    wait_until(all_dead, deadline=deadline, interval=0.05, what="the killed workers' exit")
    return workers


def diff_totals(got: Totals, want: Totals, names: Sequence[str]) -> list[str]:
    """Return one readable line per metric and label set whose value differs."""
    return [
        f"{metric} {line}"
        for metric in (SESSIONS_TOTAL, DURATION_TOTAL)
        for line in diff_series(got.get(metric, {}), want.get(metric, {}), names)
    ]
