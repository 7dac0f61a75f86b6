"""Helpers for tests that run real programs: free ports, start-up deadlines, clean stops.

A test that needs a real peer which is missing **fails** under ``CI=true`` and skips elsewhere,
with the install command in the reason.
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
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAYLOADS = REPO.parent / "shared" / "spec" / "payloads"
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
