"""The entry point for granian's RSGI interface: ``otel_panel_receiver.rsgi:app``.

The WSGI app of ``otel_panel_receiver.wsgi`` (settings from the environment), served so that a
slow or stalled client holds no thread: each request is read whole by granian's event loop
first (``buffered.py``). ``POST /write`` with a known length, the one route under load, goes
straight to the app's :class:`~otel_panel_receiver.web.WriteEndpoint` (the same answers as
through Falcon, without a WSGI environ and a framework per payload). This is what the
``otel-panel-receiver`` command serves by default::

    granian --interface rsgi --port 8080 otel_panel_receiver.rsgi:app
"""

from __future__ import annotations

from otel_panel_receiver.buffered import BufferedRSGI
from otel_panel_receiver.web import HEALTH
from otel_panel_receiver.wsgi import app as wsgi_app
from otel_panel_receiver.wsgi import settings

__all__ = ["app"]


app = BufferedRSGI(
    wsgi_app,
    max_body=settings.max_body_size,
    timeout=settings.client_timeout,
    # The memory store answers at once: the app runs in the event loop (0 threads). Stores that
    # wait on a disk or a network run in threads, so that the loop keeps reading requests.
    threads=settings.thread_count,
    close=wsgi_app.close,
    # The liveness probe touches nothing that waits: answered at once, even when every thread
    # waits on a frozen store.
    inline=frozenset({settings.path_prefix + HEALTH}),
    direct={wsgi_app.write.path: wsgi_app.write.rsgi},
)
