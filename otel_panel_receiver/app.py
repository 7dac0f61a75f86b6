"""The composition root: build a ready receiver app from settings, and nothing global.

:func:`create_app` decides what the receiver is made of (telemetry providers, session store,
session tracer, recorder, rules) from the settings, or takes the parts it is given, and puts
the HTTP resources of ``web.py`` on a Falcon app. What it builds it also closes; what it is
given belongs to the caller. One process may hold several apps, and another WSGI application
may mount one.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

import falcon

from otel_panel_receiver import web
from otel_panel_receiver.access import Access, TokenFile, parse_networks
from otel_panel_receiver.browser import BrowserMetrics, schema_setting
from otel_panel_receiver.config import Settings
from otel_panel_receiver.errors import ConfigError
from otel_panel_receiver.events import Events, Report
from otel_panel_receiver.export import Telemetry, build_telemetry
from otel_panel_receiver.grafana import GrafanaUsers
from otel_panel_receiver.inventory import Inventory
from otel_panel_receiver.model import Viewer
from otel_panel_receiver.outcomes import Outcomes
from otel_panel_receiver.privacy import Pseudonyms
from otel_panel_receiver.receiver import Receiver
from otel_panel_receiver.recorder import Recorder
from otel_panel_receiver.self_metrics import observe_dashboards, observe_store
from otel_panel_receiver.sessions import SessionRules
from otel_panel_receiver.stores import GuardedStore, MemorySessionStore, SessionStore, open_store
from otel_panel_receiver.stores.usage import open_usage
from otel_panel_receiver.traces import SessionTracer
from otel_panel_receiver.usage import Usage, row_document

__all__ = ["ReceiverApp", "build_access", "create_app", "readiness"]


class ReceiverApp(falcon.App[falcon.Request, falcon.Response]):
    """A Falcon app serving the receiver, holding what it serves; :meth:`close` releases it.

    ``receiver`` handles payloads (call it directly to bypass HTTP); ``telemetry`` holds the
    providers the receiver records into; ``inventory`` polls Grafana's dashboards (``None``
    without ``--grafana-url`` and a token); ``write`` answers ``POST /write`` for any server
    (the RSGI front of ``rsgi.py`` calls it without Falcon).
    """

    inventory: Inventory | None = None
    write: web.WriteEndpoint

    def __init__(
        self,
        receiver: Receiver,
        telemetry: Telemetry,
        closers: list[Callable[[], None]],
        gate: web.AccessGate | None = None,
    ) -> None:
        super().__init__(media_type=falcon.MEDIA_JSON, middleware=[gate] if gate else [])
        self.receiver = receiver
        self.telemetry = telemetry
        self._closers = closers

    def close(self) -> None:
        """Write open session spans, shut down the providers and close the store it built.

        Safe to call more than once: servers' exit hooks and ``atexit`` may all call it.
        """
        closers, self._closers = self._closers, []
        for close in closers:
            close()


def build_access(settings: Settings, closers: list[Callable[[], None]] | None = None) -> Access:
    """Return the access rules ``settings`` ask for; raise :class:`ConfigError` for bad ones.

    Reads the token files, parses the rate limit; contacts nobody. What needs closing (the
    Grafana client) is added to ``closers``.
    """
    tokens = TokenFile(settings.auth_token_file) if settings.auth_token_file else None
    metrics = TokenFile(settings.metrics_token_file) if settings.metrics_token_file else None
    sessions = None
    if settings.auth == "grafana" and settings.grafana_url:
        users = GrafanaUsers(settings.grafana_url, cookie_name=settings.grafana_cookie)
        if closers is not None:
            closers.append(users.close)
        sessions = users
    return Access(
        mode=settings.auth,
        tokens=tokens,
        sessions=sessions,
        cache_ttl=settings.auth_cache_ttl,
        allowed_origins=[o for o in settings.allowed_origins.split(",") if o.strip()],
        metrics_tokens=metrics,
        limit=_rate_limit(settings),
    )


def _rate_limit(settings: Settings) -> Callable[[str], bool] | None:
    """Return the check of ``--rate-limit`` (shared through Redis when the store is Redis)."""
    if not settings.rate_limit:
        return None
    import limits
    from limits.storage import storage_from_string

    try:
        item = limits.parse(settings.rate_limit)
    except ValueError as exc:
        raise ConfigError(f'--rate-limit {exc}; expected for example "120/minute"') from None
    url = settings.store_url if settings.store_url.startswith(("redis", "unix")) else "memory://"
    limiter = limits.strategies.MovingWindowRateLimiter(storage_from_string(url))
    return lambda client: limiter.hit(item, "opr-write", client)


def create_app(
    settings: Settings | None = None,
    *,
    store: SessionStore | None = None,
    telemetry: Telemetry | None = None,
    environ: Mapping[str, str] | None = None,
    stream: IO[str] | None = None,
    clock: Callable[[], float] = time.time,
) -> ReceiverApp:
    """Return the receiver's WSGI app for ``settings`` (the defaults if none).

    Without ``telemetry``, the providers are built from the settings and the standard
    ``OTEL_*`` variables of ``environ`` (the process environment unless given), as any
    OpenTelemetry component does: Prometheus pull at ``/metrics``, log lines on ``stream``
    (stdout), OTLP when an endpoint is set. Bring your own :class:`Telemetry` to record into
    the host application's providers (see ``export.session_views`` for the receiver's Views).
    Without ``store``, the one ``settings.store_url`` names is opened. ``clock`` (unix
    seconds) stands in for a payload's missing ``time``. ``close()`` shuts down the telemetry
    and the store only if they were built here.
    """
    settings = settings if settings is not None else Settings()
    closers: list[Callable[[], None]] = []
    try:
        return _assemble(
            settings,
            store=store,
            telemetry=telemetry,
            environ=environ,
            stream=stream,
            clock=clock,
            closers=closers,
        )
    except BaseException:
        for close in closers:  # what was built before the failure
            close()
        raise


def _assemble(
    settings: Settings,
    *,
    store: SessionStore | None,
    telemetry: Telemetry | None,
    environ: Mapping[str, str] | None,
    stream: IO[str] | None,
    clock: Callable[[], float],
    closers: list[Callable[[], None]],
) -> ReceiverApp:
    if telemetry is None:
        telemetry = build_telemetry(settings, stream=stream, environ=environ)
        closers.append(telemetry.shutdown)
    tracer = None
    if telemetry.tracer_provider is not None:
        tracer = SessionTracer(
            telemetry.tracer_provider,
            users=settings.user_label_mode == "clear",
            idle_timeout=settings.trace_idle_timeout,
            max_sessions=settings.max_cache_size,
        )
        closers.insert(0, tracer.close_all)  # its spans go out before the providers stop
    if store is None:
        store = open_store(
            settings.store_url,
            max_size=settings.max_cache_size,
            idle_ttl=settings.session_ttl,
            on_evict=tracer.dropped if tracer is not None else None,
            timeout=settings.store_timeout,
        )
        closers.append(store.close)
    if not isinstance(store, MemorySessionStore):  # the one store that cannot fail
        store = GuardedStore(store)
    pseudonyms = Pseudonyms(store, clock)
    mode = settings.user_label_mode
    redact = frozenset(f.strip() for f in settings.log_redact.split(",") if f.strip())
    recorder = Recorder(
        telemetry.meter_provider,
        telemetry.logger_provider,
        users=mode != "none",
        pseudonym=pseudonyms.label if mode == "pseudonymous" else None,
        redact=redact,
        session_log=not settings.disable_session_log,
        variable_log=not settings.disable_variable_log,
        raw_log=settings.log_raw,
        max_label_length=settings.max_label_length,
        tracer=tracer,
        tally=telemetry.tally,
        sdk_counters=telemetry.sdk_counters,
    )
    observe_store(telemetry.meter_provider, store)
    usage, inventory = _answers(
        settings, store, telemetry, environ=environ, clock=clock, closers=closers
    )
    outcomes = Outcomes(telemetry.meter_provider)
    receiver = Receiver(
        store,
        recorder,
        SessionRules(settings.session_timeout),
        clock=clock,
        outcomes=outcomes,
        viewers=pseudonyms,
        recorded=telemetry.recorded,
        usage=usage,
    )
    access = build_access(settings, closers)
    trusted = parse_networks(settings.trusted_proxies)
    events = not settings.disable_event_api
    gate = web.AccessGate(
        access,
        prefix=settings.path_prefix,
        trusted_proxies=trusted,
        events=events,
        browser_metrics=True,
    )
    app = ReceiverApp(receiver, telemetry, closers, gate)
    app.inventory = inventory
    endpoint = functools.partial(
        web.WriteEndpoint,
        receiver,
        access=access,
        max_body_size=settings.max_body_size,
        cookie_name=settings.grafana_cookie,
        trusted_proxies=trusted,
    )
    app.write = endpoint(path=f"{settings.path_prefix}/write")
    routes: dict[str, web.WriteEndpoint] = {}
    if events:
        api = Events(
            recorder,
            telemetry.meter_provider,
            user_labels=mode,
            pseudonym=pseudonyms.label_of,
            redact=redact,
            max_label_length=settings.max_label_length,
            clock=clock,
        )
        for path, take in zip(
            web.event_paths(settings.path_prefix),
            (api.batch, api.link, api.user_props),
            strict=True,
        ):
            routes[path] = endpoint(path=path, consume=_consumer(take), outcomes=api.outcomes)
    browser = BrowserMetrics(
        schema_setting(settings.browser_metrics_schema),
        telemetry.meter_provider,
        put=telemetry.put,
        sdk=telemetry.sdk_counters,
        limit=settings.metric_cardinality_limit,
        clock=clock,
    )
    path = settings.path_prefix + web.BROWSER_METRICS
    pushes = endpoint(path=path, consume=_consumer(browser.batch), outcomes=browser.outcomes)
    web.add_routes(
        app,
        receiver,
        scrape=telemetry.scrape if telemetry.exposition is not None else None,
        readiness=lambda: readiness(store, telemetry),
        usage_report=functools.partial(usage_report, usage, inventory, clock),
        prefix=settings.path_prefix,
        write=app.write,
        events=routes,
        browser_metrics=pushes,
    )
    return app


def _consumer(take: Callable[..., Report]) -> web.Consume:
    """Return a batch route's consumer: the report of ``take`` as its answer (202, or 400)."""

    def consume(body: bytes, client: str, identity: Viewer | None) -> tuple[int, Any]:
        return take(body, client=client, identity=identity).answer()

    return consume


def readiness(store: SessionStore, telemetry: Telemetry) -> tuple[bool, dict[str, Any]]:
    """Return whether payloads can be recorded now, with the store's and exporters' state.

    The store is pinged (within ``--store-timeout``; at once while it is known to be down);
    the exporters are reported but do not decide: an OTLP outage costs ``/write`` nothing.
    """
    ready, report = web.store_readiness(store)
    exports = {health.signal: "failing" if health.failing else "ok" for health in telemetry.exports}
    return ready, {**report, "exporters": exports}


def _answers(
    settings: Settings,
    store: SessionStore,
    telemetry: Telemetry,
    *,
    environ: Mapping[str, str] | None,
    clock: Callable[[], float],
    closers: list[Callable[[], None]],
) -> tuple[Usage, Inventory | None]:
    """Build the usage ledger beside the store, and the inventory poller when Grafana is named."""
    ledger = open_usage(
        store,
        max_dashboards=settings.metric_cardinality_limit,
        retention=settings.usage_retention,
    )
    # Before the store's own close, when the app closes it: a ledger's last write needs it.
    inner = getattr(store, "store", store)  # under a GuardedStore
    at = next((i for i, close in enumerate(closers) if close == inner.close), len(closers))
    closers.insert(at, ledger.close)
    usage = Usage(
        ledger,
        store,
        viewers=settings.user_label_mode != "none",
        retention=settings.usage_retention,
        max_length=settings.max_label_length,
        clock=clock,
    )
    environ = os.environ if environ is None else environ
    inventory = None
    if settings.grafana_url and (settings.grafana_token_file or environ.get("GRAFANA_TOKEN")):
        token_file, token = settings.grafana_token_file, environ.get("GRAFANA_TOKEN", "")
        inventory = Inventory(
            ledger,
            store,
            settings.grafana_url,
            token=(lambda: _read_token(token_file)) if token_file else (lambda: token),
            interval=settings.inventory_interval,
            clock=clock,
        )
        inventory.start()
        closers.insert(0, inventory.close)

    def last_views() -> list[tuple[dict[str, str], float]]:
        # Cut to --max-label-length when the ledger took them (Usage.seen).
        return [
            ({"grafana_host": host, "dashboard_uid": uid, "dashboard_name": name}, last)
            for host, uid, name, last in ledger.views()
        ]

    def dashboards() -> tuple[bool, list[dict[str, str]]]:
        assert inventory is not None
        state = inventory.state()
        return state.ok, [
            {"grafana_host": state.host, "dashboard_uid": d.uid, "dashboard_name": d.name,
             "folder": d.folder, "url": d.url}
            for d in state.dashboards
        ]  # fmt: skip

    observe_dashboards(
        telemetry.meter_provider,
        last_views,
        dashboards if inventory is not None else None,
        changed=lambda: usage.changes,
    )
    return usage, inventory


def usage_report(
    usage: Usage,
    inventory: Inventory | None,
    clock: Callable[[], float],
    window: float,
    unused: float | None,
) -> dict[str, Any]:
    """Return the usage report's document (``GET /api/dashboards/usage``)."""
    state = inventory.state() if inventory is not None else None
    rows = usage.report(state.dashboards if state else (), window=window, unused=unused)
    return {
        "generated": clock(),
        "window_seconds": window,
        "unused_seconds": unused,
        "inventory": None if state is None else {
            "ok": state.ok, "polled": state.at, "error": state.error, "grafana_host": state.host,
            "dashboards": len(state.dashboards),
        },
        "dashboards": [row_document(row) for row in rows],
    }  # fmt: skip


def _read_token(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        token = f.read().strip()
    if not token:  # caught by the poll, which logs this as its reason
        raise ValueError(f"the Grafana token file {path} is empty")
    return token
