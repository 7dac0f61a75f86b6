"""Run wrk with ``post.lua`` against a URL and parse what the script reports."""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["LUA_SCRIPT", "WrkResult", "find_wrk", "run_wrk", "wrk_version"]

LUA_SCRIPT: Final = Path(__file__).resolve().parent / "post.lua"
INSTALL_HINT: Final = "apt-get install wrk, or bash scripts/install-peers.sh"


@dataclass(frozen=True, slots=True)
class WrkResult:
    """What one wrk run measured; latencies in milliseconds."""

    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non201: int
    socket_errors: int
    client_cpu: float  # wrk's CPU seconds over the run's seconds: near 1.0, wrk was the limit

    @property
    def rate(self) -> float:
        """Return the completed requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0


def find_wrk() -> str | None:
    """Return the path of wrk, or ``None``; nothing is installed from here."""
    return shutil.which("wrk")


def wrk_version(exe: str) -> str:
    """Return wrk's version (``debian/4.1.0-3+b2 [epoll]``)."""
    out = subprocess.run([exe, "-v"], capture_output=True, text=True, timeout=10, check=False)
    return (out.stdout or out.stderr).splitlines()[0].split(" Copyright")[0].removeprefix("wrk ")


def run_wrk(
    exe: str,
    url: str,
    round_file: Path,
    *,
    seconds: float,
    connections: int = 16,
    first_index: int = 0,
) -> WrkResult:
    """Run one wrk thread with ``connections`` connections for ``seconds`` and parse its report."""
    argv = [
        exe, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s",
        "-s", str(LUA_SCRIPT), url, "--", str(round_file), str(first_index),
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk is the only child reaped meanwhile
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip() or out.stdout}")
    data = json.loads(line.removeprefix("BENCH "))
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1e3,
        p90_ms=data["p90_us"] / 1e3,
        p99_ms=data["p99_us"] / 1e3,
        max_ms=data["max_us"] / 1e3,
        non201=data["non201"],
        socket_errors=data["connect"] + data["read"] + data["write"] + data["timeout"],
        client_cpu=cpu / (data["duration_us"] / 1e6) if data["duration_us"] else 0.0,
    )
