"""The apps each HTTP row serves: the receiver with its session store, and the bare baseline.

With one worker the receiver keeps sessions in memory and is served as a plain WSGI target.
With two, the workers share a store, and each server is started the way docs/deployment.md
shows: gunicorn sync through the receiver's gunicorn config file (``SESSION_STORE`` in the
environment; its ``on_starting`` hook prepares the metrics directory), gunicorn gthread through
the ``otel-panel-receiver --server gunicorn`` command (``--session-store``; it prepares the
directory itself), and
granian with ``SESSION_STORE`` and an empty ``PROMETHEUS_MULTIPROC_DIR`` made by the harness.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Final, Literal

from benchmarks.servers import AppSpec, ServerSpec
from otel_panel_receiver import load_settings

__all__ = ["BARE", "RECEIVER", "Store", "default_store", "receiver_app"]

Store = Literal["memory", "LMDB", "SQLite", "Redis"]

#: ``/metrics`` shows each series' value at once (not 0 for ``--new-series-delay``), so that the
#: sessions a run counted can be read right after it. Scrapes are not what a row measures.
_VALUES_AT_ONCE: Final = {"NEW_SERIES_DELAY": "0"}
RECEIVER: Final = AppSpec(
    "receiver, memory store", "otel_panel_receiver.wsgi:app", dict(_VALUES_AT_ONCE)
)
BARE: Final = AppSpec("bare Falcon + msgspec", "benchmarks.bare_wsgi:app", baseline=True)


def default_store(workers: int) -> Store:
    """Return the store the receiver picks by itself for ``workers`` (as ``Settings`` does)."""
    return "memory" if workers == 1 else "LMDB"


def receiver_app(
    server: ServerSpec, store: Store, tmp: Path, redis_url: str = "", *, log: bool = True
) -> AppSpec:
    """Return the receiver as ``server`` serves it with ``store``, its files under ``tmp``.

    ``tmp`` must be a fresh directory: the store's files and the metrics directory start empty.
    ``log=False`` turns the session log off (memory store only).
    """
    if store == "memory":
        if server.workers > 1:
            raise ValueError("the memory store is per process: 2 workers need a shared store")
        if not log:
            env = {**RECEIVER.env, "DISABLE_SESSION_LOG": "true"}
            return dataclasses.replace(RECEIVER, name=f"{RECEIVER.name}, session log off", env=env)
        return RECEIVER
    if store == "Redis" and not redis_url:
        raise ValueError("the Redis store needs the URL of a running redis-server")
    urls = {"Redis": redis_url, "LMDB": f"lmdb://{tmp / 's'}", "SQLite": f"sqlite://{tmp / 's.db'}"}
    url = urls[store]
    name = f"receiver, {store} store"
    target = RECEIVER.target
    if server.kind == "gunicorn-sync":
        env = {**_VALUES_AT_ONCE, "SESSION_STORE": url}
        return AppSpec(name, target, env, launcher="gunicorn-conf")
    if server.kind == "gunicorn-gthread":
        args = ("--session-store", url)
        # The CLI picks its threads by itself (--threads 0 = auto): the row must say the same.
        argv = ("--server", "gunicorn", "--workers", str(server.workers), *args)
        threads = load_settings(argv, {}).thread_count
        if threads != server.threads:
            raise ValueError(f"the CLI would run {threads} threads, the row says {server.threads}")
        return AppSpec(name, target, dict(_VALUES_AT_ONCE), launcher="cli", args=args)
    metrics = tmp / "metrics"
    metrics.mkdir()
    env = {**_VALUES_AT_ONCE, "SESSION_STORE": url, "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
    return AppSpec(name, target, env)
