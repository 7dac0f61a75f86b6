"""The entry point for WSGI servers: ``otel_panel_receiver.wsgi:app``.

Settings come from the environment variables of ``docs/configuration.md`` (the CLI's flags are
not seen here). Example::

    gunicorn -k gthread --threads 4 -b :8080 otel_panel_receiver.wsgi:app
    granian --interface wsgi --port 8080 otel_panel_receiver.wsgi:app
"""

from __future__ import annotations

import atexit
import multiprocessing.util
import os

from otel_panel_receiver.cli import configure_logging
from otel_panel_receiver.config import load_settings
from otel_panel_receiver.providers import build_telemetry
from otel_panel_receiver.web import create_app

__all__ = ["app"]

_settings = load_settings((), os.environ)
configure_logging(_settings)
app = create_app(_settings, telemetry=build_telemetry(_settings, environ=os.environ))
atexit.register(app.close)
# granian's workers are multiprocessing children, which end with os._exit and skip atexit:
# a multiprocessing finalizer still runs there, so the last deltas, logs and spans are flushed.
multiprocessing.util.Finalize(app, app.close, exitpriority=10)
