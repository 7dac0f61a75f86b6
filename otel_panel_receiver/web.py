"""HTTP for the receiver: ``POST /write``, ``GET /metrics``, ``/healthz``, ``/readyz``.

Resources translate HTTP to and from the :class:`Receiver`: the body limit, the error mapping
to a clear 4xx (``{"error": ..., "path": ...}``), 503 with ``Retry-After`` while the session
store is unavailable, a 500 for a fault of the receiver itself (its traceback logged, at most
once per place in the code every 10 s), and the metrics exposition and readiness check given as
functions. :func:`add_routes` puts them on any Falcon app; what the app is built from is
decided by ``app.py``.

``POST /write`` itself is answered by :class:`WriteEndpoint`, which knows no framework: the
Falcon resource and the RSGI front of ``rsgi.py`` both go through it, so a payload gets the
same answer (access, limits, errors, CORS, counts) whichever serves it.
"""

from __future__ import annotations

import io
import logging
import math
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import falcon
import msgspec

from otel_panel_receiver.access import Access, Refused, RequestFacts, client_address
from otel_panel_receiver.config import parse_duration
from otel_panel_receiver.errors import PayloadError, StoreUnavailable
from otel_panel_receiver.model import Viewer
from otel_panel_receiver.outcomes import Outcome, Outcomes
from otel_panel_receiver.receiver import Receiver
from otel_panel_receiver.stores import RETRY_AFTER
from otel_panel_receiver.throttle import Throttle
from otel_panel_receiver.usage import csv_text

__all__ = [
    "HEALTH",
    "READY",
    "USAGE",
    "Answer",
    "Consume",
    "EventsResource",
    "Faults",
    "Readiness",
    "Scrape",
    "UsageReport",
    "WriteEndpoint",
    "add_routes",
    "cookie_value",
    "event_paths",
    "store_readiness",
]

log = logging.getLogger(__name__)

#: ``scrape(accept)`` returns ``/metrics``' body and content type for an ``Accept`` header.
Scrape = Callable[[str], tuple[bytes, str]]
#: ``consume(body, client, identity)`` records a body another way than ``/write`` (the event
#: API) and returns the status and JSON document of its answer; it raises ``PayloadError``.
Consume = Callable[[bytes, str, Viewer | None], tuple[int, Any]]
#: ``readiness()`` returns whether the receiver can record payloads now, and its report.
Readiness = Callable[[], tuple[bool, dict[str, Any]]]
#: ``usage_report(window, unused)`` returns the usage report's document (seconds; unused:
#: only the dashboards not viewed for that long, or None for every one).
UsageReport = Callable[[float, float | None], dict[str, Any]]
#: The paths of the liveness and readiness probes, and of the usage report, under the prefix.
HEALTH: Final = "/healthz"
#: The browser metrics' route under the prefix.
BROWSER_METRICS: Final = "/v1/metrics"
READY: Final = "/readyz"
USAGE: Final = "/api/dashboards/usage"
_WINDOW: Final = 30 * 86_400.0
_LONGEST: Final = 100 * 365 * 86_400.0

_CHUNK: Final = 65_536


class _Refused(Exception):
    """A ``/write`` request refused before its body is decoded: a transport matter."""

    outcome: Outcome
    status: int


class _BodyTooLarge(_Refused):
    """A body over the limit: 413, and the connection is closed (the rest is not read)."""

    outcome = "too_large"
    status = 413

    def __init__(self, size: int, limit: int, *, at_least: bool = False) -> None:
        more = "more than " if at_least else ""
        super().__init__(f"body is {more}{size} bytes, larger than the limit of {limit} bytes")


class _Unreadable(_Refused):
    """A body the server could not read: a bad chunk, a body cut short; 400."""

    outcome = "unreadable"
    status = 400


class _TimedOut(_Refused):
    """A body that did not arrive in time (the server gave up waiting); 408."""

    outcome = "timed_out"
    status = 408


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer, whatever serves it: status code, headers, body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""


_JSON: Final = ("Content-Type", falcon.MEDIA_JSON)
_CLOSE: Final = ("Connection", "close")  # what is left of the body is not read
_CREATED: Final = Answer(201, [_JSON])  # the usual answer, shared: never changed in place


def _error_body(message: str, path: str = "") -> bytes:
    return msgspec.json.encode({"error": message, "path": path})


class Faults:
    """Answer a fault of the receiver itself: 500, its traceback logged once per place per 10 s.

    A fault on ``/write`` is also counted (outcome ``internal_error``).
    """

    def __init__(self, receiver: Receiver) -> None:
        self._receiver = receiver
        self._throttle = Throttle()

    def answer(
        self,
        method: str,
        path: str,
        ex: Exception,
        *,
        write: bool,
        outcomes: Outcomes | None = None,
    ) -> Answer:
        """Log (rate limited) and count ``ex`` (in ``outcomes``, by default the receiver's)."""
        frames = traceback.extract_tb(ex.__traceback__)
        place = (type(ex).__name__, *((frames[-1].filename, frames[-1].lineno) if frames else ()))
        unlogged = self._throttle.admit(place)
        if unlogged is not None:
            log.error(
                "Internal error answering %s %s",
                method,
                path,
                exc_info=ex,
                extra={"fields": {"not_logged_since_last": unlogged}},
            )
        outcomes = self._receiver.outcomes if outcomes is None else outcomes
        if write and outcomes is not None:
            outcomes.count("internal_error")
        body = _error_body(f"internal error ({type(ex).__name__}); it is logged")
        return Answer(500, [_JSON], body)


class WriteEndpoint:
    """``POST /write`` without a framework: who may post, the body, the receiver; one answer.

    ``post`` takes what any server knows of the request (the peer's address, a header getter,
    the query string, the announced length and a ``read(n)`` of the body) and returns the
    :class:`Answer`: 201 with an empty body, or a JSON ``{"error", "path"}`` that says why not.
    Every refusal of a payload is counted and logged by the receiver's outcomes; a request
    refused before its body is read closes its connection. ``access`` (``None``: anyone may
    post) decides who may post and which origins get CORS headers; ``trusted_proxies`` are
    believed about the client's address (``X-Forwarded-For``).
    """

    def __init__(
        self,
        receiver: Receiver,
        *,
        access: Access | None = None,
        path: str = "/write",
        max_body_size: int = 65_536,
        cookie_name: str = "grafana_session",
        trusted_proxies: tuple[Any, ...] = (),
        consume: Consume | None = None,
        outcomes: Outcomes | None = None,
    ) -> None:
        self.path = path
        self.faults = Faults(receiver)
        self._receiver = receiver
        self._consume = consume
        self._outcomes = receiver.outcomes if consume is None else outcomes
        self._access = access
        self._limit = self.max_body_size = max_body_size
        self._cookie = cookie_name
        self._trusted = trusted_proxies
        #: No one to check and no address to believe: a body read whole goes straight in.
        self._plain = (access is None or access.open) and not trusted_proxies

    def post(
        self,
        *,
        peer: str,
        header: Callable[[str], str],
        query: str,
        length: int | None,
        read: Callable[[int], bytes],
    ) -> Answer:
        """Answer one ``POST``: ``header(name)`` is ``""`` for a header not sent."""
        trusted = self._trusted
        client = client_address(peer, header("X-Forwarded-For"), trusted) if trusted else peer
        access = self._access
        identity: Viewer | None = None
        cors: list[tuple[str, str]] = []
        if access is not None and not access.open:
            origin = header("Origin")
            if access.grants_cors(origin):
                cors = [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]
            decision = access.write(self._facts(access, origin, header, query, client))
            if isinstance(decision, Refused):
                return self._refused(decision, client, cors)
            identity = decision.identity
        try:
            body = self._read(length, header, read)
        except _Refused as exc:
            return self._refused(Refused(exc.outcome, exc.status, str(exc)), client, cors)
        return self._take(body, client, identity, cors)

    def _take(
        self, body: bytes, client: str, identity: Viewer | None, cors: list[tuple[str, str]]
    ) -> Answer:
        """Record a body that may be posted; return the answer (which says why not, if not)."""
        try:
            if self._consume is not None:
                status, document = self._consume(body, client, identity)
                return Answer(status, [_JSON, *cors], msgspec.json.encode(document))
            self._receiver.handle(body, client=client, identity=identity)
        except PayloadError as exc:  # counted by the receiver (or the consumer)
            return Answer(400, [_JSON, *cors], _error_body(exc.message, exc.path))
        except StoreUnavailable as exc:  # counted and logged by the receiver; nothing recorded
            if self._consume is not None and self._outcomes is not None:  # the event API's
                self._outcomes.rejected("store_unavailable", status=503, client=client,
                                        detail=str(exc))  # fmt: skip
            message = _error_body(f"{exc}; nothing was recorded, send it again later")
            retry = ("Retry-After", str(math.ceil(RETRY_AFTER)))
            return Answer(503, [_JSON, retry, *cors], message)
        except Exception as exc:
            answer = self.faults.answer("POST", self.path, exc, write=True, outcomes=self._outcomes)
            answer.headers.extend(cors)
            return answer
        return Answer(201, [_JSON, *cors]) if cors else _CREATED

    def refused_query(
        self, outcome: Outcome, message: str, *, peer: str, forwarded_for: str
    ) -> Answer:
        """Answer a ``GET`` whose ``q`` cannot be taken: 400 naming ``q``, counted and logged."""
        trusted = self._trusted
        client = client_address(peer, forwarded_for, trusted) if trusted else peer
        if self._outcomes is not None:
            self._outcomes.rejected(outcome, status=400, client=client, detail=message)
        return Answer(400, [_JSON], _error_body(message, "q"))

    def rsgi(self, scope: Any, body: Any, length: int) -> tuple[int, list[Any], bytes]:
        """Answer a ``POST`` served over RSGI, its body read whole (``buffered.py``'s direct).

        ``scope`` is granian's: ``client`` (address:port), ``headers`` (lower-case names,
        ``get_all``), ``query_string``; ``body`` is the body read (``bytes``) or a binary file
        (one whose reading raises why the body could not be read).
        """
        peer = scope.client.rpartition(":")[0].strip("[]")
        if type(body) is bytes and self._plain and length <= self._limit:
            answer = self._take(body, peer, None, [])  # all that post() would do for it
        else:
            headers = scope.headers
            answer = self.post(
                peer=peer,
                header=lambda name: ", ".join(headers.get_all(name.lower())),
                query=scope.query_string,
                length=length,
                read=body.read if type(body) is not bytes else lambda n: body,
            )
        return answer.status, answer.headers, answer.body

    def _facts(
        self, access: Access, origin: str, header: Callable[[str], str], query: str, client: str
    ) -> RequestFacts:
        token = ""
        if query:
            value = falcon.uri.parse_query_string(query).get("token", "")
            token = value[-1] if isinstance(value, list) else value
        cookie = ""
        if access.mode == "grafana" and (text := header("Cookie")):
            cookie = cookie_value(text, self._cookie)
        return RequestFacts(
            method="POST",
            origin=origin,
            authorization=header("Authorization"),
            query_token=token,
            cookie=cookie,
            client=client,
        )

    def _refused(self, refused: Refused, client: str, cors: list[tuple[str, str]]) -> Answer:
        """Count and log ``refused``; answer it, closing the connection (the body is not read)."""
        status, message = refused.status, refused.message
        if self._outcomes is not None:
            self._outcomes.rejected(refused.outcome, status=status, client=client, detail=message)
        headers = [_JSON, *refused.headers, _CLOSE, *cors]
        return Answer(status, headers, _error_body(message))

    def _read(
        self, length: int | None, header: Callable[[str], str], read: Callable[[int], bytes]
    ) -> bytes:
        try:
            if length is not None:
                if length > self._limit:
                    raise _BodyTooLarge(length, self._limit)
                return read(length)
            if "chunked" not in header("Transfer-Encoding").lower():
                return b""  # no length and not chunked: no body (reading could block)
            # Chunked: the server de-chunks the input; read at most one byte past the limit.
            chunks, size = [], 0
            while chunk := read(min(_CHUNK, self._limit + 1 - size)):
                size += len(chunk)
                if size > self._limit:
                    raise _BodyTooLarge(self._limit, self._limit, at_least=True)
                chunks.append(chunk)
            return b"".join(chunks)
        except _Refused:
            raise
        except TimeoutError as exc:
            raise _TimedOut(f"body could not be read: {exc}") from None
        except Exception as exc:  # the server's own parse errors: a bad chunk, a short body
            raise _Unreadable(f"body could not be read: {type(exc).__name__}: {exc}") from None


def cookie_value(header: str, name: str) -> str:
    """Return the first value of cookie ``name`` in a ``Cookie`` header (RFC 6265 5.4), or "".

    Pairs are split at ``;`` and their first ``=``, blanks around each part ignored; a value in
    double quotes loses them (a Grafana session cookie is a bare token).
    """
    for pair in header.split(";"):
        key, _, value = pair.partition("=")
        if key.strip() == name:
            value = value.strip()
            return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
    return ""


class WriteResource:
    """``POST /write`` on Falcon: the request handed to a :class:`WriteEndpoint`."""

    def __init__(self, endpoint: WriteEndpoint) -> None:
        self._endpoint = endpoint

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Read the body whatever its Content-Type (the plugin sends ``text/plain``)."""
        answer = self._endpoint.post(
            peer=req.remote_addr or "",
            header=lambda name: req.get_header(name) or "",
            query=req.query_string,
            length=req.content_length,
            read=req.stream.read,
        )
        _respond(resp, answer)


class EventsResource(WriteResource):
    """A route of the event API: ``POST`` its body, or ``GET`` with the same document in ``?q=``."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Take the document from ``q`` (URL-encoded JSON), as a body of the same bytes."""
        values = falcon.uri.parse_query_string(req.query_string, keep_blank=True).get("q")
        document = (
            b"" if values is None else (values[-1] if isinstance(values, list) else values).encode()
        )
        refusal: tuple[Outcome, str] | None = None
        if values is None:
            refusal = ("malformed", "q is missing: expected the URL-encoded JSON document")
        elif len(document) > self._endpoint.max_body_size:  # a URL, not a body: no 413
            limit = self._endpoint.max_body_size
            refusal = (
                "too_large",
                f"q is {len(document)} bytes, larger than the limit of {limit} bytes",
            )
        if refusal is not None:
            answer = self._endpoint.refused_query(
                *refusal, peer=req.remote_addr or "",
                forwarded_for=req.get_header("X-Forwarded-For") or "",
            )  # fmt: skip
            _respond(resp, answer)
            return
        stream = io.BytesIO(document)
        answer = self._endpoint.post(
            peer=req.remote_addr or "",
            header=lambda name: req.get_header(name) or "",
            query=req.query_string,
            length=len(document),
            read=stream.read,
        )
        _respond(resp, answer)


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


def _error(resp: falcon.Response, status: str | int, message: str, path: str = "") -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.data = _error_body(message, path)


def _respond(resp: falcon.Response, answer: Answer) -> None:
    """Put an :class:`Answer` on a Falcon response (``Vary`` added to, the rest set)."""
    resp.status = answer.status
    for name, value in answer.headers:
        resp.append_header(name, value) if name == "Vary" else resp.set_header(name, value)
    resp.data = answer.body or None


def _internal_error(
    faults: Faults,
) -> Callable[[falcon.Request, falcon.Response, Exception, Any], None]:
    """Answer a fault outside ``/write`` (which answers its own) through ``faults``."""

    def handle(req: falcon.Request, resp: falcon.Response, ex: Exception, params: Any) -> None:
        write = req.method == "POST" and req.path.endswith("/write")
        _respond(resp, faults.answer(req.method, req.path, ex, write=write))

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
    """Falcon middleware: who may read ``/metrics`` and the usage report, and CORS.

    The decisions are ``access.py``'s; this only gathers the request's facts, answers a
    refusal and adds the CORS headers an allowed origin gets. ``POST /write`` and, with
    ``events`` and ``browser_metrics``, the event API's routes and ``/v1/metrics`` decide for
    themselves (:class:`WriteEndpoint`, with the same rules); their CORS preflights are
    answered here.
    """

    def __init__(
        self,
        access: Access,
        *,
        prefix: str,
        trusted_proxies: tuple[Any, ...] = (),
        events: bool = False,
        browser_metrics: bool = False,
    ) -> None:
        self._access = access
        self._writes = {f"{prefix}/write": "POST, OPTIONS"}
        if events:
            self._writes.update(dict.fromkeys(event_paths(prefix), "GET, POST, OPTIONS"))
        if browser_metrics:
            self._writes[prefix + BROWSER_METRICS] = "POST, OPTIONS"
        self._reads = (f"{prefix}/metrics", prefix + USAGE)
        self._trusted = trusted_proxies

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Decide before any resource runs; a refusal completes the response."""
        methods = self._writes.get(req.path)
        if methods is not None:
            if req.method == "OPTIONS":
                self._preflight(req.get_header("Origin") or "", methods, resp)
            return
        if req.method != "GET" or req.path not in self._reads:
            return
        facts = RequestFacts(
            method=req.method,
            origin=req.get_header("Origin") or "",
            authorization=req.get_header("Authorization") or "",
            query_token="",
            cookie="",
            client=client_address(
                req.remote_addr or "", req.get_header("X-Forwarded-For") or "", self._trusted
            ),
        )
        decision = self._access.metrics(facts)
        if isinstance(decision, Refused):
            _error(resp, decision.status, decision.message)
            for name, value in (*decision.headers, _CLOSE):
                resp.set_header(name, value)
            resp.complete = True

    def _preflight(self, origin: str, methods: str, resp: falcon.Response) -> None:
        if not self._access.grants_cors(origin):
            return  # the router answers OPTIONS with Allow, and no CORS grant
        resp.status = falcon.HTTP_204
        resp.set_header("Access-Control-Allow-Methods", methods)
        resp.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type")
        resp.set_header("Access-Control-Max-Age", "600")
        resp.complete = True

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        """Grant CORS to an allowed origin (only when origins are checked at all)."""
        if req.path in self._writes and req.method in ("POST", "GET"):
            return  # the endpoint's answer carries its own
        origin = req.get_header("Origin") or ""
        if self._access.grants_cors(origin):
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
    write: WriteEndpoint | None = None,
    events: dict[str, WriteEndpoint] | None = None,
    browser_metrics: WriteEndpoint | None = None,
) -> None:
    """Serve the receiver on ``app`` under ``prefix``; ``/metrics`` only with a ``scrape``.

    Also makes every error of ``app`` answer in the receiver's JSON shape, an unexpected
    exception included (a 500, its traceback logged, rate limited). ``/readyz`` reports
    ``readiness`` (without it, the receiver's store is pinged). ``write`` answers
    ``POST /write`` (by default one anyone may post to, bodies up to ``max_body_size``); the
    access rules of the other routes, if any, come as an :class:`AccessGate` middleware given
    to the app when it is made. ``events`` maps each route of the event API to its endpoint;
    ``browser_metrics`` answers ``POST /v1/metrics``.
    """
    if write is None:
        write = WriteEndpoint(receiver, path=f"{prefix}/write", max_body_size=max_body_size)
    app.req_options.strip_url_path_trailing_slash = False
    app.add_error_handler(Exception, _internal_error(write.faults))
    app.add_error_handler(falcon.HTTPError, _http_error)
    app.add_route(write.path, WriteResource(write))
    if scrape is not None:
        app.add_route(f"{prefix}/metrics", MetricsResource(scrape))
    app.add_route(prefix + HEALTH, HealthResource())
    app.add_route(
        prefix + READY, ReadyResource(readiness or (lambda: store_readiness(receiver.store)))
    )
    if usage_report is not None:
        app.add_route(prefix + USAGE, UsageResource(usage_report))
    for path, endpoint in (events or {}).items():
        app.add_route(path, EventsResource(endpoint))
    if browser_metrics is not None:
        app.add_route(browser_metrics.path, WriteResource(browser_metrics))


def event_paths(prefix: str = "") -> tuple[str, str, str]:
    """Return the event API's routes under ``prefix``: events, user links, user properties."""
    return f"{prefix}/v1/events", f"{prefix}/v1/setUserId", f"{prefix}/v1/setUserProps"


def store_readiness(store: Any) -> tuple[bool, dict[str, Any]]:
    """Return whether ``store`` takes writes now (its ``ping``, if it has one), and why not."""
    ping = getattr(store, "ping", None)
    try:
        if ping is not None:
            ping()
    except StoreUnavailable as exc:
        return False, {"store": f"unavailable: {exc}"}
    return True, {"store": "ok"}
