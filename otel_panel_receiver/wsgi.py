"""The entry point for WSGI servers: ``otel_panel_receiver.wsgi:app``.

Settings come from the environment variables of ``docs/configuration.md`` (the CLI's flags are
not seen here). Example::

    gunicorn -c python:otel_panel_receiver.gunicorn_conf otel_panel_receiver.wsgi:app
    granian --interface wsgi --port 8080 otel_panel_receiver.wsgi:app

With several worker processes, use the command or the gunicorn config above: they prepare the
shared store and metrics directory before forking (see docs/deployment.md for granian).
"""

from __future__ import annotations

import atexit
import gc
import multiprocessing.util
import os

from otel_panel_receiver.app import create_app
from otel_panel_receiver.config import load_settings
from otel_panel_receiver.export import configure_logging

__all__ = ["app", "settings"]

settings = load_settings((), os.environ)
configure_logging(settings.log_format_effective)
app = create_app(settings, environ=os.environ)
atexit.register(app.close)
# granian's workers are multiprocessing children, which end with os._exit and skip atexit:
# a multiprocessing finalizer still runs there, so the last deltas, logs and spans are flushed.
multiprocessing.util.Finalize(app, app.close, exitpriority=10)
# What exists now lives as long as the process: out of the cyclic collector's way, a full
# collection costs what requests allocate, not the whole heap (30 ms pauses become ~1 ms).
gc.collect()
gc.freeze()
