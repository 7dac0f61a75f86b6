"""Peers the harness starts beside the receiver: a rotel OTLP collector and a Redis server.

Each runs on free loopback ports in its own process group (so that its CPU time can be read
apart from the server's) and is always stopped when its block ends. Nothing is installed here:
a missing peer is reported by the section that needed it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from benchmarks.servers import Server, free_port, wait_ready

__all__ = [
    "REDIS_HINT",
    "ROTEL_HINT",
    "RedisPeer",
    "find_redis_server",
    "in_ci",
    "redis_version",
    "rotel_agent",
    "running_collector",
    "running_redis",
]

ROTEL_HINT: Final = "pip install -e '.[test]'"
REDIS_HINT: Final = "apt-get install redis-server, or bash scripts/install-peers.sh"


def in_ci() -> bool:
    """Return whether this runs in CI, where a missing peer makes the run fail (as in the tests)."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


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
            wait_ready(f"{live.url}/v1/metrics", proc, deadline, post=True)
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


def _wait_redis(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    """Wait until Redis answers PING on ``port`` (spoken raw: no client library needed)."""
    end = time.monotonic() + deadline
    last: Exception | None = None
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode} before answering")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"redis-server on port {port} did not answer within {deadline:g} s ({last})")


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
                _wait_redis(port, proc, deadline)
            except (RuntimeError, TimeoutError):
                with contextlib.suppress(OSError):
                    sys.stderr.write(Path(tmp, "redis.log").read_text(errors="replace")[-4000:])
                raise
            yield RedisPeer(live.url, proc.pid)
        finally:
            live.stop()
