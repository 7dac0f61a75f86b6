"""The ``otel-panel-receiver`` command: parse the settings, check them, serve them.

granian serves by default (``--server granian``): each request is read whole by its event loop
before the app runs, so slow clients hold no thread. gunicorn (``--server gunicorn``) serves
with the same settings and hooks as ``otel_panel_receiver.gunicorn_conf``.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Mapping, Sequence

from otel_panel_receiver.admin import TOOLS, run_tool
from otel_panel_receiver.config import PROGRAM, Settings, load_settings, to_environ
from otel_panel_receiver.errors import ConfigError
from otel_panel_receiver.export import LOGGER_NAME, configure_logging
from otel_panel_receiver.serving import (
    granian_settings,
    gunicorn_settings,
    preflight,
    prepare_workers,
)
from otel_panel_receiver.version import __version__

__all__ = ["main", "serve", "serve_granian"]

log = logging.getLogger(LOGGER_NAME)


def serve_granian(settings: Settings) -> None:
    """Serve prepared settings with granian until told to stop; apps are built per worker.

    granian's workers are new processes that import ``otel_panel_receiver.rsgi``, which reads
    the settings from the environment: every setting, flags included, is put there first.
    """
    from granian import Granian

    os.environ.update(to_environ(settings))
    Granian(**granian_settings(settings)).serve()


def serve(settings: Settings, environ: Mapping[str, str]) -> None:
    """Serve prepared settings with gunicorn until told to stop; apps are built per worker.

    ``settings`` come from :func:`~otel_panel_receiver.serving.prepare_workers`; ``environ``
    holds the standard ``OTEL_*`` variables the workers' providers read.
    """
    from gunicorn.app.base import BaseApplication

    from otel_panel_receiver import gunicorn_conf
    from otel_panel_receiver.app import create_app

    class _Server(BaseApplication):  # type: ignore[misc]  # gunicorn is untyped
        def load_config(self) -> None:
            for key, value in gunicorn_settings(settings).items():
                self.cfg.set(key, value)
            self.cfg.set("worker_exit", gunicorn_conf.worker_exit)

        def load(self) -> object:
            # Runs in each worker after the fork: providers and export threads are per process.
            return create_app(settings, environ=environ)

    _Server().run()


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the command line; return the exit status (2 for a bad setting)."""
    environ = os.environ if environ is None else environ
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in TOOLS:  # the admins' tools: the usage report, the panel
        return run_tool(argv)
    try:
        given = load_settings(argv, environ)
        settings = prepare_workers(given, given.workers)
        preflight(settings, environ)
    except ConfigError as exc:
        print(f"{PROGRAM}: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format_effective)
    log.info(
        "Starting otel-panel-receiver",
        extra={
            "fields": {
                "version": __version__,
                "address": settings.http_address,
                "workers": settings.workers,
                "server": settings.server,
                "threads": settings.thread_count,
                "session_store": settings.store_url,
            }
        },
    )
    parent = os.getpid()
    try:
        if settings.server == "granian":
            serve_granian(settings)
        else:
            serve(settings, environ)
    finally:
        # A gunicorn worker leaves through this frame too (it was forked inside serve): only
        # the process that made the temporary directory removes it, at the very end. A
        # worker replaced on SIGHUP used to remove it under the master and the new workers.
        made = settings.prometheus_multiproc_dir != given.prometheus_multiproc_dir
        if made and os.getpid() == parent:
            shutil.rmtree(settings.prometheus_multiproc_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
