"""Peers the harness starts beside the receiver: a rotel OTLP collector and a Redis server.

Each runs on free loopback ports in its own process group (so that its CPU time can be read
apart from the server's) and is always stopped when its block ends. Nothing is installed here:
a missing peer is reported by the section that needed it. Waiting for a peer and picking its
ports are the tests' helpers (``tests.support``), so both wait alike.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from benchmarks.servers import Server
from tests.support.peers import wait_redis
from tests.support.procs import free_port, wait_http

__all__ = [
    "REDIS_HINT",
    "ROTEL_HINT",
    "RedisPeer",
    "find_redis_server",
    "redis_version",
    "rotel_agent",
    "running_collector",
    "running_redis",
]

ROTEL_HINT: Final = "pip install -e '.[test]'"
REDIS_HINT: Final = "apt-get install redis-server, or bash scripts/install-peers.sh"


def rotel_agent() -> str | None:
    """Return the path of the ``rotel-agent`` the PyPI ``rotel`` wheel ships, or ``None``."""
    try:
        import rotel  # type: ignore[import-untyped,unused-ignore]  # an optional test peer
    except ImportError:
        return None
    agent = Path(rotel.__file__).resolve().parent / "rotel-agent"
    return str(agent) if agent.exists() else None


@contextlib.contextmanager
def running_collector(agent: str, *, deadline: float = 20.0) -> Iterator[str]:
    """Run a rotel OTLP collector that drops what it receives; yield its OTLP/HTTP base URL."""
    http, grpc = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="otel-panel-bench-rotel-") as tmp:
        argv = [
            agent, "start", "--pid-file", f"{tmp}/rotel.pid",
            "--otlp-grpc-endpoint", f"127.0.0.1:{grpc}",
            "--otlp-http-endpoint", f"127.0.0.1:{http}",
            "--exporter", "blackhole",
        ]  # fmt: skip
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        live = Server(proc, f"http://127.0.0.1:{http}", tuple(argv))
        try:
            # Its OTLP/HTTP port answers POSTs only: ready when an empty export is accepted.
            ready = urllib.request.Request(
                f"{live.url}/v1/metrics",
                data=b"",
                headers={"Content-Type": "application/x-protobuf"},
            )
            wait_http(ready, proc=proc, deadline=deadline)
            yield live.url
        finally:
            live.stop()


@dataclass(frozen=True, slots=True)
class RedisPeer:
    """A running ``redis-server``: the URL of its database 0 and its pid (its process group)."""

    url: str
    pid: int


def find_redis_server() -> str | None:
    """Return the path of ``redis-server``, or ``None``."""
    return shutil.which("redis-server")


def redis_version(exe: str) -> str:
    """Return the server's version (``7.0.15``)."""
    out = subprocess.run(
        [exe, "--version"], capture_output=True, text=True, timeout=10, check=False
    )
    for word in out.stdout.split():
        if word.startswith("v="):
            return word.removeprefix("v=")
    return out.stdout.strip() or "unknown"


@contextlib.contextmanager
def running_redis(exe: str, *, deadline: float = 20.0) -> Iterator[RedisPeer]:
    """Run a ``redis-server`` with no persistence on a free loopback port for the block."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="otel-panel-bench-redis-") as tmp:
        argv = [
            exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
            "--appendonly", "no", "--dir", tmp, "--logfile", f"{tmp}/redis.log",
        ]  # fmt: skip
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: its CPU is read apart
        )
        live = Server(proc, f"redis://127.0.0.1:{port}/0", tuple(argv))
        try:
            try:
                wait_redis(port, proc=proc, deadline=deadline)
            except (RuntimeError, TimeoutError):
                with contextlib.suppress(OSError):
                    sys.stderr.write(Path(tmp, "redis.log").read_text(errors="replace")[-4000:])
                raise
            yield RedisPeer(live.url, proc.pid)
        finally:
            live.stop()
