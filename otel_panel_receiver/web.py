"""HTTP for the receiver: ``POST /write``, ``GET /metrics``, ``GET /healthz``; no rules here.

Resources translate HTTP to and from the :class:`Receiver`: the body limit, the error mapping
to a clear 4xx (``{"error": ..., "path": ...}``), and the metrics exposition given as a
function. :func:`add_routes` puts them on any Falcon app; what the app is built from is decided
by ``app.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import falcon
import msgspec

from otel_panel_receiver.errors import PayloadError
from otel_panel_receiver.outcomes import Outcome
from otel_panel_receiver.receiver import Receiver

__all__ = ["Scrape", "add_routes"]

#: ``scrape(accept)`` returns ``/metrics``' body and content type for an ``Accept`` header.
Scrape = Callable[[str], tuple[bytes, str]]

_CHUNK: Final = 65_536


class _Refused(Exception):
    """A ``/write`` request refused before its body is decoded: a transport matter."""

    outcome: Outcome
    status: str


class _BodyTooLarge(_Refused):
    """A body over the limit: 413, and the connection is closed (the rest is not read)."""

    outcome = "too_large"
    status = falcon.HTTP_413

    def __init__(self, size: int, limit: int, *, at_least: bool = False) -> None:
        more = "more than " if at_least else ""
        super().__init__(f"body is {more}{size} bytes, larger than the limit of {limit} bytes")


class _Unreadable(_Refused):
    """A body the server could not read: a bad chunk, a body cut short; 400."""

    outcome = "unreadable"
    status = falcon.HTTP_400


class _TimedOut(_Refused):
    """A body that did not arrive in time (the server gave up waiting); 408."""

    outcome = "timed_out"
    status = falcon.HTTP_408


class WriteResource:
    """``POST /write``: one panel payload per request, answered 201 with an empty body."""

    def __init__(self, receiver: Receiver, max_body_size: int) -> None:
        self._receiver = receiver
        self._limit = max_body_size

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Read the body whatever its Content-Type (the plugin sends ``text/plain``)."""
        try:
            body = self._read(req)
        except _Refused:
            raise
        except TimeoutError as exc:
            raise _TimedOut(f"body could not be read: {exc}") from None
        except Exception as exc:  # the server's own parse errors: a bad chunk, a short body
            raise _Unreadable(f"body could not be read: {type(exc).__name__}: {exc}") from None
        self._receiver.handle(body, client=req.remote_addr or "")
        resp.status = falcon.HTTP_201

    def _read(self, req: falcon.Request) -> bytes:
        length = req.content_length
        if length is not None:
            if length > self._limit:
                raise _BodyTooLarge(length, self._limit)
            return req.bounded_stream.read(length)
        if "chunked" not in (req.get_header("Transfer-Encoding") or "").lower():
            return b""  # no length and not chunked: no body (reading could block)
        # Chunked: the server de-chunks wsgi.input; read at most one byte past the limit.
        chunks, size = [], 0
        while chunk := req.stream.read(min(_CHUNK, self._limit + 1 - size)):
            size += len(chunk)
            if size > self._limit:
                raise _BodyTooLarge(self._limit, self._limit, at_least=True)
            chunks.append(chunk)
        return b"".join(chunks)


class MetricsResource:
    """``GET /metrics``: Prometheus text or OpenMetrics, as the scraper's Accept asks."""

    def __init__(self, scrape: Scrape) -> None:
        self._scrape = scrape

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Collect and encode the metrics."""
        resp.data, resp.content_type = self._scrape(req.get_header("Accept") or "")


class HealthResource:
    """``GET /healthz``: liveness; answers while the process can serve requests."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Answer ``ok``."""
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "ok\n"


def _error(resp: falcon.Response, status: str, message: str, path: str = "") -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.data = msgspec.json.encode({"error": message, "path": path})


def _payload_error(req: falcon.Request, resp: falcon.Response, ex: Exception, params: Any) -> None:
    assert isinstance(ex, PayloadError)
    _error(resp, falcon.HTTP_400, ex.message, ex.path)


def _refused(
    receiver: Receiver,
) -> Callable[[falcon.Request, falcon.Response, Exception, Any], None]:
    def handle(req: falcon.Request, resp: falcon.Response, ex: Exception, params: Any) -> None:
        assert isinstance(ex, _Refused)
        _error(resp, ex.status, str(ex))
        resp.set_header("Connection", "close")  # what is left of the body is not read
        if receiver.outcomes is not None:
            receiver.outcomes.rejected(
                ex.outcome,
                status=falcon.http_status_to_code(ex.status),
                client=req.remote_addr or "",
                detail=str(ex),
            )

    return handle


def _http_error(req: falcon.Request, resp: falcon.Response, ex: Exception, params: Any) -> None:
    # Falcon's own errors (404, 405, bad headers) in the same one-object shape.
    assert isinstance(ex, falcon.HTTPError)
    if ex.headers:
        resp.set_headers(ex.headers)
    if isinstance(ex, falcon.HTTPMethodNotAllowed):
        allowed = resp.get_header("Allow")
        message = f"method {req.method} is not allowed on {req.path}; allowed: {allowed}"
    elif isinstance(ex, falcon.HTTPNotFound) and not ex.description:
        message = f"no such route: {req.path}"
    else:
        message = ex.title if not ex.description else f"{ex.title}: {ex.description}"
    _error(resp, falcon.code_to_http_status(ex.status), message)


def add_routes(
    app: falcon.App[Any, Any],
    receiver: Receiver,
    *,
    scrape: Scrape | None,
    prefix: str = "",
    max_body_size: int = 65_536,
) -> None:
    """Serve the receiver on ``app`` under ``prefix``; ``/metrics`` only with a ``scrape``.

    Also makes every error of ``app`` answer in the receiver's JSON shape.
    """
    app.req_options.strip_url_path_trailing_slash = False
    app.add_error_handler(falcon.HTTPError, _http_error)
    app.add_error_handler(PayloadError, _payload_error)
    app.add_error_handler(_Refused, _refused(receiver))
    app.add_route(f"{prefix}/write", WriteResource(receiver, max_body_size))
    if scrape is not None:
        app.add_route(f"{prefix}/metrics", MetricsResource(scrape))
    app.add_route(f"{prefix}/healthz", HealthResource())
