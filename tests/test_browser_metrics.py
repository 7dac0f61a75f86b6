"""Browser metrics through falcon.testing: the schema, per-point errors, aggregation, bounds.

What ``/metrics`` shows is read back with prometheus_client's own parser, and every expected
figure is computed here from what was sent (bucket counts by comparing each value with each
bound), not by the receiver's code.
"""

from __future__ import annotations

import gc
import io
import json
import random
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import falcon.testing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from prometheus_client.parser import text_string_to_metric_families

from otel_panel_receiver.app import ReceiverApp, create_app
from otel_panel_receiver.browser import (
    MAX_POINTS,
    BrowserMetrics,
    load_schema,
    parse_schema,
    schema_setting,
)
from otel_panel_receiver.config import Settings
from otel_panel_receiver.errors import ConfigError
from otel_panel_receiver.events import MAX_LISTED

if TYPE_CHECKING:
    from tests.conftest import AppFactory

PATH = "/v1/metrics"
EXAMPLE = Path(__file__).parent.parent / "examples" / "browser-metrics" / "schema.json"
BOUNDS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)  # the example schema's frontend_page_load buckets
SCHEMA: dict[str, Any] = {
    "metrics": {
        "clicks": {"type": "counter", "help": "Clicks.", "labels": {"button": ["a", "b"]}},
        "load": {
            "type": "histogram",
            "help": "Load time.",
            "unit": "s",
            "buckets": [0.5, 1, 2],
            "labels": {"page": ["home", "search"]},
        },
        "tabs": {"type": "gauge", "help": "Open tabs.", "ttl": 0.3, "labels": {"page": ["home"]}},
    }
}


class Api:
    """A receiver app with a schema, and a client of its ``/v1/metrics``."""

    def __init__(self, app: ReceiverApp) -> None:
        self.app = app
        self.client = falcon.testing.TestClient(app)

    def post(self, *points: Any, **kw: Any) -> falcon.testing.Result:
        body = json.dumps({"metrics": list(points)}).encode()
        return self.client.simulate_post(PATH, body=body, **kw)

    def families(self) -> dict[str, Any]:
        text = self.client.simulate_get("/metrics").text
        return {family.name: family for family in text_string_to_metric_families(text)}

    def samples(self, family: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        found = self.families().get(family)
        if found is None:
            return {}
        return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in found.samples}


def write_schema(tmp_path: Path, doc: Any) -> str:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(doc))
    return str(path)


@pytest.fixture
def api(make_app: AppFactory, tmp_path: Path) -> Callable[..., Api]:
    def make(doc: Any = SCHEMA, **options: Any) -> Api:
        if doc is not None:
            options["browser_metrics_schema"] = write_schema(tmp_path, doc)
        options.setdefault("new_series_delay", 0)
        return Api(make_app(Settings(**options), stream=io.StringIO()))

    return make


def test_without_a_schema_every_name_is_unknown_and_refused(api: Callable[..., Api]) -> None:
    a = api(None)
    r = a.post({"name": "clicks"}, {"name": "x" * 300})
    assert r.status_code == 400
    assert r.json["error"] == 'unknown metric "clicks": no browser metrics schema is loaded'
    assert r.json["path"] == "metrics[0].name"
    assert r.json["rejected"] == 2 and r.json["accepted"] == 0
    assert len(r.json["errors"][1]["error"]) < 120  # a long name is cut in the answer
    requests = a.samples("grafana_analytics_browser_metric_requests")
    assert requests == {
        ("grafana_analytics_browser_metric_requests_total", (("outcome", "malformed"),)): 1.0
    }


def test_counters_add_across_points_and_batches(api: Callable[..., Api]) -> None:
    a = api()
    rng = random.Random(3)
    sent: dict[str, float] = {"a": 0.0, "b": 0.0}
    for _ in range(40):
        points = []
        for _ in range(rng.randint(1, 9)):
            button, value = rng.choice("ab"), rng.choice([1, 2, 0.5, None])
            point: dict[str, Any] = {"name": "clicks", "labels": {"button": button}}
            if value is not None:
                point["value"] = value
            points.append(point)
            sent[button] += 1.0 if value is None else value
        assert a.post(*points).status_code == 202
    assert a.samples("clicks") == {("clicks_total", (("button", b),)): n for b, n in sent.items()}


def test_histograms_count_each_value_in_its_buckets(api: Callable[..., Api]) -> None:
    a = api()
    rng = random.Random(5)
    values = [rng.choice([0.5, 1, 2, 2.0001]) if i % 4 == 0 else rng.uniform(0, 3)
              for i in range(300)]  # fmt: skip  # bounds themselves included: le is <=
    for start in range(0, len(values), 50):
        points = [{"name": "load", "labels": {"page": "home"}, "value": v}
                  for v in values[start : start + 50]]  # fmt: skip
        assert a.post(*points).status_code == 202
    samples = a.samples("load_seconds")
    page = (("page", "home"),)
    for le in ("0.5", "1.0", "2.0", "+Inf"):
        bound = float(le)
        want = sum(1 for v in values if v <= bound)
        assert samples["load_seconds_bucket", (("le", le), *page)] == want, le
    assert samples["load_seconds_count", page] == len(values)
    assert samples["load_seconds_sum", page] == pytest.approx(sum(values))


def test_a_gauge_takes_the_latest_value_and_expires_after_its_ttl(api: Callable[..., Api]) -> None:
    a = api()
    a.post({"name": "tabs", "labels": {"page": "home"}, "value": 3})
    a.post({"name": "tabs", "labels": {"page": "home"}, "value": 2})
    assert a.samples("tabs") == {("tabs", (("page", "home"),)): 2.0}
    time.sleep(0.5)  # the schema's ttl is 0.3 s
    assert a.samples("tabs") == {}
    a.post({"name": "tabs", "labels": {"page": "home"}, "value": 7})
    assert a.samples("tabs") == {("tabs", (("page", "home"),)): 7.0}


def test_each_point_outside_the_schema_is_named_and_the_rest_recorded(
    api: Callable[..., Api],
) -> None:
    a = api()
    r = a.post(
        {"name": "clicks", "labels": {"button": "a"}},
        {"name": "nope"},
        {"name": "clicks", "labels": {"colour": "red"}},
        {"name": "clicks", "labels": {"button": "z"}},
        {"name": "clicks", "value": -1},
        {"name": "load", "labels": {"page": "home"}},
        {"name": "load", "value": "fast"},
        {"name": "clicks", "labels": {"button": 1}},
        "clicks",
        {"labels": {}},
        {"name": "tabs", "labels": {"page": "home"}, "value": 1},
    )
    assert r.status_code == 202
    assert r.json["accepted"] == 2 and r.json["rejected"] == 9
    errors = {e["index"]: (e["path"], e["error"]) for e in r.json["errors"]}
    assert errors[1] == (
        "metrics[1].name",
        'unknown metric "nope": not in the browser metrics schema',
    )
    assert errors[2] == (
        "metrics[2].labels.colour",
        '"colour" is not a label of clicks (its labels: button)',
    )
    assert errors[3] == (
        "metrics[3].labels.button",
        '"z" is not an allowed value of clicks\'s label button',
    )
    assert errors[4] == ("metrics[4].value", "value must be a finite number and at least 0")
    assert errors[5] == ("metrics[5].value", "value is missing: load is a histogram")
    assert errors[6][0] == "metrics[6].value" and "number" in errors[6][1]
    assert errors[7] == ("metrics[7].labels.button", "a label value must be a string, got 1")
    assert errors[8][0] == "metrics[8]" and "object" in errors[8][1]
    assert errors[9] == ("metrics[9].name", "name is missing: expected a metric's name")
    assert a.samples("clicks") == {("clicks_total", (("button", "a"),)): 1.0}
    rejected = a.samples("grafana_analytics_browser_metric_points_rejected")
    assert list(rejected.values()) == [9.0]


@pytest.mark.parametrize(
    ("body", "message", "path"),
    [
        (b"", "body is empty", ""),
        (b"[]", "expected object", ""),
        (b'{"metrics": {}}', "expected array", "metrics"),
        (b"{}", "metrics is missing", "metrics"),
        (b'{"metrics": [', "not valid json", ""),
    ],
)
def test_a_bad_envelope_is_a_400_naming_it(
    api: Callable[..., Api], body: bytes, message: str, path: str
) -> None:
    r = api().client.simulate_post(PATH, body=body)
    assert r.status_code == 400
    assert message in r.json["error"].lower() and r.json["path"] == path


def test_a_batch_is_bounded_and_lists_its_first_errors_only(api: Callable[..., Api]) -> None:
    a = api()
    assert a.post(*[{"name": "clicks"}] * MAX_POINTS).status_code == 202
    r = a.post(*[{"name": "clicks"}] * (MAX_POINTS + 1))
    assert r.status_code == 400 and r.json["path"] == "metrics"
    r = a.post(*[{"name": "junk"}] * 100)
    assert r.status_code == 400 and len(r.json["errors"]) == MAX_LISTED
    assert a.samples("clicks") == {("clicks_total", ()): float(MAX_POINTS)}


def test_a_flood_of_random_names_and_values_grows_nothing(api: Callable[..., Api]) -> None:
    a = api()
    rng = random.Random(11)

    def flood(n: int) -> None:
        for _ in range(n):
            points = [
                {"name": f"m{rng.getrandbits(64):x}", "value": 1}
                if rng.random() < 0.5
                else {"name": "clicks", "labels": {"button": f"{rng.getrandbits(64):x}"}}
                for _ in range(200)
            ]
            assert a.post(*points).status_code == 400

    flood(20)  # warm up every cache
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        flood(100)  # 20,000 random names and values
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 256 * 1024, grown
    names = set(a.families())
    assert not any(name.startswith("m") for name in names)


def test_new_histogram_series_are_held_at_zero_like_counters(api: Callable[..., Api]) -> None:
    a = api(new_series_delay=60)
    a.post(*[{"name": "load", "labels": {"page": "home"}, "value": 0.7}] * 3)
    samples = a.samples("load_seconds")
    assert samples["load_seconds_count", (("page", "home"),)] == 0.0
    assert samples["load_seconds_bucket", (("le", "+Inf"), ("page", "home"))] == 0.0


def test_the_preflight_is_granted_to_an_allowed_origin(api: Callable[..., Api]) -> None:
    a = api(allowed_origins="https://app.example")
    origin = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    r = a.client.simulate_options(PATH, headers=origin)
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    r = a.post({"name": "clicks"}, headers={"Origin": "https://app.example"})
    assert (
        r.status_code == 202 and r.headers["Access-Control-Allow-Origin"] == "https://app.example"
    )
    r = a.post({"name": "clicks"}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403


def test_a_token_guards_the_endpoint_as_it_guards_write(
    api: Callable[..., Api], tmp_path: Path
) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cret\n")
    a = api(auth="token", auth_token_file=str(secret))
    assert a.post({"name": "clicks"}).status_code == 401
    assert a.post({"name": "clicks"}, query_string="token=s3cret").status_code == 202


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = write_schema(tmp_path_factory.mktemp("schema"), SCHEMA)
    app = create_app(Settings(browser_metrics_schema=path), stream=io.StringIO())
    yield Api(app)
    app.close()


@settings(max_examples=150, deadline=None)
@given(body=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_body_gets_a_202_or_a_400_never_a_5xx(shared: Api, body: bytes) -> None:
    assert shared.client.simulate_post(PATH, body=body).status_code in (202, 400)


point = st.fixed_dictionaries(
    {"name": st.sampled_from(["clicks", "load", "tabs", "other"])},
    optional={
        "labels": st.dictionaries(st.sampled_from(["button", "page", "x"]),
                                  st.sampled_from(["a", "home", "search", "?"]) | st.integers()),
        "value": st.floats(allow_nan=False, allow_infinity=False) | st.integers() | st.text(),
    },
)  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(points=st.lists(point, max_size=20))
def test_any_batch_of_points_is_answered_per_point(shared: Api, points: list[Any]) -> None:
    r = shared.post(*points)
    assert r.status_code in (202, 400)
    assert r.json["accepted"] + r.json["rejected"] == len(points)


# -- the schema ---------------------------------------------------------------------------


def test_the_example_schema_loads() -> None:
    schema = load_schema(str(EXAMPLE))
    load = schema.metrics["frontend_page_load"]
    assert load.kind == "histogram" and load.bounds == BOUNDS
    assert schema.metrics["frontend_open_tabs"].ttl == 120
    assert schema.metrics["frontend_errors"].labels["kind"] == {"error", "unhandledrejection"}


def metric(**doc: Any) -> bytes:
    return json.dumps({"metrics": {"m": {"type": "counter", **doc}}}).encode()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (b"{", "not a JSON document"),
        (
            b'{"metrics": {"m": {"type": "summary"}}}',
            "metrics.m.type: invalid enum value 'summary'",
        ),
        (
            b'{"metrics": {"m": {"type": "counter", "helps": ""}}}',
            "metrics.m: object contains unknown field helps",
        ),
        (b'{"metrics": []}', "metrics: expected object"),
        (b'{"metrics": {"9m": {"type": "counter"}}}', "metrics.9m: a metric name"),
        (b'{"metrics": {"grafana_analytics_x": {"type": "counter"}}}', "receiver's own"),
        (metric(labels={"le": ["1"]}), "metrics.m.labels.le: a label name"),
        (metric(labels={"__x": ["1"]}), "a label name"),
        (metric(labels={"a": []}), "metrics.m.labels.a: list between 1"),
        (metric(labels={"a": [""]}), "a value is 1 to"),
        (metric(buckets=[1, 2]), "buckets are given for histograms"),
        (metric(type="histogram"), "buckets are given for histograms"),
        (metric(type="histogram", buckets=[2, 1]), "metrics.m.buckets: bounds must increase"),
        (metric(type="histogram", buckets=[]), "between 1 and"),
        (metric(ttl=5), "ttl is given for gauges only"),
        (metric(type="gauge", ttl=0), "metrics.m.ttl"),
        (
            b'{"metrics": {"a": {"type": "gauge", "unit": "s"}, "a_seconds": {"type": "gauge"}}}',
            "exported as a_seconds",
        ),
    ],
)
def test_a_bad_schema_is_refused_naming_what_and_where(text: bytes, fragment: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_schema(text)
    assert fragment in str(caught.value)


def test_a_bad_schema_file_stops_the_service_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--browser-metrics-schema: .*missing\.json"):
        schema_setting(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_bytes(metric(ttl=5))
    with pytest.raises(ConfigError, match=r"bad\.json: metrics\.m: ttl is given for gauges"):
        create_app(Settings(browser_metrics_schema=str(bad)), stream=io.StringIO())
    assert schema_setting("").metrics == {}


# -- the SDK's instruments (what OTLP exports) ---------------------------------------------


def test_the_sdk_instruments_carry_the_same_points() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    api = BrowserMetrics(parse_schema(json.dumps(SCHEMA).encode()), provider, sdk=True)
    values = [0.1, 0.5, 0.9, 1.5, 3.0, 3.0]
    doc = {"metrics": [{"name": "load", "labels": {"page": "search"}, "value": v} for v in values]
           + [{"name": "clicks", "labels": {"button": "b"}, "value": 2},
              {"name": "tabs", "labels": {"page": "home"}, "value": 4}]}  # fmt: skip
    assert api.batch(json.dumps(doc).encode()).accepted == len(values) + 2
    data = reader.get_metrics_data()
    assert data is not None
    got = {m.name: m.data.data_points for rm in data.resource_metrics
           for sm in rm.scope_metrics for m in sm.metrics}  # fmt: skip
    (hist,) = got["load"]
    assert isinstance(hist, HistogramDataPoint)
    assert list(hist.explicit_bounds) == [0.5, 1, 2]
    edges = [(-1, 0.5), (0.5, 1), (1, 2), (2, 99)]
    assert list(hist.bucket_counts) == [sum(1 for v in values if lo < v <= hi) for lo, hi in edges]
    assert dict(hist.attributes or {}) == {"page": "search"}
    assert [p.value for p in got["clicks"]] == [2]  # type: ignore[union-attr]
    assert [p.value for p in got["tabs"]] == [4]  # type: ignore[union-attr]
    provider.shutdown()


def test_in_memory_telemetry_shows_browser_metrics_in_metrics_and_its_reader(
    tmp_path: Path,
) -> None:
    from otel_panel_receiver.testing import in_memory_telemetry

    settings = Settings(new_series_delay=0, browser_metrics_schema=write_schema(tmp_path, SCHEMA))
    telemetry = in_memory_telemetry(settings)
    app = create_app(settings, telemetry=telemetry, stream=io.StringIO())
    try:
        a = Api(app)
        a.post(
            *[{"name": "load", "labels": {"page": "home"}, "value": 0.7}] * 2, {"name": "clicks"}
        )
        telemetry.force_flush()  # an SDK collection: the table must not count them again
        assert a.samples("load_seconds")["load_seconds_count", (("page", "home"),)] == 2
        assert a.samples("clicks") == {("clicks_total", ()): 1.0}
        assert telemetry.points("clicks") == [({}, 1)]
    finally:
        app.close()


def test_the_route_and_its_preflight_follow_the_path_prefix(api: Callable[..., Api]) -> None:
    a = api(path_prefix="/analytics", allowed_origins="https://app.example")
    body = json.dumps({"metrics": [{"name": "clicks"}]}).encode()
    origin = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    assert a.client.simulate_options("/analytics/v1/metrics", headers=origin).status_code == 204
    assert a.client.simulate_post("/analytics/v1/metrics", body=body).status_code == 202
    assert a.client.simulate_post(PATH, body=body).status_code == 404
    text = a.client.simulate_get("/analytics/metrics").text
    assert "clicks_total 1.0" in text
