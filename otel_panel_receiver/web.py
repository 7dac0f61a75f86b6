"""HTTP for the receiver: ``POST /write``, ``GET /metrics``, ``/healthz``, ``/readyz``.

Resources translate HTTP to and from the :class:`Receiver`: the body limit, the error mapping
to a clear 4xx (``{"error": ..., "path": ...}``), 503 with ``Retry-After`` while the session
store is unavailable, a 500 for a fault of the receiver itself (its traceback logged, at most
once per place in the code every 10 s), and the metrics exposition and readiness check given as
functions. :func:`add_routes` puts them on any Falcon app; what the app is built from is
decided by ``app.py``.
"""

from __future__ import annotations

import logging
import math
import traceback
from collections.abc import Callable
from typing import Any, Final

import falcon
import msgspec

from otel_panel_receiver.access import Access, Allowed, Refused, RequestFacts, client_address
from otel_panel_receiver.config import parse_duration
from otel_panel_receiver.errors import PayloadError, StoreUnavailable
from otel_panel_receiver.outcomes import Outcome
from otel_panel_receiver.receiver import Receiver
from otel_panel_receiver.stores import RETRY_AFTER
from otel_panel_receiver.throttle import Throttle
from otel_panel_receiver.usage import csv_text

__all__ = [
    "HEALTH",
    "READY",
    "USAGE",
    "Readiness",
    "Scrape",
    "UsageReport",
    "add_routes",
    "store_readiness",
]

log = logging.getLogger(__name__)

#: ``scrape(accept)`` returns ``/metrics``' body and content type for an ``Accept`` header.
Scrape = Callable[[str], tuple[bytes, str]]
#: ``readiness()`` returns whether the receiver can record payloads now, and its report.
Readiness = Callable[[], tuple[bool, dict[str, Any]]]
#: ``usage_report(window, unused)`` returns the usage report's document (seconds; unused:
#: only the dashboards not viewed for that long, or None for every one).
UsageReport = Callable[[float, float | None], dict[str, Any]]
#: The paths of the liveness and readiness probes, and of the usage report, under the prefix.
HEALTH: Final = "/healthz"
READY: Final = "/readyz"
USAGE: Final = "/api/dashboards/usage"
_WINDOW: Final = 30 * 86_400.0
_LONGEST: Final = 100 * 365 * 86_400.0

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
        self._receiver.handle(
            body,
            client=getattr(req.context, "client", req.remote_addr or ""),
            identity=getattr(req.context, "identity", None),
        )
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
    """``GET /healthz``: liveness; answers while the process can serve requests.

    It touches nothing (no store, no exporter): a store or collector outage must not make a
    probe restart a healthy process.
    """

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Answer ``ok``."""
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "ok\n"


class ReadyResource:
    """``GET /readyz``: readiness; 200 when payloads can be recorded now, else 503.

    The body reports the session store and each exporter. Only the store decides: exports
    that fail cost ``/write`` nothing, so they never take the receiver out of service.
    """

    def __init__(self, readiness: Readiness) -> None:
        self._readiness = readiness

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Check and report."""
        ready, report = self._readiness()
        resp.status = falcon.HTTP_200 if ready else falcon.HTTP_503
        resp.content_type = falcon.MEDIA_JSON
        resp.data = msgspec.json.encode({"ready": ready, **report})


class UsageResource:
    """``GET /api/dashboards/usage``: which dashboards are used, and which never are.

    ``?window=30d`` (the sessions and viewers counted; default 30 days), ``?unused=30d`` (only
    the dashboards not viewed for that long, the never-opened ones first). JSON, or CSV when
    the ``Accept`` header asks for ``text/csv``. Protected like ``/metrics``.
    """

    def __init__(self, report: UsageReport) -> None:
        self._report = report

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Build the report."""
        window = _duration_param(req, "window") or _WINDOW
        document = self._report(window, _duration_param(req, "unused"))
        if "text/csv" in (req.get_header("Accept") or ""):
            resp.content_type = "text/csv; charset=utf-8"
            resp.text = csv_text(document["dashboards"])
        else:
            resp.content_type = falcon.MEDIA_JSON
            resp.data = msgspec.json.encode(document)


def _duration_param(req: falcon.Request, name: str) -> float | None:
    text = req.get_param(name)
    if text is None:
        return None
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise falcon.HTTPBadRequest(description=f"{name}: {exc}") from None
    if not value > 0:
        raise falcon.HTTPBadRequest(description=f"{name}: expected a duration above 0")
    return min(value, _LONGEST)  # longer than anything kept: everything


def _error(resp: falcon.Response, status: str, message: str, path: str = "") -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.data = msgspec.json.encode({"error": message, "path": path})


def _payload_error(req: falcon.Request, resp: falcon.Response, ex: Exception, params: Any) -> None:
    assert isinstance(ex, PayloadError)
    _error(resp, falcon.HTTP_400, ex.message, ex.path)


def _store_unavailable(
    req: falcon.Request, resp: falcon.Response, ex: Exception, params: Any
) -> None:
    # Counted and logged by the receiver; nothing of the payload was recorded.
    _error(resp, falcon.HTTP_503, f"{ex}; nothing was recorded, send it again later")
    resp.set_header("Retry-After", str(math.ceil(RETRY_AFTER)))


def _internal_error(
    receiver: Receiver,
) -> Callable[[falcon.Request, falcon.Response, Exception, Any], None]:
    """Answer a fault of the receiver with a 500; log its traceback once per place per 10 s."""
    throttle = Throttle()

    def handle(req: falcon.Request, resp: falcon.Response, ex: Exception, params: Any) -> None:
        frames = traceback.extract_tb(ex.__traceback__)
        place = (type(ex).__name__, *((frames[-1].filename, frames[-1].lineno) if frames else ()))
        unlogged = throttle.admit(place)
        if unlogged is not None:
            log.error(
                "Internal error answering %s %s",
                req.method,
                req.path,
                exc_info=ex,
                extra={"fields": {"not_logged_since_last": unlogged}},
            )
        if req.method == "POST" and req.path.endswith("/write") and receiver.outcomes is not None:
            receiver.outcomes.count("internal_error")
        _error(resp, falcon.HTTP_500, f"internal error ({type(ex).__name__}); it is logged")

    return handle


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
                client=getattr(req.context, "client", req.remote_addr or ""),
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


class AccessGate:
    """Falcon middleware: who may post to ``/write`` and read ``/metrics``, and CORS.

    The decisions are ``access.py``'s; this only gathers the request's facts, answers a
    refusal (counted for ``/write``) and adds the CORS headers an allowed origin gets.
    """

    def __init__(
        self,
        access: Access,
        receiver: Receiver,
        *,
        prefix: str,
        cookie_name: str,
        trusted_proxies: tuple[Any, ...] = (),
    ) -> None:
        self._access = access
        self._receiver = receiver
        self._write = f"{prefix}/write"
        self._metrics = f"{prefix}/metrics"
        self._usage = prefix + USAGE
        self._cookie = cookie_name
        self._trusted = trusted_proxies

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Decide before any resource runs; a refusal completes the response."""
        client = client_address(
            req.remote_addr or "", req.get_header("X-Forwarded-For") or "", self._trusted
        )
        req.context.client = client
        origin = req.get_header("Origin") or ""
        if req.path == self._write and req.method == "OPTIONS":
            self._preflight(origin, resp)
            return
        facts = RequestFacts(
            method=req.method,
            origin=origin,
            authorization=req.get_header("Authorization") or "",
            query_token=req.get_param("token") or "",
            cookie=req.cookies.get(self._cookie, ""),
            client=client,
        )
        if req.path == self._write and req.method == "POST":
            decision = self._access.write(facts)
        elif req.path in (self._metrics, self._usage) and req.method == "GET":
            decision = self._access.metrics(facts)
        else:
            return
        if isinstance(decision, Allowed):
            req.context.identity = decision.identity
            return
        self._refuse(req, resp, decision)

    def _refuse(self, req: falcon.Request, resp: falcon.Response, refused: Refused) -> None:
        _error(resp, falcon.code_to_http_status(refused.status), refused.message)
        for name, value in refused.headers:
            resp.set_header(name, value)
        resp.set_header("Connection", "close")  # the body, if any, is not read
        resp.complete = True
        if req.path == self._write and self._receiver.outcomes is not None:
            self._receiver.outcomes.rejected(
                refused.outcome, status=refused.status, client=req.context.client,
                detail=refused.message,
            )  # fmt: skip

    def _preflight(self, origin: str, resp: falcon.Response) -> None:
        if not (self._access.checks_origins and origin and self._access.origin_allowed(origin)):
            return  # the router answers OPTIONS with Allow, and no CORS grant
        resp.status = falcon.HTTP_204
        resp.set_header("Access-Control-Allow-Methods", "POST, OPTIONS")
        resp.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type")
        resp.set_header("Access-Control-Max-Age", "600")
        resp.complete = True

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        """Grant CORS to an allowed origin (only when origins are checked at all)."""
        origin = req.get_header("Origin") or ""
        if self._access.checks_origins and origin and self._access.origin_allowed(origin):
            resp.set_header("Access-Control-Allow-Origin", origin)
            resp.append_header("Vary", "Origin")


def add_routes(
    app: falcon.App[Any, Any],
    receiver: Receiver,
    *,
    scrape: Scrape | None,
    readiness: Readiness | None = None,
    usage_report: UsageReport | None = None,
    prefix: str = "",
    max_body_size: int = 65_536,
) -> None:
    """Serve the receiver on ``app`` under ``prefix``; ``/metrics`` only with a ``scrape``.

    Also makes every error of ``app`` answer in the receiver's JSON shape, an unexpected
    exception included (a 500, its traceback logged, rate limited). ``/readyz`` reports
    ``readiness`` (without it, the receiver's store is pinged). Access rules, if any, come as
    an :class:`AccessGate` middleware given to the app when it is made.
    """
    app.req_options.strip_url_path_trailing_slash = False
    app.add_error_handler(Exception, _internal_error(receiver))
    app.add_error_handler(falcon.HTTPError, _http_error)
    app.add_error_handler(PayloadError, _payload_error)
    app.add_error_handler(StoreUnavailable, _store_unavailable)
    app.add_error_handler(_Refused, _refused(receiver))
    app.add_route(f"{prefix}/write", WriteResource(receiver, max_body_size))
    if scrape is not None:
        app.add_route(f"{prefix}/metrics", MetricsResource(scrape))
    app.add_route(prefix + HEALTH, HealthResource())
    app.add_route(
        prefix + READY, ReadyResource(readiness or (lambda: store_readiness(receiver.store)))
    )
    if usage_report is not None:
        app.add_route(prefix + USAGE, UsageResource(usage_report))


def store_readiness(store: Any) -> tuple[bool, dict[str, Any]]:
    """Return whether ``store`` takes writes now (its ``ping``, if it has one), and why not."""
    ping = getattr(store, "ping", None)
    try:
        if ping is not None:
            ping()
    except StoreUnavailable as exc:
        return False, {"store": f"unavailable: {exc}"}
    return True, {"store": "ok"}
