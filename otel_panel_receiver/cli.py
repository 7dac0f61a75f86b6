"""The ``otel-panel-receiver`` command: parse the settings and serve the app with gunicorn."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from otel_panel_receiver.config import PROGRAM, Settings, load_settings
from otel_panel_receiver.errors import ConfigError
from otel_panel_receiver.logformat import LineHandler
from otel_panel_receiver.version import __version__

__all__ = ["gunicorn_options", "main", "serve"]

log = logging.getLogger("otel_panel_receiver")


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    """Return the gunicorn settings the CLI serves with."""
    return {
        "bind": [settings.bind],
        "workers": settings.workers,
        "threads": settings.thread_count,
        # gthread even with one thread: it keeps the browsers' keep-alive connections open.
        "worker_class": "gthread",
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "graceful_timeout": 30,
        "timeout": 30,
        "keepalive": 5,
        "limit_request_line": 8190,
        "proc_name": PROGRAM,
    }


def serve(settings: Settings, environ: Mapping[str, str]) -> None:
    """Serve the receiver with gunicorn until it is told to stop; apps are built per worker."""
    from gunicorn.app.base import BaseApplication

    from otel_panel_receiver import gunicorn_conf
    from otel_panel_receiver.providers import build_telemetry
    from otel_panel_receiver.web import create_app

    worker_settings = gunicorn_conf.prepare(settings, settings.workers, os.environ)

    class _Server(BaseApplication):  # type: ignore[misc]  # gunicorn is untyped
        def load_config(self) -> None:
            for key, value in gunicorn_options(settings).items():
                self.cfg.set(key, value)
            for hook in ("worker_exit", "child_exit", "on_exit"):
                self.cfg.set(hook, getattr(gunicorn_conf, hook))

        def load(self) -> object:
            # Runs in each worker after the fork: providers and export threads are per process.
            telemetry = build_telemetry(worker_settings, environ=environ)
            return create_app(worker_settings, telemetry=telemetry)

    _Server().run()


def configure_logging(settings: Settings) -> None:
    """Send the receiver's own messages to stdout in the per-payload line format."""
    handler = LineHandler(settings.log_format_effective)
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    # The OTLP exporters log every failed attempt, and the batch processors every record they
    # drop when the collector is down; the receiver reports export failures once instead.
    logging.getLogger("opentelemetry.exporter.otlp").setLevel(logging.CRITICAL)
    logging.getLogger("opentelemetry.sdk._shared_internal").setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the command line; return the exit status (2 for a bad setting)."""
    environ = os.environ if environ is None else environ
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv, environ)
        if settings.workers > 1 and settings.store_url == "memory":
            raise ConfigError(
                "--workers > 1 needs a session store shared by the workers: "
                "--session-store sqlite:///path/to/sessions.db or redis://host:port/db"
            )
    except ConfigError as exc:
        print(f"{PROGRAM}: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    log.info(
        "Starting otel-panel-receiver",
        extra={
            "fields": {
                "version": __version__,
                "address": settings.http_address,
                "workers": settings.workers,
                "threads": settings.thread_count,
                "session_store": settings.store_url,
            }
        },
    )
    serve(settings, environ)
    return 0


if __name__ == "__main__":
    sys.exit(main())
