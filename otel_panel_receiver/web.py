"""The Falcon app: ``POST /write``, ``GET /metrics``, ``GET /healthz``; HTTP only, no rules.

Resources translate HTTP to and from the :class:`Receiver`: the body limit, the error mapping
to a clear 4xx (``{"error": ..., "path": ...}``), and the Prometheus exposition. Nothing here
is global: :func:`create_app` builds everything from what it is given, so one process can hold
several apps, and an embedding WSGI app can mount this one.
"""

from __future__ import annotations

from typing import Any

import falcon
import msgspec
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from otel_panel_receiver.config import Settings
from otel_panel_receiver.errors import PayloadError
from otel_panel_receiver.providers import Telemetry, build_telemetry
from otel_panel_receiver.receiver import Receiver
from otel_panel_receiver.sessions import SessionRules
from otel_panel_receiver.stores import SessionStore
from otel_panel_receiver.stores.factory import open_store
from otel_panel_receiver.telemetry import Recorder
from otel_panel_receiver.traces import SessionTracer

__all__ = ["ReceiverApp", "create_app", "create_receiver"]

_CHUNK = 65_536


class WriteResource:
    """``POST /write``: one panel payload per request, answered 201 with an empty body."""

    def __init__(self, receiver: Receiver, max_body_size: int) -> None:
        self._receiver = receiver
        self._limit = max_body_size

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Read the body whatever its Content-Type (the plugin sends ``text/plain``)."""
        body = self._read(req)
        self._receiver.handle(body)
        resp.status = falcon.HTTP_201

    def _read(self, req: falcon.Request) -> bytes:
        length = req.content_length
        if length is not None:
            if length > self._limit:
                raise _too_large(length, self._limit)
            return req.bounded_stream.read(length)
        if "chunked" not in (req.get_header("Transfer-Encoding") or "").lower():
            return b""  # no length and not chunked: no body (reading could block)
        # Chunked: the server de-chunks wsgi.input; read at most one byte past the limit.
        chunks, size = [], 0
        while chunk := req.stream.read(min(_CHUNK, self._limit + 1 - size)):
            size += len(chunk)
            if size > self._limit:
                raise _too_large(self._limit, self._limit, at_least=True)
            chunks.append(chunk)
        return b"".join(chunks)


def _too_large(size: int, limit: int, *, at_least: bool = False) -> PayloadError:
    more = "more than " if at_least else ""
    return PayloadError(
        f"body is {more}{size} bytes, larger than the limit of {limit} bytes", status=413
    )


class MetricsResource:
    """``GET /metrics``: Prometheus text or OpenMetrics, as the scraper's Accept asks."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Collect and encode the registry."""
        encoder, content_type = choose_encoder(req.get_header("Accept") or "")
        resp.data = encoder(self._registry)
        resp.content_type = content_type


class HealthResource:
    """``GET /healthz``: liveness; answers while the process can serve requests."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Answer ``ok``."""
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "ok\n"


def _payload_error(req: falcon.Request, resp: falcon.Response, ex: Exception, params: Any) -> None:
    assert isinstance(ex, PayloadError)
    resp.status = falcon.code_to_http_status(ex.status)
    resp.content_type = falcon.MEDIA_JSON
    resp.data = msgspec.json.encode({"error": ex.message, "path": ex.path})
    if ex.status == 413:
        resp.set_header("Connection", "close")  # the rest of the body is not read


def _http_error(req: falcon.Request, resp: falcon.Response, ex: Exception, params: Any) -> None:
    # Falcon's own errors (404, 405, bad headers) in the same one-object shape.
    assert isinstance(ex, falcon.HTTPError)
    resp.status = ex.status
    resp.content_type = falcon.MEDIA_JSON
    if ex.headers:
        resp.set_headers(ex.headers)
    if isinstance(ex, falcon.HTTPMethodNotAllowed):
        allowed = resp.get_header("Allow")
        message = f"method {req.method} is not allowed on {req.path}; allowed: {allowed}"
    elif isinstance(ex, falcon.HTTPNotFound) and not ex.description:
        message = f"no such route: {req.path}"
    else:
        message = ex.title if not ex.description else f"{ex.title}: {ex.description}"
    resp.data = msgspec.json.encode({"error": message, "path": ""})


class ReceiverApp(falcon.App[falcon.Request, falcon.Response]):
    """A Falcon app that also holds the receiver and telemetry it serves."""

    receiver: Receiver
    telemetry: Telemetry
    _closed = False

    def close(self) -> None:
        """Close open session spans, shut the providers down (flushing), close the store.

        Safe to call more than once: servers' exit hooks and ``atexit`` may all call it.
        """
        if self._closed:
            return
        self._closed = True
        self.receiver.recorder.close()
        self.telemetry.shutdown()
        self.receiver.store.close()


def create_receiver(
    settings: Settings, telemetry: Telemetry, store: SessionStore | None = None
) -> Receiver:
    """Return the receiver for ``settings``: the store (memory by default) and the recorder."""
    tracer = None
    if telemetry.tracer_provider is not None:
        tracer = SessionTracer(
            telemetry.tracer_provider,
            users=not settings.disable_user_metrics,
            idle_timeout=settings.trace_idle_timeout,
            max_sessions=settings.max_cache_size,
        )
    if store is None:
        store = open_store(
            settings.store_url,
            max_size=settings.max_cache_size,
            idle_ttl=settings.session_ttl,
            on_evict=tracer.evicted if tracer is not None else None,
        )
    recorder = Recorder(
        telemetry.meter_provider,
        telemetry.logger_provider,
        users=not settings.disable_user_metrics,
        session_log=not settings.disable_session_log,
        variable_log=not settings.disable_variable_log,
        raw_log=settings.log_raw,
        tracer=tracer,
    )
    return Receiver(store, recorder, SessionRules(settings.session_timeout))


def create_app(
    settings: Settings | None = None,
    *,
    store: SessionStore | None = None,
    telemetry: Telemetry | None = None,
    receiver: Receiver | None = None,
) -> ReceiverApp:
    """Return the receiver's WSGI app, built only from what it is given.

    Without ``telemetry`` the default providers are built (Prometheus pull, logs to stdout);
    ``app.close()`` shuts them down and closes the store.
    """
    settings = settings if settings is not None else Settings()
    telemetry = telemetry if telemetry is not None else build_telemetry(settings)
    receiver = receiver if receiver is not None else create_receiver(settings, telemetry, store)
    app = ReceiverApp(media_type=falcon.MEDIA_JSON)
    app.req_options.strip_url_path_trailing_slash = False
    app.add_error_handler(falcon.HTTPError, _http_error)
    app.add_error_handler(PayloadError, _payload_error)
    prefix = settings.path_prefix
    app.add_route(f"{prefix}/write", WriteResource(receiver, settings.max_body_size))
    app.add_route(f"{prefix}/metrics", MetricsResource(telemetry.registry))
    app.add_route(f"{prefix}/healthz", HealthResource())
    app.receiver = receiver
    app.telemetry = telemetry
    return app
