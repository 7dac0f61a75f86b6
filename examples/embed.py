"""Mount the receiver inside another WSGI application, under ``/analytics``.

The host application keeps its own routes; requests under the mount point go to the receiver
with the prefix moved from ``PATH_INFO`` to ``SCRIPT_NAME``, as WSGI mounting expects. The
Grafana panel's Endpoint is then ``/analytics/write`` (relative, same origin as the host app).

Run it: ``gunicorn -k gthread --threads 4 -b 127.0.0.1:8000 examples.embed:app``
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import falcon

from otel_panel_receiver import Settings, create_app

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


class Mount:
    """Send requests under ``prefix`` to ``inner``, everything else to ``outer``."""

    def __init__(self, outer: WSGIApp, prefix: str, inner: WSGIApp) -> None:
        self.outer, self.prefix, self.inner = outer, prefix.rstrip("/"), inner

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """Dispatch one request by its path."""
        path = environ.get("PATH_INFO", "")
        if path == self.prefix or path.startswith(self.prefix + "/"):
            environ = {
                **environ,
                "SCRIPT_NAME": environ.get("SCRIPT_NAME", "") + self.prefix,
                "PATH_INFO": path[len(self.prefix) :],
            }
            return self.inner(environ, start_response)
        return self.outer(environ, start_response)


class Home:
    """The host application's own page."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Answer with a greeting."""
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "the host application\n"


def build(settings: Settings | None = None) -> Mount:
    """Return the host app with the receiver mounted at ``/analytics``."""
    host = falcon.App()
    host.add_route("/", Home())
    receiver = create_app(settings or Settings(disable_session_log=True))
    return Mount(host, "/analytics", receiver)


app = build()
