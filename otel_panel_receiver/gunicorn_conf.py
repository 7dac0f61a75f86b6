"""gunicorn settings and hooks for the receiver, for those who run gunicorn themselves::

    gunicorn -c python:otel_panel_receiver.gunicorn_conf otel_panel_receiver.wsgi:app
    WORKERS=4 gunicorn -c python:otel_panel_receiver.gunicorn_conf otel_panel_receiver.wsgi:app

The receiver's settings come from the environment (docs/configuration.md); gunicorn's own
command-line options (``-w 4``, ``-b``) still win. The server settings are the ones the
``otel-panel-receiver`` command uses (``serving.gunicorn_settings``). Before forking, the master
checks the settings (a bad one is one line on stderr and exit status 2), names a session store
shared by the workers when there are several (the memory store is refused) and prepares the
multiprocess metrics directory, which the workers' apps then read from the environment. Each
worker builds its app, providers and export threads after the fork (``otel_panel_receiver.wsgi``
is imported there), and flushes them when it exits.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any, NoReturn

from otel_panel_receiver.config import PROGRAM, Settings, load_settings
from otel_panel_receiver.errors import ConfigError
from otel_panel_receiver.serving import gunicorn_settings, preflight, prepare_workers

__all__ = ["on_exit", "on_starting", "worker_exit"]


def _refuse(exc: ConfigError) -> NoReturn:
    # SystemExit passes through gunicorn's config loading and its arbiter's start: one line.
    print(f"{PROGRAM}: error: {exc}", file=sys.stderr)
    raise SystemExit(2)


def _settings() -> Settings:
    try:
        return load_settings((), os.environ)
    except ConfigError as exc:
        _refuse(exc)


# gunicorn reads its settings from this module's globals: the receiver's one source of them.
globals().update(gunicorn_settings(_settings()))

_created_dirs: list[str] = []


def on_starting(server: Any) -> None:
    """Check the settings and prepare the shared store and metrics directory, before any fork."""
    given = _settings()
    try:
        settings = prepare_workers(given, server.cfg.workers, os.environ)
        preflight(settings, os.environ)
    except ConfigError as exc:
        _refuse(exc)
    if settings.prometheus_multiproc_dir != given.prometheus_multiproc_dir:
        _created_dirs.append(settings.prometheus_multiproc_dir)


def worker_exit(server: Any, worker: Any) -> None:
    """Close the worker's app: its open spans, its last metric deltas, its buffered logs.

    Nothing to close when the app failed to load (gunicorn then reports why).
    """
    close = getattr(getattr(worker, "wsgi", None), "close", None)
    if callable(close):
        close()


def on_exit(server: Any) -> None:
    """Remove the temporary metrics directory the master made."""
    while _created_dirs:
        shutil.rmtree(_created_dirs.pop(), ignore_errors=True)
