"""Request analytics for any WSGI app: the Flask and Django examples driven with real agents.

The expected reading of each User-Agent is written here by hand (what a person reading the
string says it is), not taken from the parser; the expected counts come from what the test
sent, request by request.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import falcon
import falcon.testing
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.test import Client

from otel_panel_receiver.middleware import (
    UNMATCHED,
    Analytics,
    FalconRoutes,
    UsageMiddleware,
    classify_agent,
    classify_referrer,
)

# User-Agent -> (kind, browser, os, device), as a person reads it.
AGENTS: dict[str, tuple[str, str, str, str]] = {
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36": ("browser", "Chrome", "Windows", "desktop"),
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0": (
        "browser", "Firefox", "Linux", "desktop"),
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.2 Safari/605.1.15": ("browser", "Safari", "Mac OS X", "desktop"),
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.2 Mobile/15E148 Safari/604.1": ("browser", "Mobile Safari", "iOS", "mobile"),
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.6099.144 Mobile Safari/537.36": ("browser", "Chrome Mobile", "Android", "mobile"),
    "Mozilla/5.0 (iPad; CPU OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.2 Mobile/15E148 Safari/604.1": ("browser", "Mobile Safari", "iOS", "tablet"),
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91": ("browser", "Edge", "Windows", "desktop"),
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)": (
        "bot", "Other", "Other", "bot"),
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)": (
        "bot", "Other", "Other", "bot"),
    "curl/8.5.0": ("client", "Other", "Other", "other"),
    "python-requests/2.32.3": ("client", "Other", "Other", "other"),
    "Go-http-client/1.1": ("client", "Other", "Other", "other"),
    "": ("unknown", "Other", "Other", "other"),
}  # fmt: skip
REFERRERS = {
    "": "direct",
    "https://app.example.com/reports/1": "internal",
    "https://www.google.com/": "search",
    "https://duckduckgo.com/?q=reports": "search",
    "https://github.com/org/repo/issues/1": "github.com",
    "https://gist.github.com/x": "github.com",
    "https://news.example.org/story": "other",
    "not a url at all": "other",
}
# (method, path) -> (route template, status)
PATHS = {
    ("GET", "/"): ("/", 200),
    ("GET", "/reports/7"): ("/reports/<int:report_id>", 200),
    ("GET", "/reports/12"): ("/reports/<int:report_id>", 200),
    ("POST", "/reports"): ("/reports", 201),
    ("GET", "/no/such/page"): (UNMATCHED, 404),
    ("GET", "/reports/not-a-number"): (UNMATCHED, 404),
}
METRIC = "web_requests_by_{}_total"


@pytest.mark.parametrize(("agent", "reading"), AGENTS.items(), ids=lambda v: str(v)[:30])
def test_each_agent_is_read_as_a_person_reads_it(
    agent: str, reading: tuple[str, str, str, str]
) -> None:
    got = classify_agent(agent)
    assert (got.kind, got.browser, got.os, got.device) == reading


@pytest.mark.parametrize(("referer", "expected"), REFERRERS.items())
def test_each_referrer_is_reduced_to_a_class(referer: str, expected: str) -> None:
    assert classify_referrer(referer, "app.example.com:443", allowed=("github.com",)) == expected


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Return the samples named ``name`` of an exposition, by their sorted labels."""
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def by(text: str, dimension: str) -> dict[str, float]:
    """Return one counter of the middleware by its single label's value."""
    return {labels[0][1]: v for labels, v in samples(text, METRIC.format(dimension)).items()}


@pytest.fixture
def flask_client() -> Iterator[Client]:
    from examples import flask_app

    app, provider = flask_app.build(trusted_proxies="10.0.0.0/8")
    yield Client(app)
    provider.shutdown()


def test_a_flask_app_driven_with_real_agents_counts_what_was_sent(flask_client: Client) -> None:
    rng = random.Random(11)
    addresses = [f"198.51.100.{n}" for n in range(1, 120)]
    routes: Counter[tuple[str, str, str]] = Counter()
    kinds: Counter[str] = Counter()
    devices: Counter[str] = Counter()
    browsers: Counter[str] = Counter()
    oses: Counter[str] = Counter()
    referrers: Counter[str] = Counter()
    visitors: set[tuple[str, str]] = set()
    for _ in range(3000):
        agent = rng.choice(list(AGENTS))
        referer = rng.choice(list(REFERRERS))
        method, path = rng.choice(list(PATHS))
        address = rng.choice(addresses)
        headers = {"User-Agent": agent, "Referer": referer, "Host": "app.example.com"}
        response = flask_client.open(
            path, method=method, headers=headers, environ_base={"REMOTE_ADDR": address},
            buffered=True,
        )  # fmt: skip
        route, status = PATHS[method, path]
        assert response.status_code == status
        kind, browser, os, device = AGENTS[agent]
        routes[route, method, f"{status // 100}xx"] += 1
        kinds[kind] += 1
        devices[device] += 1
        if kind == "browser":
            browsers[browser] += 1
            oses[os] += 1
            referrers[REFERRERS[referer]] += 1
            visitors.add((address, agent))
    text = flask_client.get("/metrics").get_data(as_text=True)
    got_routes = {
        (d["http_route"], d["http_request_method"], d["status_class"]): v
        for labels, v in samples(text, METRIC.format("route")).items()
        for d in (dict(labels),)
        if d["http_route"] != "/metrics"
    }
    assert got_routes == routes
    assert by(text, "agent") == {k: n for k, n in kinds.items()}
    assert by(text, "device") == devices
    assert by(text, "browser") == browsers
    assert by(text, "os") == oses
    assert by(text, "referrer") == referrers
    (total,) = samples(text, "web_visitors_total").values()
    assert total == len(visitors)
    # The durations and counts of the HTTP conventions, from OpenTelemetry's instrumentation
    # (the stable names with OTEL_SEMCONV_STABILITY_OPT_IN=http, the older ones by default).
    counted = sum(
        v
        for name in ("http_server_request_duration_seconds_count",
                     "http_server_duration_milliseconds_count")
        for v in samples(text, name).values()
    )  # fmt: skip
    assert counted == 3000


def test_label_values_stay_within_the_documented_sets(flask_client: Client) -> None:
    rng = random.Random(5)
    for _ in range(500):  # odd agents, referrers, paths and methods
        junk = "".join(rng.choice("abcXYZ/;() .0123") for _ in range(rng.randint(0, 60)))
        flask_client.open(
            f"/{junk.replace(' ', '')}", method=rng.choice(["GET", "BREW", "PATCH"]),
            headers={"User-Agent": f"Mozilla/5.0 {junk}", "Referer": f"https://{junk}.test/"},
            buffered=True,
        )  # fmt: skip
    text = flask_client.get("/metrics").get_data(as_text=True)
    assert set(by(text, "agent")) <= {"browser", "bot", "client", "unknown"}
    assert set(by(text, "device")) <= {"desktop", "mobile", "tablet", "bot", "other"}
    assert set(by(text, "referrer")) <= {
        "direct", "internal", "search", "other", "github.com", "grafana.com",
    }  # fmt: skip
    routes = [dict(labels) for labels in samples(text, METRIC.format("route"))]
    assert {r["http_route"] for r in routes} <= {"/", "/reports/<int:report_id>", "/reports",
                                                 "/metrics", UNMATCHED}  # fmt: skip
    assert {r["http_request_method"] for r in routes} <= {"GET", "PATCH", "_OTHER"}


def test_a_100_kb_agent_and_referrer_are_read_from_their_first_bytes_only(
    flask_client: Client,
) -> None:
    chrome = next(iter(AGENTS))  # Chrome on Windows
    huge = chrome + " (" + "a;" * 50_000 + ")"  # 100 KB: what a hostile client may send
    assert classify_agent(huge) == classify_agent(huge[:512])
    assert (classify_agent(huge).kind, classify_agent(huge).browser) == ("browser", "Chrome")
    assert classify_agent("(" * 100_000).kind in ("browser", "bot", "client", "unknown")
    for agent in (huge, "(" * 100_000, "Mozilla/5.0 " + "x" * 100_000):
        referer = "https://" + "a." * 50_000 + "com/"
        r = flask_client.get("/", headers={"User-Agent": agent, "Referer": referer}, buffered=True)
        assert r.status_code == 200
    text = flask_client.get("/metrics").get_data(as_text=True)
    assert set(by(text, "agent")) <= {"browser", "bot", "client", "unknown"}
    assert set(by(text, "referrer")) <= {"other", "direct"}
    assert max(len(value) for value in by(text, "browser")) <= 64


def test_behind_a_trusted_proxy_the_client_is_the_last_untrusted_hop(
    flask_client: Client,
) -> None:
    agent = next(iter(AGENTS))
    for spoof in ("1.1.1.1", "2.2.2.2", "3.3.3.3"):  # what a client writes first is not believed
        flask_client.get("/", headers={"User-Agent": agent,
                                       "X-Forwarded-For": f"{spoof}, 203.0.113.5, 10.0.0.2"},
                         environ_base={"REMOTE_ADDR": "10.0.0.1"}, buffered=True)  # fmt: skip
    # An untrusted peer's header is ignored: these are two visitors, by their own addresses.
    for peer in ("192.0.2.1", "192.0.2.2"):
        flask_client.get("/", headers={"User-Agent": agent, "X-Forwarded-For": "203.0.113.5"},
                         environ_base={"REMOTE_ADDR": peer}, buffered=True)  # fmt: skip
    text = flask_client.get("/metrics").get_data(as_text=True)
    assert samples(text, "web_visitors_total") == {(): 3.0}


ROUTES = "web.requests.by_route"


def points(reader: InMemoryMetricReader, name: str) -> dict[tuple[tuple[str, Any], ...], Any]:
    """Return the points of the SDK metric ``name`` now, by their sorted attributes."""
    data = reader.get_metrics_data()
    assert data is not None
    return {
        tuple(sorted((p.attributes or {}).items())): getattr(p, "value", None)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == name
        for p in m.data.data_points
    }


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_visitor_is_counted_once_a_day_and_again_the_next_day() -> None:
    reader = InMemoryMetricReader()
    clock = FakeClock()
    analytics = Analytics(MeterProvider(metric_readers=[reader]), clock=clock)
    agent = next(iter(AGENTS))
    environ = {"REQUEST_METHOD": "GET", "HTTP_USER_AGENT": agent, "REMOTE_ADDR": "192.0.2.9"}
    for _ in range(5):
        analytics.record(dict(environ), 200, "/")
    clock.now += 86_400
    for _ in range(5):
        analytics.record(dict(environ), 200, "/")
    assert points(reader, "web.visitors") == {(): 2}


def test_a_falcon_app_reports_its_uri_templates() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])

    class Item:
        def on_get(self, req: falcon.Request, resp: falcon.Response, item_id: int) -> None:
            resp.text = "item"

    app: falcon.App[Any, Any] = falcon.App(middleware=[FalconRoutes()])
    app.add_route("/items/{item_id:int}", Item())
    client = Client(UsageMiddleware(app, provider))
    assert client.get("/items/4", buffered=True).status_code == 200
    assert client.get("/other", buffered=True).status_code == 404
    got = {dict(labels)["http.route"]: v for labels, v in points(reader, ROUTES).items()}
    assert got == {"/items/{item_id:int}": 1, UNMATCHED: 1}


def test_a_fault_of_the_analytics_is_logged_and_the_request_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(environ: dict[str, Any]) -> str:
        raise RuntimeError("route lookup broke")

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    client = Client(UsageMiddleware(app, MeterProvider(), route=broken))
    with caplog.at_level(logging.ERROR):
        response = client.get("/", buffered=True)
    assert (response.status_code, response.data) == (200, b"ok")
    assert "Request analytics failed" in caplog.text


def test_the_django_example_counts_routes_agents_and_visitors() -> None:
    from examples import django_app

    client = Client(django_app.application)
    chrome, googlebot = next(iter(AGENTS)), "Mozilla/5.0 (compatible; Googlebot/2.1)"
    for agent, path in [(chrome, "/"), (chrome, "/reports/3"), (googlebot, "/reports/4"),
                        (chrome, "/missing")]:  # fmt: skip
        client.get(path, headers={"User-Agent": agent}, buffered=True)
    text = client.get("/metrics").get_data(as_text=True)
    routes = {
        dict(labels)["http_route"]: v for labels, v in samples(text, METRIC.format("route")).items()
    }
    assert routes == {"/": 1, "/reports/<int:report_id>": 2, UNMATCHED: 1}
    assert by(text, "agent") == {"browser": 3, "bot": 1}
    assert samples(text, "web_visitors_total") == {(): 1.0}
