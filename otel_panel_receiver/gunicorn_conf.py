"""gunicorn settings and hooks for the receiver, for those who run gunicorn themselves::

    gunicorn -c python:otel_panel_receiver.gunicorn_conf otel_panel_receiver.wsgi:app
    WORKERS=4 gunicorn -c python:otel_panel_receiver.gunicorn_conf otel_panel_receiver.wsgi:app

The receiver's settings come from the environment (docs/configuration.md); gunicorn's own
command-line options (``-w 4``, ``-b``) still win. With more than one worker the master, before
forking, names a session store shared by the workers (``SESSION_STORE``, SQLite by default)
and prepares the multiprocess metrics directory (``PROMETHEUS_MULTIPROC_DIR``), which the
workers' apps then read from the environment. Each worker builds its app, providers and export
threads after the fork (``otel_panel_receiver.wsgi`` is imported there), flushes them when it
exits, and is marked dead for ``/metrics`` when it is gone. The ``otel-panel-receiver`` command
uses the same hooks.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import MutableMapping
from typing import Any

from otel_panel_receiver.config import DEFAULT_SQLITE_STORE, PROGRAM, Settings, load_settings
from otel_panel_receiver.multiproc import clear_directory, mark_worker_dead

__all__ = ["child_exit", "on_exit", "on_starting", "prepare", "worker_exit"]

_settings = load_settings((), os.environ)

bind = [_settings.bind]
workers = _settings.workers
threads = _settings.thread_count
worker_class = "gthread"  # even with one thread: it keeps keep-alive connections open
# Exporters time out after 5 s each, so a worker's last flush fits well inside this.
graceful_timeout = 30
timeout = 30
keepalive = 5
accesslog = None
errorlog = "-"
loglevel = "warning"
proc_name = PROGRAM

_created_dirs: list[str] = []


def prepare(settings: Settings, worker_count: int, environ: MutableMapping[str, str]) -> Settings:
    """Return the settings the workers run with, and put them in ``environ`` for them.

    With several workers: the session store defaults to SQLite, and the multiprocess metrics
    directory is created (a temporary one unless named) and emptied of a previous run's files.
    """
    if worker_count <= 1:
        return settings
    store = settings.session_store or DEFAULT_SQLITE_STORE
    if store == DEFAULT_SQLITE_STORE:
        os.makedirs(os.path.dirname(store.removeprefix("sqlite://")), exist_ok=True)
    directory = settings.prometheus_multiproc_dir
    if not directory:
        directory = tempfile.mkdtemp(prefix="otel-panel-receiver-metrics-")
        _created_dirs.append(directory)
    clear_directory(directory)
    environ["SESSION_STORE"] = store
    environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    environ["WORKERS"] = str(worker_count)
    return dataclasses.replace(
        settings, workers=worker_count, session_store=store, prometheus_multiproc_dir=directory
    )


def on_starting(server: Any) -> None:
    """Prepare the shared store and metrics directory in the master, before any fork."""
    prepare(load_settings((), os.environ), server.cfg.workers, os.environ)


def worker_exit(server: Any, worker: Any) -> None:
    """Close the worker's app: its open spans, its last metric deltas, its buffered logs."""
    close = getattr(worker.wsgi, "close", None)
    if callable(close):
        close()


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's gauges from ``/metrics``; its counts stay in the totals."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        mark_worker_dead(worker.pid, directory)


def on_exit(server: Any) -> None:
    """Remove the temporary metrics directory the master made."""
    while _created_dirs:
        shutil.rmtree(_created_dirs.pop(), ignore_errors=True)
