"""Serve an app, load it with wrk, and read what it cost: the measurement every HTTP section
makes (``http_ingest``, ``collector_down``, ``otlp_tuning``)."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from benchmarks.payloads import Mix
from benchmarks.plan import Plan
from benchmarks.servers import (
    AppSpec,
    Server,
    ServerSpec,
    describe,
    group_cpu_seconds,
    machine_busy_seconds,
    running,
)
from benchmarks.wrk import WrkResult, run_wrk
from otel_panel_receiver import Settings

__all__ = [
    "CONNECTIONS",
    "MEASURED_FROM",
    "Measurement",
    "Slice",
    "alternate",
    "connections_per_worker",
    "expected_sessions",
    "measure",
]

CONNECTIONS: Final = 16
#: Where the measured run starts in the endless mix: far past the warm-up's sessions.
MEASURED_FROM: Final = 10_000_000
#: A measured run tried again starts this much further: its sessions are new ones.
_TRY_STRIDE: Final = 1_000_000
_SESSIONS_METRIC: Final = "grafana_analytics_sessions_total"


@dataclass(frozen=True, slots=True)
class Measurement:
    """One server and app under load: what wrk saw and the server's CPU per request."""

    server: ServerSpec
    app: AppSpec
    wrk: WrkResult
    cpu_us: float
    argv: tuple[str, ...]
    others: float  # cores used by other processes during the run: the row's noise
    stop_seconds: float | None = None  # the graceful stop, when timed; None: it was killed
    peer_cpu_us: float = 0.0  # CPU per request of the peers the server used (redis-server)
    #: Every wrk run on this server, warm-up and tries included: (first index, requests).
    runs: tuple[tuple[int, int], ...] = ()
    sessions: float | None = None  # sessions /metrics counted after the runs (receiver only)
    #: Connections each worker held half-way through the run, most first; () when unknown.
    connections: tuple[int, ...] = ()
    tries: int = 1  # measured runs made until the connections were spread over the workers

    @property
    def command(self) -> str:
        """Return the command line for the docs, with the app's environment."""
        return describe(self.argv, self.app.env)


@dataclass(frozen=True, slots=True)
class _Run:
    """One measured wrk run: what wrk saw, and the CPU seconds used meanwhile."""

    wrk: WrkResult
    server: float
    peers: float
    machine: float
    connections: tuple[int, ...]

    def costs(self) -> tuple[float, float, float]:
        """Return the server's and its peers' CPU µs per request, and the cores the other
        processes of the machine used meanwhile (wrk's own CPU left out)."""
        result = self.wrk
        per_request = 1e6 / result.requests if result.requests else 0.0
        busy = max(
            0.0, self.machine - self.server - self.peers - result.client_cpu * result.seconds
        )
        others = busy / result.seconds if result.seconds else 0.0
        return self.server * per_request, self.peers * per_request, others


def measure(
    server: ServerSpec,
    app: AppSpec,
    plan: Plan,
    wrk: str,
    round_file: Path,
    *,
    env: Mapping[str, str] | None = None,
    stop_grace: float | None = None,
    peers: Sequence[int] = (),
    tries: int = 1,
) -> Measurement:
    """Serve ``app``, warm it up, then load it for ``plan.http_seconds`` and read its CPU.

    ``peers`` are the process groups of programs the server uses (redis-server): their CPU is
    counted apart. With ``stop_grace``, also time the graceful stop (killed after that long).
    With ``tries`` > 1 and several workers, a measured run in which one worker held every
    connection is made again on new connections, up to ``tries`` runs; the last one counts.
    """
    if env:
        app = dataclasses.replace(app, env={**app.env, **env})
    with running(server, app, base_env=_clean_environment()) as live:
        url = f"{live.url}/write"
        runs: list[tuple[int, int]] = []
        if plan.http_warmup_seconds:
            warm = run_wrk(wrk, url, round_file, seconds=plan.http_warmup_seconds)
            runs.append((0, warm.requests))
        for attempt in range(max(1, tries)):
            first = MEASURED_FROM + attempt * _TRY_STRIDE
            run = _measured_run(live, server, plan, wrk, round_file, first=first, peers=peers)
            runs.append((first, run.wrk.requests))
            if not _one_worker_held_all(run.connections):
                break
        # Several workers add their counts to /metrics' files every second: wait for the last.
        sessions = None if app.baseline else _sessions_counted(live.url, server.workers > 1)
        stopped = live.stop(stop_grace) if stop_grace is not None else None
    result = run.wrk
    cpu_us, peer_cpu_us, others = run.costs()
    return Measurement(
        server,
        app,
        result,
        cpu_us,
        live.argv,
        others,
        stopped,
        peer_cpu_us,
        tuple(runs),
        sessions,
        run.connections,
        len(runs) - bool(plan.http_warmup_seconds),
    )


@dataclass(frozen=True, slots=True)
class Slice:
    """One short measured run of one of several servers kept up side by side."""

    wrk: WrkResult
    cpu_us: float  # the server's CPU per request
    others: float  # cores used by other processes meanwhile


def alternate(
    apps: Sequence[tuple[ServerSpec, AppSpec]],
    plan: Plan,
    wrk: str,
    round_file: Path,
    *,
    slices: int,
    seconds: float,
    quiet_cores: float = math.inf,
    extra: int = 0,
) -> list[list[Slice]]:
    """Serve every app at once, warm each, then load them one at a time for ``seconds``,
    ``slices`` times each; return each app's slices (the ``i``-th of every app measured one
    right after the other, which goes first turning round).

    A round during which other processes used more than ``quiet_cores`` in any slice was
    disturbed (see :func:`quiet`); up to ``extra`` more rounds are measured until ``slices`` of
    them were not. Two servers measured seconds apart share the machine's drift, which over the
    minutes of separate runs moves a rate by a fifth on a shared machine; an idle server beside
    the loaded one costs nothing but its timers.
    """
    with contextlib.ExitStack() as stack:
        lives = [
            stack.enter_context(running(server, app, base_env=_clean_environment()))
            for server, app in apps
        ]
        if plan.http_warmup_seconds:
            for live in lives:
                run_wrk(wrk, f"{live.url}/write", round_file, seconds=plan.http_warmup_seconds)
        short = dataclasses.replace(plan, http_seconds=seconds)
        out: list[list[Slice]] = [[] for _ in apps]
        for i in range(slices + extra):
            if i >= slices and sum(quiet(r, quiet_cores) for r in zip(*out, strict=True)) >= slices:
                break
            order = list(range(len(apps)))
            if i % 2:
                order.reverse()
            for k in order:
                run = _measured_run(
                    lives[k], apps[k][0], short, wrk, round_file,
                    first=MEASURED_FROM + i * _TRY_STRIDE, peers=(),
                )  # fmt: skip
                cpu_us, _, others = run.costs()
                out[k].append(Slice(run.wrk, cpu_us, others))
    return out


def quiet(round_: Sequence[Slice], cores: float) -> bool:
    """Return whether other processes used at most ``cores`` during every slice of a round."""
    return all(s.others <= cores for s in round_)


def _measured_run(
    live: Server,
    server: ServerSpec,
    plan: Plan,
    wrk: str,
    round_file: Path,
    *,
    first: int,
    peers: Sequence[int],
) -> _Run:
    port = int(live.url.rsplit(":", 1)[1])
    split: list[int] = []
    # Half-way through the run, how wrk's kept-alive connections sit on the workers.
    sample = threading.Timer(
        plan.http_seconds / 2, lambda: split.extend(connections_per_worker(port, server))
    )
    cpu, peer, busy = group_cpu_seconds(live.proc.pid), _cpu(peers), machine_busy_seconds()
    sample.start()
    try:
        result = run_wrk(
            wrk,
            f"{live.url}/write",
            round_file,
            seconds=plan.http_seconds,
            connections=CONNECTIONS,
            first_index=first,
        )
    finally:
        sample.cancel()
        sample.join()
    return _Run(
        result,
        group_cpu_seconds(live.proc.pid) - cpu,
        _cpu(peers) - peer,
        machine_busy_seconds() - busy,
        tuple(split),
    )


def _one_worker_held_all(split: Sequence[int]) -> bool:
    return len(split) > 1 and sum(split[1:]) == 0 and split[0] > 0


def connections_per_worker(port: int, server: ServerSpec) -> list[int]:
    """Return how many established connections to ``port`` each process holds, most first,
    with a 0 for each of ``server.workers`` that holds none; ``[]`` without ``ss``."""
    ss = shutil.which("ss")
    if ss is None:
        return []
    out = subprocess.run(
        [ss, "-tnpH", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if out.returncode != 0:
        return []
    held = collections.Counter(re.findall(r"pid=(\d+)", out.stdout)).values()
    return sorted([*held, *[0] * max(0, server.workers - len(held))], reverse=True)


def _cpu(pgids: Sequence[int]) -> float:
    return sum(group_cpu_seconds(p) for p in pgids)


def _sessions_counted(url: str, settle: bool) -> float:
    """Return the sum of the sessions counter ``/metrics`` shows; with ``settle``, once it has
    stayed the same for 1.5 s (longer than the workers' 1 s export interval), at most 6 s."""

    def scrape() -> float:
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith((_SESSIONS_METRIC + "{", _SESSIONS_METRIC + " "))
        )

    last, since, end = scrape(), time.monotonic(), time.monotonic() + 6
    while settle and time.monotonic() - since < 1.5 and time.monotonic() < end:
        time.sleep(0.25)
        now = scrape()
        if now != last:
            last, since = now, time.monotonic()
    return last


def _clean_environment() -> dict[str, str]:
    """Return this process's environment without what configures the receiver.

    Settings variables (``DISABLE_SESSION_LOG``, ...) and ``OTEL_*`` left in the shell would
    change what is measured, for example push to a collector.
    """
    fields = dataclasses.fields(Settings)
    names = {f.name.upper() for f in fields} | {str(f.metadata.get("env", "")) for f in fields}
    return {
        key: value
        for key, value in os.environ.items()
        if key not in names and not key.startswith("OTEL_")
    }


def expected_sessions(mix: Mix, m: Measurement) -> tuple[int, int]:
    """Return the fewest and most sessions the requests of ``m`` can hold.

    wrk reports the requests it completed; up to one more per connection was in flight when
    each run ended, and the server may have handled it. wrk calls ``request()`` once before
    the run to check the script, so the first index a run sends is one past the one asked for.
    """

    def count(extra: int) -> int:
        return sum(mix.sessions_in(first + 1, requests + extra) for first, requests in m.runs)

    return count(0), count(CONNECTIONS)
