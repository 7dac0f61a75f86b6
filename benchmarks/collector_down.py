"""Measure ingest while the OTLP collector is down, beside OTLP off and a collector that is up.

The receiver is served three times by the same server: OTLP off; pushing to a rotel collector
that drops what it receives (the cost of OTLP itself); and with ``OTEL_EXPORTER_OTLP_ENDPOINT``
on a loopback port nothing listens on, so every export is refused. Metrics are exported every
second so exports happen throughout each run. Reported: requests/s and their ratios, p99, CPU per
request, and how long the graceful stop takes (its final flushes must stay under the 20 s of
the receiver's ``--graceful-timeout``; the plain gunicorn run here has gunicorn's own 30 s).
When the package has no OTLP settings, the row is n/a.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Final

from benchmarks.loadrun import Measurement, measure
from benchmarks.payloads import build_mix
from benchmarks.peers import ROTEL_HINT, rotel_agent, running_collector
from benchmarks.plan import Plan
from benchmarks.receivers import RECEIVER
from benchmarks.report import Table
from benchmarks.servers import ServerSpec
from benchmarks.wrk import INSTALL_HINT, find_wrk
from otel_panel_receiver import Settings
from tests.support.procs import free_port

__all__ = ["NOT_IMPLEMENTED", "otlp_settings", "run"]

NOT_IMPLEMENTED: Final = "n/a (OTLP export not implemented yet)"
SERVER: Final = ServerSpec("gunicorn-sync")
#: Longer than gunicorn's graceful_timeout (30 s): a stop that needs the kill shows as such.
_STOP_GRACE: Final = 40.0


def otlp_settings() -> list[str]:
    """Return the receiver's settings that configure OTLP export (empty before it existed)."""
    return [f.name for f in dataclasses.fields(Settings) if "otlp" in f.name]


def _otlp_environment(endpoint: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
    }


def _row(
    table: Table, what: str, m: Measurement | None, off: Measurement, cell: str, *, quick: bool
) -> None:
    """Add one row; ``cell`` is the ratio to the collector-up run, or why ``m`` is missing."""
    if m is None:
        table.add(f"{SERVER.label} x{SERVER.workers}", what, cell, *[""] * 6)
        return
    if quick:
        stop = "not timed (--quick)"
    elif m.stop_seconds is None:
        stop = f"killed at {_STOP_GRACE:g}"
    else:
        stop = f"{m.stop_seconds:.1f}"
    table.add(
        f"{SERVER.label} x{SERVER.workers}",
        what,
        f"{m.wrk.rate:,.0f}",
        f"{m.wrk.p99_ms:.2f}",
        m.wrk.non201 + m.wrk.socket_errors,
        f"{m.cpu_us:.0f}",
        f"{m.wrk.rate / off.wrk.rate:.2f}" if off.wrk.rate else "",
        cell,
        stop,
    )
    if m.wrk.non201 or m.wrk.socket_errors:
        table.problems.append(f"collector down, OTLP {what}: answers other than 201 or errors")


def _table() -> Table:
    return Table(
        "Collector down: POST /write while the OTLP endpoint refuses connections",
        (
            "server",
            "OTLP",
            "req/s",
            "p99 ms",
            "non-201 + errors",
            "server CPU µs/req",
            "÷ OTLP off",
            "÷ collector up",
            "graceful stop s",
        ),
    )


def run(plan: Plan) -> list[Table]:
    """Load the receiver with OTLP off, pushing to a live collector, then to a dead one."""
    table = _table()
    wrk, agent = find_wrk(), rotel_agent()
    why = NOT_IMPLEMENTED if not otlp_settings() else None
    if wrk is None:
        why = f"n/a (wrk not installed; {INSTALL_HINT})"
    if why is not None:
        table.add(f"{SERVER.label} x{SERVER.workers}", "endpoint refusing", why, *[""] * 6)
        return [table]
    # A timed stop may wait for every exporter's last flush; the smoke does not wait for it.
    grace = 2.0 if plan.quick else _STOP_GRACE
    with tempfile.TemporaryDirectory(prefix="otel-panel-bench-") as tmp:
        round_file = Path(tmp, "round.tsv")
        build_mix().write_wrk_data(round_file)

        def load(env: dict[str, str] | None = None) -> Measurement:
            assert wrk is not None
            return measure(SERVER, RECEIVER, plan, wrk, round_file, env=env, stop_grace=grace)

        off = load()
        up = None
        if agent is not None:
            with running_collector(agent) as endpoint:
                up = load(_otlp_environment(endpoint))
        # free_port() gives a port that was free a moment ago: nothing listens on it.
        down = load(_otlp_environment(f"http://127.0.0.1:{free_port()}"))
    quick = plan.quick
    _row(table, "off", off, off, "", quick=quick)
    missing = f"n/a (rotel not installed; {ROTEL_HINT})"
    _row(table, "collector up (rotel, drops all)", up, off, "" if up else missing, quick=quick)
    ratio = f"{down.wrk.rate / up.wrk.rate:.2f}" if up and up.wrk.rate else ""
    _row(table, "endpoint refusing", down, off, ratio, quick=quick)
    table.notes.append(
        "same wrk load as the HTTP ingest section; OTLP on: metrics every 1 s, logs and session "
        "spans through the receiver's batch processors, pushed over http/protobuf to a rotel "
        "collector that drops them, or refused by a closed loopback port (a black-holing "
        "collector, which times out instead, is not measured). Graceful stop: seconds from "
        "SIGTERM until the server exited (plain gunicorn's graceful_timeout is 30 s, the "
        "receiver's --graceful-timeout 20 s)."
    )
    return [table]
