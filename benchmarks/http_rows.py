"""The rows and tables of the HTTP ingest section: which server, store and app each row
serves, and how a measured row (or one not run) is shown."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from benchmarks import targets
from benchmarks.loadrun import CONNECTIONS, Measurement
from benchmarks.peers import REDIS_HINT, find_redis_server
from benchmarks.plan import Plan
from benchmarks.receivers import BARE, Store, default_store
from benchmarks.report import Table
from benchmarks.servers import ServerSpec

__all__ = [
    "QUICK",
    "Row",
    "connections_cell",
    "load_row",
    "na_load_row",
    "ratio_row",
    "rows",
    "tables",
]

QUICK: Final = "not run (--quick)"


@dataclass(frozen=True, slots=True)
class Row:
    """One row to measure: a server and the receiver with ``store``, or the bare app (None)."""

    server: ServerSpec
    store: Store | None
    skip: str = ""  # why it is not measured in this plan
    log: bool = True  # the receiver's session log (to /dev/null)

    @property
    def key(self) -> str:
        """Return how checks and notes name the row: server, workers, and a non-default store."""
        name = f"{self.server.label} x{self.server.workers}"
        if self.store is not None and self.store != default_store(self.server.workers):
            name += f", {self.store} store"
        if not self.log:
            name += ", session log off"
        return name


def rows(plan: Plan) -> list[Row]:
    rows = []
    for server in (
        ServerSpec("gunicorn-sync"),
        ServerSpec("gunicorn-gthread", threads=4),
        ServerSpec("gunicorn-gthread", threads=1),
        ServerSpec("granian"),
    ):
        one_thread = server.kind == "gunicorn-gthread" and server.threads == 1
        skip = QUICK if one_thread and not plan.http_one_thread else ""
        rows += [Row(server, "memory", skip), Row(server, None, skip)]
    # The command's default server with the session log off: against Go's log-off figure.
    rows.insert(
        rows.index(Row(ServerSpec("granian"), None)),
        Row(ServerSpec("granian"), "memory", log=False),
    )
    for kind in ("gunicorn-sync", "gunicorn-gthread", "granian"):
        # The CLI's threads for the default store (LMDB): 1 under gunicorn gthread.
        server = ServerSpec(kind, workers=2, threads=1 if kind == "gunicorn-gthread" else 4)
        rows.append(Row(server, "LMDB", "" if kind in plan.http_shared_store else QUICK))
        if kind == "granian":  # the other store of one host, against the default
            rows.append(Row(server, "SQLite", "" if plan.http_redis else QUICK))
        rows.append(Row(server, None, "" if plan.http_two_workers else QUICK))
        if kind == "gunicorn-gthread":  # Redis: 4 threads, as the CLI runs it
            server = ServerSpec(kind, workers=2, threads=4)
            skip = "" if plan.http_redis else QUICK
            if not skip and find_redis_server() is None:
                skip = f"n/a (redis-server not installed; {REDIS_HINT})"
            rows.append(Row(server, "Redis", skip))
            rows.append(Row(server, None, "" if plan.http_redis else QUICK))
    return rows


def tables() -> tuple[Table, Table]:
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
            "connections per worker",
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
            "store",
            "receiver req/s",
            "bare req/s",
            "receiver ÷ bare",
            "CPU µs/req receiver - bare",
            "target",
            "met",
        ),
    )
    return load, ratio


def load_row(table: Table, row: Row, m: Measurement) -> None:
    w = m.wrk
    name = f"{row.server.label} x{row.server.workers}, {m.app.name}"
    table.figures[f"{name}: server CPU µs/req"] = m.cpu_us + m.peer_cpu_us
    table.figures[f"{name}: req/s"] = w.rate
    table.figures[f"{name}: p99 ms"] = w.p99_ms
    cpu = f"{m.cpu_us:.0f}" + (f" + {m.peer_cpu_us:.0f} redis" if m.peer_cpu_us else "")
    target, verdict = "", ""
    if not m.app.baseline:
        target = str(targets.P99_MS)
        what = f"p99 at {CONNECTIONS} connections, {row.key}"
        verdict = table.check(what, f"{w.p99_ms:.2f} ms", targets.P99_MS, w.p99_ms)
    table.add(
        m.server.label,
        m.server.workers,
        m.app.name,
        f"{w.rate:,.0f}",
        f"{w.p50_ms:.2f}",
        f"{w.p99_ms:.2f}",
        w.non201 + w.socket_errors,
        cpu,
        connections_cell(m),
        f"{w.client_cpu:.0%}",
        f"{m.others:.2f} cores",
        target,
        verdict,
    )


def connections_cell(m: Measurement) -> str:
    if m.server.kind == "gunicorn-sync":
        return "(one per request)"  # gunicorn's sync worker closes each after its answer
    cell = "+".join(map(str, m.connections)) or "?"
    return f"{cell} (try {m.tries})" if m.tries > 1 else cell


def na_load_row(table: Table, row: Row, why: str) -> None:
    app = BARE.name if row.store is None else f"receiver, {row.store} store"
    cells = [row.server.label, row.server.workers, app, why, *[""] * 7]
    if row.store is None:
        table.add(*cells, "", "")
        return
    verdict = table.check(f"p99 at {CONNECTIONS} connections, {row.key}", why, targets.P99_MS, None)
    table.add(*cells, targets.P99_MS, verdict)


def ratio_row(
    table: Table, row: Row, receiver: Measurement | None, bare: Measurement | None, why: str
) -> None:
    target = targets.RECEIVER_OVER_BARE
    what = f"receiver ÷ bare, {row.key}"
    server, workers = row.server.label, row.server.workers
    store = row.store if row.log else f"{row.store}, session log off"
    if receiver is None or bare is None:
        verdict = table.check(what, why, target, None)
        table.add(server, workers, store, why, "", "", "", target, verdict)
        return
    value = receiver.wrk.rate / bare.wrk.rate if bare.wrk.rate else 0.0
    extra = receiver.cpu_us + receiver.peer_cpu_us - bare.cpu_us
    table.add(
        server,
        workers,
        store,
        f"{receiver.wrk.rate:,.0f}",
        f"{bare.wrk.rate:,.0f}",
        f"{value:.3f}",
        f"{extra:.0f}",
        target,
        table.check(what, f"{value:.3f}", target, value),
    )
