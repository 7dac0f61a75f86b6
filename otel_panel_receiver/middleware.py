"""Usage analytics for any WSGI application (Falcon, Flask, Django): who uses which routes.

Request counts and durations come from OpenTelemetry's own WSGI instrumentation
(``opentelemetry-instrumentation-wsgi``: ``http.server.request.duration`` by method, status and
scheme, per the HTTP semantic conventions). On top, what it lacks, each dimension on a counter
of its own so that no label set multiplies another:

* ``web.requests.by_route`` {``http.route``, ``http.request.method``, ``status_class``}: the
  framework's route template (``/users/<int:id>``), never the raw path; ``(unmatched)`` for a
  request no route took;
* ``web.requests.by_browser`` {``browser``}, ``web.requests.by_os`` {``os``},
  ``web.requests.by_device`` {``device``}: from a maintained user-agent parser (``ua-parser``,
  with its native accelerator ``ua-parser-rs`` when installed), each reduced to a fixed list
  of values and ``Other``;
* ``web.requests.by_agent`` {``agent``}: ``browser``, ``bot`` (crawlers and monitors),
  ``client`` (curl, scripts, HTTP libraries) or ``unknown`` (no User-Agent);
* ``web.requests.by_referrer`` {``referrer``}: ``direct``, ``internal``, ``search``, a domain of
  ``referrers`` (the allowlist), or ``other``: never the URL;
* ``web.visitors``: a browser's first request of the UTC day, by a keyed hash of its address
  and user agent under the day's key (the privacy machinery of the panel's viewers: the key is
  deleted after 48 hours, the marks with it), kept in a session store, so every worker and host
  of a deployment counts a visitor once a day. ``increase(web_visitors_total[1d])`` at the end of
  a day is that day's unique visitors; a sum of days is visitor-days, not unique visitors.

The client's address is the peer's, or, behind ``trusted_proxies``, the rightmost address of
``X-Forwarded-For`` that is not itself a trusted proxy (the first hop is the client's own claim
and never believed).
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from opentelemetry.metrics import MeterProvider

from otel_panel_receiver.access import client_address, parse_networks
from otel_panel_receiver.attributes import cut
from otel_panel_receiver.errors import StoreUnavailable
from otel_panel_receiver.privacy import KEY_LIFETIME, Pseudonyms
from otel_panel_receiver.stores import MemorySessionStore, SessionStore
from otel_panel_receiver.throttle import Throttle
from otel_panel_receiver.version import INSTRUMENTATION_SCOPE, __version__

__all__ = [
    "ROUTE_KEY",
    "UNMATCHED",
    "Analytics",
    "DjangoUsageMiddleware",
    "FalconRoutes",
    "UsageMiddleware",
    "classify_agent",
    "classify_referrer",
    "environ_route",
    "flask_routes",
]

log = logging.getLogger(__name__)

#: The WSGI environ key where a framework adapter leaves the request's route template.
ROUTE_KEY: Final = "otel_panel_receiver.route"
UNMATCHED: Final = "(unmatched)"
#: Most distinct routes counted per process; past it a route is counted as ``(other)``.
MAX_ROUTES: Final = 1000
_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
_BROWSERS: Final = frozenset({
    "Chrome", "Chrome Mobile", "Chrome Mobile iOS", "Chrome Mobile WebView", "Chromium",
    "Firefox", "Firefox Mobile", "Firefox iOS", "Safari", "Mobile Safari",
    "Mobile Safari UI/WKWebView", "Edge", "Edge Mobile", "Opera", "Opera Mobile",
    "Samsung Internet", "Yandex Browser", "Brave", "Vivaldi", "UC Browser", "IE",
})  # fmt: skip
_OSES: Final = frozenset(
    {"Windows", "Mac OS X", "iOS", "Android", "Linux", "Ubuntu", "Chrome OS", "Fedora"}
)
_CLIENTS: Final = re.compile(
    r"^(curl|wget|python-requests|python-urllib|python-httpx|aiohttp|go-http-client|okhttp|"
    r"java|apache-httpclient|axios|node-fetch|undici|node|libwww-perl|httpie|postmanruntime|"
    r"insomnia|php|ruby|powershell|grafana|prometheus|blackbox-exporter)\b",
    re.IGNORECASE,
)
_BOT_WORDS: Final = re.compile(r"bot|crawl|spider|slurp|monitor|uptime|headless|lighthouse", re.I)
_SEARCH: Final = re.compile(
    r"(^|\.)(google|bing|duckduckgo|yahoo|baidu|yandex|ecosia|startpage|qwant|naver|seznam)"
    r"\.[a-z.]+$|^search\.brave\.com$"
)
#: Longest User-Agent read; longer ones are cut before parsing (a parse is linear in it).
_MAX_AGENT: Final = 512


@dataclass(frozen=True, slots=True)
class Agent:
    """What a User-Agent says, reduced to bounded values."""

    kind: str  # browser, bot, client, unknown
    browser: str
    os: str
    device: str  # desktop, mobile, tablet, bot, other


def classify_agent(user_agent: str) -> Agent:
    """Return the bounded reading of a User-Agent header (cached: browsers repeat theirs)."""
    return _classify(user_agent[:_MAX_AGENT].strip())


@functools.lru_cache(maxsize=4096)
def _classify(text: str) -> Agent:
    if not text:
        return Agent("unknown", "Other", "Other", "other")
    if _CLIENTS.match(text):
        return Agent("client", "Other", "Other", "other")
    from ua_parser import parse  # an optional dependency, loaded on first use

    result = parse(text)
    family = result.user_agent.family if result.user_agent else "Other"
    device = result.device.family if result.device else "Other"
    os = result.os.family if result.os else "Other"
    if device == "Spider" or _BOT_WORDS.search(text):
        return Agent("bot", "Other", "Other", "bot")
    if family == "Other" and not text.startswith("Mozilla/"):
        return Agent("client", "Other", "Other", "other")
    kind = (
        "tablet"
        if device == "iPad" or "Tablet" in text
        else ("mobile" if os in ("iOS", "Android") or "Mobile" in text else "desktop")
    )
    return Agent(
        "browser",
        family if family in _BROWSERS else "Other",
        os if os in _OSES else "Other",
        kind,
    )


def classify_referrer(
    referer: str, host: str, *, internal: Iterable[str] = (), allowed: Iterable[str] = ()
) -> str:
    """Return ``direct``, ``internal``, ``search``, an allowed domain, or ``other``."""
    if not referer:
        return "direct"
    try:
        name = (urlsplit(referer[:2048]).hostname or "").lower()
    except ValueError:
        return "other"
    if not name:
        return "other"
    own = host.split(":", maxsplit=1)[0].lower()
    if name == own or name in internal:
        return "internal"
    if _SEARCH.search(name):
        return "search"
    for domain in allowed:
        if name == domain or name.endswith("." + domain):
            return domain
    return "other"


class Analytics:
    """Record one request's dimensions; what every adapter (WSGI, Django) calls.

    ``store`` keeps the daily visitor marks (and the day's key): the memory store of this
    process by default; give the shared store of a deployment (``open_store("lmdb://...")``,
    Redis) when several processes serve the app. ``referrers``: the domains shown by name;
    ``internal``: more host names that count as this site; ``trusted_proxies``: a comma list of
    addresses or CIDR blocks whose ``X-Forwarded-For`` is believed. ``prefix`` names the
    metrics (``web.requests.by_route``...).
    """

    def __init__(
        self,
        meter_provider: MeterProvider,
        *,
        store: SessionStore | None = None,
        referrers: Sequence[str] = (),
        internal: Sequence[str] = (),
        trusted_proxies: str = "",
        prefix: str = "web",
        clock: Callable[[], float] = time.time,
    ) -> None:
        meter = meter_provider.get_meter(INSTRUMENTATION_SCOPE, __version__)

        def counter(name: str, what: str) -> Any:
            return meter.create_counter(f"{prefix}.{name}", unit="{request}", description=what)

        self._route = counter("requests.by_route", "Requests by route template, method, class.")
        self._browser = counter("requests.by_browser", "Requests of browsers, by browser.")
        self._os = counter("requests.by_os", "Requests of browsers, by operating system.")
        self._device = counter("requests.by_device", "Requests by device class.")
        self._agent = counter("requests.by_agent", "Requests by kind of client.")
        self._referrer = counter("requests.by_referrer", "Requests by where they came from.")
        self._visitors = meter.create_counter(
            f"{prefix}.visitors",
            unit="{visitor}",
            description="Distinct browsers per UTC day: counted at a browser's first request "
            "of the day (a keyed hash of its address and user agent).",
        )
        self._store = store if store is not None else MemorySessionStore()
        self._pseudonyms = Pseudonyms(self._store, clock)
        self._referrers = tuple(d.lower().lstrip(".") for d in referrers)
        self._internal = frozenset(h.lower() for h in internal)
        self._trusted = parse_networks(trusted_proxies)
        self._routes: set[str] = set()
        self._throttle = Throttle()

    def record(self, environ: dict[str, Any], status: int, route: str | None) -> None:
        """Count one answered request: its route and status, who sent it, from where."""
        method = environ.get("REQUEST_METHOD", "")
        self._route.add(
            1,
            {
                "http.route": self._bounded_route(route),
                "http.request.method": method if method in _METHODS else "_OTHER",
                "status_class": f"{status // 100}xx" if 100 <= status < 600 else "other",
            },
        )
        agent = classify_agent(environ.get("HTTP_USER_AGENT", ""))
        self._agent.add(1, {"agent": agent.kind})
        self._device.add(1, {"device": agent.device})
        if agent.kind != "browser":
            return
        self._browser.add(1, {"browser": agent.browser})
        self._os.add(1, {"os": agent.os})
        referrer = classify_referrer(
            environ.get("HTTP_REFERER", ""),
            environ.get("HTTP_HOST", ""),
            internal=self._internal,
            allowed=self._referrers,
        )
        self._referrer.add(1, {"referrer": referrer})
        peer = environ.get("REMOTE_ADDR", "")
        client = client_address(peer, environ.get("HTTP_X_FORWARDED_FOR", ""), self._trusted)
        try:
            marker = self._pseudonyms.day_marker("visitor", client, environ["HTTP_USER_AGENT"])
            if self._store.mark(marker, KEY_LIFETIME):
                self._visitors.add(1)
        except StoreUnavailable:
            pass  # a visitor the store cannot mark now goes uncounted; the request is served

    def safely(
        self,
        environ: dict[str, Any],
        status: int,
        route: Callable[[dict[str, Any]], str | None],
    ) -> None:
        """Record, never raising: a fault of the analytics is logged (at most once per 10 s)
        and counted in the log line, and the request it watched is served all the same."""
        try:
            self.record(environ, status, route(environ))
        except Exception as exc:
            unlogged = self._throttle.admit(type(exc).__name__)
            if unlogged is not None:
                log.error(
                    "Request analytics failed; the request was served",
                    exc_info=exc,
                    extra={"fields": {"not_logged_since_last": unlogged}},
                )

    def _bounded_route(self, route: str | None) -> str:
        if route is None:
            return UNMATCHED
        route = cut(route, 128)
        if route not in self._routes:
            if len(self._routes) >= MAX_ROUTES:
                return "(other)"
            self._routes.add(route)
        return route


class UsageMiddleware:
    """WSGI middleware: OpenTelemetry's WSGI instrumentation, then :class:`Analytics`.

    ``route`` returns a request's route template from its environ after the app answered;
    by default the one an adapter left under :data:`ROUTE_KEY` (:func:`flask_routes` for
    Flask, :class:`FalconRoutes` for Falcon); without one every request is ``(unmatched)``.
    Other keyword arguments are those of :class:`Analytics`.
    """

    def __init__(
        self,
        app: Callable[..., Iterable[bytes]],
        meter_provider: MeterProvider,
        *,
        tracer_provider: Any = None,
        route: Callable[[dict[str, Any]], str | None] | None = None,
        **options: Any,
    ) -> None:
        from opentelemetry.instrumentation.wsgi import (  # optional dependency
            OpenTelemetryMiddleware,
        )

        self.analytics = Analytics(meter_provider, **options)
        self._route = route or environ_route
        self._app = OpenTelemetryMiddleware(
            app, meter_provider=meter_provider, tracer_provider=tracer_provider
        )

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        status: list[int] = []

        def starting(code: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            status[:] = [int(code[:3]) if code[:3].isdigit() else 0]
            return start_response(code, headers, exc_info)

        def done() -> None:
            self.analytics.safely(environ, status[0] if status else 0, self._route)

        return _Recorded(self._app(environ, starting), done)


class _Recorded:
    """A response body that records its request once the server has sent it (``close``)."""

    def __init__(self, body: Iterable[bytes], done: Callable[[], None]) -> None:
        self._body = body
        self._done = done

    def __iter__(self) -> Any:
        return iter(self._body)

    def close(self) -> None:
        """Close the app's body, then record the request."""
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._done()


def environ_route(environ: dict[str, Any]) -> str | None:
    """Return the route an adapter (:func:`flask_routes`, :class:`FalconRoutes`) left."""
    route = environ.get(ROUTE_KEY)
    return None if route is None else str(route)


def flask_routes(app: Any) -> None:
    """Have a Flask app leave each request's rule (``/reports/<int:id>``) for the analytics.

    A hook run before any other of the app's ``before_request`` functions: Flask matches the
    rule first, and empties the request out of the environ once it has answered.
    """
    from flask import request  # only under Flask

    def note_route() -> None:
        if request.url_rule is not None:
            request.environ[ROUTE_KEY] = request.url_rule.rule

    app.before_request_funcs.setdefault(None, []).insert(0, note_route)


class FalconRoutes:
    """A Falcon middleware component that leaves each request's URI template for the analytics.

    ``app = falcon.App(middleware=[FalconRoutes()])``, then ``UsageMiddleware(app, ...)``.
    """

    def process_resource(self, req: Any, resp: Any, resource: Any, params: Any) -> None:
        """Note the route Falcon matched (``req.uri_template``)."""
        req.env[ROUTE_KEY] = req.uri_template


class DjangoUsageMiddleware:
    """A Django middleware: the request's route (``resolver_match.route``) and analytics.

    Put ``"otel_panel_receiver.middleware.DjangoUsageMiddleware"`` in ``MIDDLEWARE``; it reads
    its options from the ``OTEL_PANEL_USAGE`` setting (a dict of :class:`Analytics` keyword
    arguments) and the global OpenTelemetry meter provider. For request durations, wrap the WSGI
    application in ``wsgi.py`` with OpenTelemetry's ``OpenTelemetryMiddleware`` as well.
    """

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        from django.conf import settings  # only under Django
        from opentelemetry.metrics import get_meter_provider

        options = dict(getattr(settings, "OTEL_PANEL_USAGE", {}))
        provider = options.pop("meter_provider", None) or get_meter_provider()
        self.analytics = Analytics(provider, **options)
        self._get_response = get_response

    def __call__(self, request: Any) -> Any:
        response = self._get_response(request)
        match = getattr(request, "resolver_match", None)
        pattern = getattr(match, "route", None) if match is not None else None
        route = None if pattern is None else "/" + pattern  # Django's have no leading slash
        self.analytics.safely(request.META, response.status_code, lambda _: route)
        return response
