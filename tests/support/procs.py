"""Process control for tests that run real programs: free ports, start-up deadlines, clean stops.

A test that needs a real program which is missing **fails** under ``CI=true`` and skips
elsewhere, with the install command in the reason. The benchmarks start their servers and
peers with the same helpers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NoReturn

import pytest

__all__ = [
    "REPO",
    "VENV_BIN",
    "free_port",
    "free_ports",
    "in_ci",
    "kill_all",
    "listening",
    "missing_peer",
    "require_binary",
    "rss_bytes",
    "running",
    "stop",
    "wait_http",
    "wait_tcp",
    "wait_until",
    "worker_pids",
]

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def in_ci() -> bool:
    """Return whether the tests run in CI, where a missing peer is a failure."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing_peer(reason: str) -> NoReturn:
    """Fail under CI, skip elsewhere: a peer the test needs is not there."""
    if in_ci():
        pytest.fail(reason)
    pytest.skip(reason)


def require_binary(name: str, install: str) -> str:
    """Return the path of ``name``, or fail (CI) / skip (elsewhere) saying how to install it."""
    path = shutil.which(name) or (str(VENV_BIN / name) if (VENV_BIN / name).exists() else None)
    if path is None:
        missing_peer(f"{name} is not installed; install it with: {install}")
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
    url: str | urllib.request.Request,
    *,
    proc: subprocess.Popen[bytes] | None = None,
    deadline: float = 20.0,
) -> None:
    """Wait until ``url`` answers 2xx; fail early if ``proc`` exits, fail at the deadline.

    ``url`` may be a ``Request``, for a server that is ready when it answers a POST.
    """
    where = url.full_url if isinstance(url, urllib.request.Request) else url
    end = time.monotonic() + deadline
    last: Exception | None = None
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {where} answered")
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
    raise TimeoutError(f"{where} did not answer within {deadline:g} s (last error: {last})")


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


def wait_until(
    check: Callable[[], bool], *, deadline: float, interval: float = 0.2, what: str = "condition"
) -> None:
    """Poll ``check`` until it is true; raise ``TimeoutError`` naming ``what`` at the deadline."""
    end = time.monotonic() + deadline
    while not check():
        if time.monotonic() >= end:
            raise TimeoutError(f"{what} did not happen within {deadline} s")
        time.sleep(interval)


def stop(proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, grace: float = 15.0) -> int:
    """Send ``sig``, wait up to ``grace`` seconds, then kill it and its workers; return its status.

    A server killed alone would leave its workers running, waiting for a stop that never comes.
    """
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            workers: list[int] = []
            with contextlib.suppress(FileNotFoundError):  # it exited meanwhile
                workers = worker_pids(proc.pid)
            proc.kill()
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
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
    with contextlib.ExitStack() as files:
        out = files.enter_context(open(log, "wb")) if log is not None else subprocess.DEVNULL
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
