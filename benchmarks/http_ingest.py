"""Measure ``POST /write`` over HTTP: the receiver and a bare Falcon app under the same servers."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from benchmarks import targets
from benchmarks.payloads import Mix, build_mix
from benchmarks.plan import Plan
from benchmarks.report import NA, Table
from benchmarks.servers import (
    VENV_BIN,
    AppSpec,
    ServerSpec,
    describe,
    group_cpu_seconds,
    machine_busy_seconds,
    running,
)
from benchmarks.wrk import INSTALL_HINT, WrkResult, find_wrk, run_wrk
from otel_panel_receiver import Settings

__all__ = ["BARE", "RECEIVER", "Measurement", "measure", "run"]

RECEIVER: Final = AppSpec("receiver", "otel_panel_receiver.wsgi:app")
BARE: Final = AppSpec("bare Falcon + msgspec", "benchmarks.bare_wsgi:app")
CONNECTIONS: Final = 16
#: Where the measured run starts in the endless mix: far past the warm-up's sessions.
_MEASURED_FROM: Final = 10_000_000
_NEEDS_SHARED_STORE: Final = "n/a (needs shared store)"


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


def measure(
    server: ServerSpec,
    app: AppSpec,
    plan: Plan,
    wrk: str,
    round_file: Path,
    *,
    env: Mapping[str, str] | None = None,
    stop_grace: float | None = None,
) -> Measurement:
    """Serve ``app``, warm it up, then load it for ``plan.http_seconds`` and read its CPU.

    With ``stop_grace``, also time the graceful stop (killed after that many seconds).
    """
    if env:
        app = AppSpec(app.name, app.target, {**app.env, **env}, app.health)
    with running(server, app, base_env=_clean_environment()) as live:
        url = f"{live.url}/write"
        if plan.http_warmup_seconds:
            run_wrk(wrk, url, round_file, seconds=plan.http_warmup_seconds)
        cpu, busy = group_cpu_seconds(live.proc.pid), machine_busy_seconds()
        result = run_wrk(
            wrk,
            url,
            round_file,
            seconds=plan.http_seconds,
            connections=CONNECTIONS,
            first_index=_MEASURED_FROM,
        )
        cpu = group_cpu_seconds(live.proc.pid) - cpu
        busy = machine_busy_seconds() - busy
        stopped = live.stop(stop_grace) if stop_grace is not None else None
    per_request = cpu / result.requests * 1e6 if result.requests else 0.0
    client = result.client_cpu * result.seconds
    others = max(0.0, busy - cpu - client) / result.seconds if result.seconds else 0.0
    return Measurement(server, app, result, per_request, live.argv, others, stopped)


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


def _servers() -> list[ServerSpec]:
    kinds = ("gunicorn-sync", "gunicorn-gthread", "granian")
    return [ServerSpec(kind, workers=n) for n in (1, 2) for kind in kinds]


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _missing(server: ServerSpec, wrk: str | None) -> str | None:
    """Return why ``server`` cannot be measured here, or ``None``."""
    if wrk is None:
        return f"n/a (wrk not installed; {INSTALL_HINT})"
    if not (VENV_BIN / server.program).exists():
        return f"n/a ({server.program} not installed; pip install -e '.[test]')"
    return None


def _tables() -> tuple[Table, Table]:
    load = Table(
        f"HTTP ingest: POST /write, wrk 1 thread, {CONNECTIONS} connections",
        (
            "server",
            "workers",
            "app",
            "req/s",
            "p50 ms",
            "p99 ms",
            "non-201 + errors",
            "server CPU µs/req",
            "wrk CPU",
            "other load",
            "p99 target",
            "met",
        ),
    )
    ratio = Table(
        "HTTP ingest: receiver ÷ bare app, same server, same run",
        (
            "server",
            "workers",
            "receiver req/s",
            "bare req/s",
            "receiver ÷ bare",
            "CPU µs/req receiver - bare",
            "target",
            "met",
        ),
    )
    return load, ratio


def _load_row(table: Table, m: Measurement) -> None:
    w = m.wrk
    table.add(
        m.server.label,
        m.server.workers,
        m.app.name,
        f"{w.rate:,.0f}",
        f"{w.p50_ms:.2f}",
        f"{w.p99_ms:.2f}",
        w.non201 + w.socket_errors,
        f"{m.cpu_us:.0f}",
        f"{w.client_cpu:.0%}",
        f"{m.others:.2f} cores",
        *_p99_cells(table, m),
    )


def _p99_cells(table: Table, m: Measurement) -> tuple[str, str]:
    """Return the target and verdict cells: the p99 target is the receiver's, not the baseline's."""
    if m.app is not RECEIVER:
        return "", ""
    what = f"p99 at {CONNECTIONS} connections, {m.server.label} x{m.server.workers}"
    return str(targets.P99_MS), table.check(
        what, f"{m.wrk.p99_ms:.2f} ms", targets.P99_MS, m.wrk.p99_ms
    )


def _ratio_row(table: Table, server: ServerSpec, receiver: Measurement, bare: Measurement) -> None:
    value = receiver.wrk.rate / bare.wrk.rate if bare.wrk.rate else 0.0
    target = targets.RECEIVER_OVER_BARE
    table.add(
        server.label,
        server.workers,
        f"{receiver.wrk.rate:,.0f}",
        f"{bare.wrk.rate:,.0f}",
        f"{value:.3f}",
        f"{receiver.cpu_us - bare.cpu_us:.0f}",
        target,
        table.check(
            f"receiver ÷ bare, {server.label} x{server.workers}", f"{value:.3f}", target, value
        ),
    )


def _na_rows(load: Table, ratio: Table, server: ServerSpec, app: AppSpec, why: str) -> None:
    if app is not RECEIVER:
        load.add(server.label, server.workers, app.name, why, *[""] * 8)
        return
    target = targets.RECEIVER_OVER_BARE
    load.add(server.label, server.workers, app.name, why, *[""] * 6, targets.P99_MS, NA)
    verdict = ratio.check(f"receiver ÷ bare, {server.label} x{server.workers}", why, target, None)
    ratio.add(server.label, server.workers, why, "", "", "", target, verdict)


def run(plan: Plan) -> list[Table]:
    """Load each server with the receiver, then with the bare app, and compare them."""
    load, ratio = _tables()
    wrk = find_wrk()
    commands: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="otel-panel-bench-") as tmp:
        mix = build_mix()
        round_file = Path(tmp, "round.tsv")
        mix.write_wrk_data(round_file)
        for server in _servers():
            why = _missing(server, wrk)
            if why is not None:
                for app in (RECEIVER, BARE):
                    _na_rows(load, ratio, server, app, why)
                # As with the tests: a missing peer fails in CI and is only noted elsewhere.
                (load.problems if _in_ci() else load.notes).append(f"{server.label}: {why}")
                continue
            assert wrk is not None
            apps: tuple[AppSpec, ...] = (RECEIVER, BARE)
            if server.workers > 1:
                _na_rows(load, ratio, server, RECEIVER, _NEEDS_SHARED_STORE)
                apps = (BARE,) if plan.http_two_workers else ()
                if not apps:
                    _na_rows(load, ratio, server, BARE, "not run (--quick)")
            done = {}
            for app in apps:
                done[app.name] = m = measure(server, app, plan, wrk, round_file)
                _load_row(load, m)
                commands[f"{server.label} x{server.workers}, {app.name}"] = describe(m.argv)
                if m.wrk.non201 or m.wrk.socket_errors:
                    load.problems.append(
                        f"{server.label} x{server.workers}, {app.name}: {m.wrk.non201} answers "
                        f"other than 201 and {m.wrk.socket_errors} socket errors"
                    )
            if RECEIVER.name in done:
                _ratio_row(ratio, server, done[RECEIVER.name], done[BARE.name])
    load.notes.extend(_notes(mix, plan, commands))
    ratio.notes.append(
        "the key figure: requests/s of the receiver divided by the bare app's on the same server "
        "in the same run. CPU µs/req receiver - bare is what the receiver itself costs per request "
        "on that server."
    )
    return [load, ratio]


def _notes(mix: Mix, plan: Plan, commands: Mapping[str, str]) -> Iterable[str]:
    yield (
        f"wrk -t1 -c{CONNECTIONS} -d{plan.http_seconds:g}s -s benchmarks/post.lua, after an "
        f"unmeasured {plan.http_warmup_seconds:g} s run on the same server; bodies are the "
        f"rotating mix ({len(mix.templates):,} payloads a round: {mix.count('start')} sessions "
        "over 2 hosts, 8 dashboards, 40 users, 0-4 variables, 5% flattened; each round new "
        "uuids and later times) posted as text/plain;charset=UTF-8."
    )
    yield (
        "non-201 counts answers other than 201 plus socket errors; server CPU is user + system "
        "time of the server's whole process group (/proc/<pid>/stat) during the measured run, "
        "divided by the requests wrk completed. The receiver's log lines go to /dev/null. "
        "wrk CPU is the client's CPU time over the run: near 100 % the client, not the server, "
        "set the pace, and that row's requests/s is a lower bound. Other load is the CPU the "
        "rest of the machine used meanwhile (/proc/stat busy time minus server and wrk): a "
        "row with more than a few tenths of a core was disturbed."
    )
    yield (
        "2 workers: receiver rows are n/a until this benchmark sets up a session store shared "
        "by the workers (SQLite or Redis, with per-worker metric files); the memory store is per "
        "process. The bare app's 2-worker rows show the ceiling on this "
        f"{os.cpu_count()}-core machine, where wrk takes one core."
    )
    for name, argv in commands.items():
        yield f"{name}: `{argv}`"
