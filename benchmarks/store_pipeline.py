"""Measure what each session store costs per payload, in process: memory, LMDB, SQLite, Redis.

For each store: ``store.apply`` alone (precomputed keys and states, so neither decoding nor the
rules are in it), then ``Receiver.handle(body)`` with the session log disabled and enabled. A
fresh store for every repeat: a new LMDB directory or SQLite file, a new key prefix in Redis.
The Redis server is on loopback, started here; its own CPU is read apart, and wall time shows
the round trips.
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from benchmarks.peers import REDIS_HINT, find_redis_server, running_redis
from benchmarks.plan import Plan
from benchmarks.report import Table
from benchmarks.servers import group_cpu_seconds
from otel_panel_receiver import (
    MemorySessionStore,
    PanelEvent,
    Receiver,
    Recorder,
    SessionStore,
    Settings,
    build_telemetry,
    create_app,
    decode,
)
from otel_panel_receiver.sessions import session_key
from otel_panel_receiver.stores import RedisSessionStore, open_store
from tests.support.procs import in_ci

__all__ = ["run"]

_SETTINGS: Final = Settings()
_Put = Callable[[int | None], tuple[int, None]]


@dataclass(frozen=True, slots=True)
class _Cost:
    """Per payload: this process's CPU, the wall time, and the Redis server's CPU, in µs."""

    cpu: float
    wall: float
    server: float
    server_seconds: float = 0.0  # the server's CPU over the whole run: 10 ms ticks, coarse


def _put(state: int, old: int | None) -> tuple[int, None]:
    return state, None


def _states(events: Sequence[PanelEvent]) -> list[tuple[int, _Put]]:
    """Return each event's session key and an update that stores the state the rules give."""
    store = MemorySessionStore(max_size=0, idle_ttl=0)
    telemetry = build_telemetry(Settings(disable_session_log=True))
    receiver = Receiver(store, Recorder(telemetry.meter_provider, session_log=False))
    out: list[tuple[int, _Put]] = []
    for event in events:
        receiver.handle_event(event)
        key = session_key(event)
        state = store.get(key)
        assert state is not None
        out.append((key, functools.partial(_put, state)))
    telemetry.shutdown()  # its threads would take CPU from the sections measured later
    return out


class _Stores:
    """Open a fresh store of one kind per call: memory, LMDB or SQLite (in a temporary
    directory) or Redis (prefixes)."""

    def __init__(self, kind: str, tmp: Path, redis_url: str = "") -> None:
        self.kind, self._tmp, self._redis, self._made = kind, tmp, redis_url, 0

    def fresh(self) -> SessionStore:
        self._made += 1
        size, ttl = _SETTINGS.max_cache_size, _SETTINGS.session_ttl
        if self.kind == "Redis":
            prefix = f"bench{self._made}:"
            return RedisSessionStore(self._redis, max_size=size, idle_ttl=ttl, prefix=prefix)
        urls = {
            "memory": "memory",
            "LMDB": f"lmdb://{self._tmp / f'{self._made}'}",
            "SQLite": f"sqlite://{self._tmp / f'{self._made}.db'}",
        }
        return open_store(urls[self.kind], max_size=size, idle_ttl=ttl)


def _timed(work: Callable[[], None], count: int, server_pid: int | None) -> _Cost:
    server = group_cpu_seconds(server_pid) if server_pid else 0.0
    cpu, wall = time.process_time_ns(), time.perf_counter_ns()
    work()
    cpu, wall = time.process_time_ns() - cpu, time.perf_counter_ns() - wall
    server = (group_cpu_seconds(server_pid) - server) * 1e9 if server_pid else 0.0
    return _Cost(cpu / count / 1e3, wall / count / 1e3, server / count / 1e3, server / 1e9)


def _median(costs: Sequence[_Cost]) -> _Cost:
    fields = ("cpu", "wall", "server", "server_seconds")
    return _Cost(*(statistics.median(getattr(c, f) for c in costs) for f in fields))


@dataclass(frozen=True, slots=True)
class _Workload:
    """What every store is given: the bodies, their precomputed updates, the recorders."""

    bodies: Sequence[bytes]
    updates: Sequence[tuple[int, _Put]]
    recorders: dict[str, Recorder]


def _measure(
    stores: _Stores, load: _Workload, repeats: int, server_pid: int | None, *, apply: bool = True
) -> dict[str, _Cost]:
    results: dict[str, list[_Cost]] = {}
    for _ in range(repeats):
        if apply:
            store = stores.fresh()
            try:
                work = functools.partial(_apply_all, store, load.updates)
                cost = _timed(work, len(load.updates), server_pid)
                results.setdefault("apply", []).append(cost)
            finally:
                store.close()
        for name, recorder in load.recorders.items():
            receiver = Receiver(stores.fresh(), recorder)
            try:
                work = functools.partial(_handle_all, receiver, load.bodies)
                results.setdefault(name, []).append(_timed(work, len(load.bodies), server_pid))
            finally:
                receiver.store.close()
    return {name: _median(costs) for name, costs in results.items()}


def _apply_all(store: SessionStore, updates: Sequence[tuple[int, _Put]]) -> None:
    for key, update in updates:
        store.apply(key, update)


def _handle_all(receiver: Receiver, bodies: Sequence[bytes]) -> None:
    for body in bodies:
        receiver.handle(body)


def _recorders(
    devnull: IO[str], closing: contextlib.ExitStack, shared: str = ""
) -> dict[str, Recorder]:
    """Return the recorders the service builds: session log disabled, and logfmt to /dev/null.

    With ``shared`` (a directory), the recorders of a worker among several: each payload's
    counts go to the workers' shared table of series in it before the payload is answered.
    Their apps (and the threads that feed the table) are closed with ``closing``.
    """
    out = {}
    for name, settings in (
        ("disabled", Settings(disable_session_log=True, prometheus_multiproc_dir=shared)),
        ("logfmt", Settings(prometheus_multiproc_dir=shared)),
    ):
        telemetry = build_telemetry(settings, stream=devnull)
        app = create_app(settings, telemetry=telemetry)
        closing.callback(telemetry.shutdown)
        closing.callback(app.close)
        out[name] = app.receiver.recorder
    return out


def _server_cell(cost: _Cost) -> str:
    # /proc counts CPU in 10 ms ticks: under 0.1 s the figure is off by more than 10 %.
    return f"{cost.server:.1f}" if cost.server_seconds >= 0.1 else "(run too short)"


@contextlib.contextmanager
def _redis_url() -> Iterator[tuple[str, int] | None]:
    exe = find_redis_server()
    if exe is None:
        yield None
        return
    with running_redis(exe) as redis:
        yield redis.url, redis.pid


def run(plan: Plan, bodies: Sequence[bytes], devnull: IO[str]) -> Table:
    """Time ``apply`` and ``Receiver.handle`` with each store on the first of ``bodies``."""
    bodies = bodies[: plan.store_payloads]
    now = int(time.time())
    with contextlib.ExitStack() as closing:
        return _run(plan, bodies, devnull, now, closing)


def _run(
    plan: Plan, bodies: Sequence[bytes], devnull: IO[str], now: int, closing: contextlib.ExitStack
) -> Table:
    recorders = _recorders(devnull, closing)
    updates = _states([decode(b, now=now) for b in bodies])
    load = _Workload(bodies, updates, recorders)
    table = Table(
        "In-process pipeline: per session store",
        (
            "store",
            "work",
            "session log",
            "CPU µs/payload",
            "wall µs/payload",
            "redis-server CPU µs/payload",
        ),
    )
    log_cells = {"apply": "", "disabled": "disabled", "logfmt": "logfmt → /dev/null"}
    work_cells = {"apply": "store.apply alone", "disabled": "Receiver.handle(body)"}
    with (
        tempfile.TemporaryDirectory(prefix="otel-panel-bench-") as tmp,
        _redis_url() as redis,
        contextlib.ExitStack() as in_tmp,  # closed before tmp is removed
    ):
        for kind in ("memory", "LMDB", "SQLite", "Redis"):
            if kind == "Redis" and redis is None:
                why = f"n/a (redis-server not installed; {REDIS_HINT})"
                table.add(kind, "all", "", why, "", "")
                (table.problems if in_ci() else table.notes).append(f"Redis: {why}")
                continue
            url, pid = redis if kind == "Redis" and redis is not None else ("", None)
            stores = _Stores(kind, Path(tmp), url)
            costs = _measure(stores, load, plan.store_repeats, pid)
            rows = [(kind, name, cost) for name, cost in costs.items()]
            if kind in ("LMDB", "SQLite"):  # stores of several workers, with the shared table
                metrics = tempfile.mkdtemp(dir=tmp)
                shared = _Workload(bodies, updates, _recorders(devnull, in_tmp, metrics))
                costs = _measure(stores, shared, plan.store_repeats, None, apply=False)
                rows += [(f"{kind}, 2+ workers", name, cost) for name, cost in costs.items()]
            for store_cell, name, cost in rows:
                table.add(
                    store_cell,
                    work_cells.get(name, "Receiver.handle(body)"),
                    log_cells[name],
                    f"{cost.cpu:.1f}",
                    f"{cost.wall:.1f}",
                    _server_cell(cost) if pid else "",
                )
    table.notes.append(
        f"{len(bodies):,} payloads of the same mix, median of {plan.store_repeats} runs, each "
        "on a fresh store (memory; a new LMDB directory, one write transaction per payload; a "
        "new SQLite file, WAL mode, one transaction per payload; a new key prefix on a "
        "redis-server on loopback, one compare-and-set script per payload: one process wrote "
        "every session last, so none is read first). CPU is this process's; wall time adds what it "
        "waited for (SQLite's file system calls, Redis' round trips); redis-server's CPU is read "
        "from /proc. store.apply alone stores precomputed states under precomputed keys: the "
        "store's own cost, without decoding, the session rules or the counters. "
        '"2+ workers": the recorders of one worker among several, which put each '
        "payload's counts in the workers' shared table of series (one more LMDB "
        "transaction) before the payload is answered, so that kill -9 loses no answered count. "
        "Receiver.handle here is the receiver around the service's recorder and the store "
        "alone: without the usage ledger, the viewers' first-visit marks and the outcome "
        "counts, which the whole rows of the table above include: here the session stores "
        "are compared alone."
    )
    return table
