"""Real peers a test starts beside the receiver: redis-server, VictoriaMetrics, a rotel collector.

Each runs on free loopback ports for the duration of a block and is always stopped. A peer that
is missing fails the test under ``CI=true`` and skips it elsewhere (``procs.missing_peer``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.procs import free_port, missing_peer, require_binary, running

__all__ = [
    "INSTALL_PEERS",
    "PEERS_DIR",
    "VICTORIA_METRICS_MIN",
    "RedisServer",
    "promql",
    "redis_server",
    "require_rotel",
    "require_victoria_metrics",
    "rotel_argv",
    "victoria_metrics",
    "vm_flush",
    "wait_redis",
]

#: Where ``scripts/install-peers.sh`` unpacks peers that are no Debian bookworm package.
PEERS_DIR = Path(os.environ.get("OTEL_PANEL_RECEIVER_PEERS_DIR", "/opt/otel-panel-receiver-peers"))
INSTALL_PEERS = "bash scripts/install-peers.sh"
#: The first VictoriaMetrics packaged by Debian (trixie) with OTLP ingest.
VICTORIA_METRICS_MIN = (1, 112)


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
    raise TimeoutError(f"redis-server on port {port} did not answer within {deadline:g} s ({last})")


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
