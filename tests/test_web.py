"""The Falcon app through falcon.testing: /write, /metrics, /healthz, limits and 4xx bodies."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import falcon.testing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_panel_receiver.app import ReceiverApp, create_app
from otel_panel_receiver.config import Settings
from otel_panel_receiver.testing import SAMPLE_PAYLOADS, sample_payload

if TYPE_CHECKING:
    from tests.conftest import AppFactory

LABELS = (
    'dashboard_name="Service Overview",dashboard_timezone="browser",dashboard_uid="ZQZXRMXMk",'
    'grafana_env="production",grafana_host="grafana.example.com",user_locale="en-US",'
    'user_login="jdoe",user_name="Jane Doe",user_role="editor",user_theme="dark",'
    'user_timezone="browser"'
)
# Upstream's exposition for the start/heartbeat/end samples (docs/protocol.md, "Its metrics"),
# without the trailing colon in grafana_host ("Kept and fixed"); prometheus_client writes
# floats as 1.0.
EXPECTED_FAMILIES = f"""\
# HELP grafana_analytics_sessions_total Number of sessions.
# TYPE grafana_analytics_sessions_total counter
grafana_analytics_sessions_total{{{LABELS}}} 1.0
# HELP grafana_analytics_sessions_duration_seconds_total Duration of sessions.
# TYPE grafana_analytics_sessions_duration_seconds_total counter
grafana_analytics_sessions_duration_seconds_total{{{LABELS}}} 135.0
# HELP grafana_analytics_up Was the last scrape successful.
# TYPE grafana_analytics_up gauge
grafana_analytics_up 1.0
"""
# Upstream's logfmt line for the start sample (docs/protocol.md, "Its log line"), host without
# the trailing colon.
EXPECTED_START_LINE = (
    'level=info msg="Received session data" uuid=3f0c6a9e-2b7d-4c1e-9a51-7d2e4b8f6c10 '
    "type=start has_focus=true host=https://grafana.example.com "
    'build="(commit=fdcf0a2a11, edition=Open Source, env=production, version=8.1.5)" '
    'license="(state=, expiry=0, license=false)" dashboard_name="Service Overview" '
    "dashboard_uid=ZQZXRMXMk dashboard_timezone=browser user_id=7 user_login=jdoe "
    'user_email=jdoe@example.com user_name="Jane Doe" user_theme=dark user_role=editor '
    "user_locale=en-US user_timezone=browser time_from=1618782134 time_to=1618803734 "
    "time_from_raw=now-6h time_to_raw=now timeorigin=1618803731 time=1618803734 "
    'env="(label=Environment, type=custom, multi=false, count=1, values=[prod])" '
    'instance="(label=Instance, type=query, multi=true, count=2, '
    'values=[web-1:9100,web-2:9100])"\n'
)
#: Content types a /write may arrive with; the panel's no-cors fetch sends the first.
CONTENT_TYPES = ("text/plain;charset=UTF-8", "application/json", "application/octet-stream")


class Harness:
    """A receiver app whose log lines go to a string, and a client of it."""

    def __init__(self, app: ReceiverApp, out: io.StringIO) -> None:
        self.app, self.out = app, out
        self.client = falcon.testing.TestClient(app)

    def write(self, body: bytes) -> falcon.testing.Result:
        """POST ``body`` to /write as the panel does."""
        headers = {"Content-Type": "text/plain;charset=UTF-8"}
        return self.client.simulate_post("/write", body=body, headers=headers)

    def metrics(self, accept: str = "") -> str:
        """Return the text of /metrics."""
        return self.client.simulate_get("/metrics", headers={"Accept": accept}).text

    def families(self) -> list[str]:
        """Return the sessions and up metric families, each as its text block, sorted."""
        wanted = tuple(
            f"# HELP {w}" for w in ("grafana_analytics_sessions", "grafana_analytics_up")
        )
        return sorted(b for b in blocks(self.metrics()) if b.startswith(wanted))

    def write_chunked(self, body: bytes) -> tuple[str, bytes]:
        """POST without Content-Length, as a chunked request arrives at a WSGI app."""
        environ = falcon.testing.create_environ(method="POST", path="/write", body=body)
        del environ["CONTENT_LENGTH"]
        environ["HTTP_TRANSFER_ENCODING"] = "chunked"
        environ["wsgi.input"] = io.BytesIO(body)
        status: list[str] = []

        def start_response(
            code: str, headers: list[tuple[str, str]], exc_info: object = None
        ) -> Callable[[bytes], object]:
            status.append(code)
            return lambda data: None  # the app returns its body; it never calls write()

        chunks = self.app(environ, start_response)
        return status[0], b"".join(chunks)


def blocks(text: str) -> list[str]:
    """Split an exposition into its metric families."""
    return re.split(r"(?=# HELP )", text)


@pytest.fixture
def harness(make_app: AppFactory) -> Callable[[Settings], Harness]:
    """Return a maker of harnesses for given settings (their apps are closed after the test)."""

    def make(settings: Settings) -> Harness:
        out = io.StringIO()
        return Harness(make_app(settings, stream=out), out)

    return make


@pytest.fixture
def h(harness: Callable[[Settings], Harness]) -> Harness:
    """Return a harness with the default settings."""
    return harness(Settings())


@pytest.mark.parametrize("ctype", CONTENT_TYPES)
@pytest.mark.parametrize("name", SAMPLE_PAYLOADS)
def test_every_sample_payload_is_answered_201_with_an_empty_body_whatever_the_content_type(
    h: Harness, name: str, ctype: str
) -> None:
    r = h.client.simulate_post("/write", body=sample_payload(name), headers={"Content-Type": ctype})
    assert (r.status_code, r.content) == (201, b"")


def test_start_heartbeat_end_give_upstreams_exposition_without_the_trailing_colon(
    harness: Callable[[Settings], Harness],
) -> None:
    h = harness(Settings(new_series_delay=0))  # every value at once, as upstream shows it
    for name in ("v2-start.json", "v2-heartbeat.json", "v2-end.json"):
        assert h.write(sample_payload(name)).status_code == 201
    assert h.families() == sorted(blocks(EXPECTED_FAMILIES)[1:])


def test_metrics_has_no_target_info_or_scope_labels(h: Harness) -> None:
    h.write(sample_payload("v2-start.json"))
    text = h.metrics()
    assert "target_info" not in text and "otel_scope" not in text


def test_metrics_has_a_build_info_series_with_the_version(h: Harness) -> None:
    assert re.search(r'^grafana_analytics_build_info\{.*version="[^"]+"\} 1\.0$', h.metrics(), re.M)


def test_metrics_answers_openmetrics_when_the_accept_header_asks_for_it(h: Harness) -> None:
    h.write(sample_payload("v2-start.json"))
    r = h.client.simulate_get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.endswith("# EOF\n")
    assert "grafana_analytics_sessions_total{" in r.text


def test_each_payload_logs_the_upstream_line(h: Harness) -> None:
    h.write(sample_payload("v2-start.json"))
    assert h.out.getvalue() == EXPECTED_START_LINE


def test_disable_user_metrics_removes_user_labels(harness: Callable[[Settings], Harness]) -> None:
    h = harness(Settings(disable_user_metrics=True))
    h.write(sample_payload("v2-start.json"))
    assert "user_login" not in h.metrics() and "user_name" not in h.metrics()
    assert "grafana_analytics_sessions_total{" in h.metrics()


def test_json_log_format_prints_each_payload_as_one_json_object_with_level_and_msg(
    harness: Callable[[Settings], Harness],
) -> None:
    h = harness(Settings(log_format="json"))
    h.write(sample_payload("v2-start.json"))
    line = json.loads(h.out.getvalue())
    assert (line["level"], line["msg"], line["user_login"]) == (
        "info", "Received session data", "jdoe",
    )  # fmt: skip


def test_raw_log_is_one_json_object_with_the_payload_under_data(
    harness: Callable[[Settings], Harness],
) -> None:
    h = harness(Settings(log_raw=True))
    h.write(sample_payload("v2-start.json"))
    line = json.loads(h.out.getvalue())
    assert set(line) == {"level", "msg", "data"}
    assert line["data"]["dashboard"] == {"name": "Service Overview", "uid": "ZQZXRMXMk"}


def test_disable_session_log_prints_nothing(harness: Callable[[Settings], Harness]) -> None:
    h = harness(Settings(disable_session_log=True))
    h.write(sample_payload("v2-start.json"))
    assert h.out.getvalue() == ""


def test_bad_payload_gets_400_with_error_and_path(h: Harness) -> None:
    r = h.write(b'{"uuid": "u", "type": "start", "time": "soon"}')
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/json"
    assert r.json == {"error": "expected integer, got string", "path": "time"}
    assert h.out.getvalue() == "" and "grafana_analytics_sessions_total{" not in h.metrics()


def test_body_over_the_limit_gets_413_by_content_length(
    harness: Callable[[Settings], Harness],
) -> None:
    h = harness(Settings(max_body_size=1000))
    r = h.write(b" " * 1001)
    assert r.status_code == 413
    assert r.json["error"] == "body is 1001 bytes, larger than the limit of 1000 bytes"


def test_body_at_the_limit_is_read(h: Harness) -> None:
    body = sample_payload("v2-start.json")
    padded = body + b" " * (65_536 - len(body))
    assert h.write(padded).status_code == 201


def test_chunked_body_over_the_limit_gets_413(harness: Callable[[Settings], Harness]) -> None:
    h = harness(Settings(max_body_size=1000))
    status, body = h.write_chunked(b" " * 5000)
    assert status.startswith("413")
    assert json.loads(body)["error"].startswith("body is more than 1000 bytes")


def test_chunked_body_within_the_limit_is_accepted(h: Harness) -> None:
    status, body = h.write_chunked(sample_payload("v2-start.json"))
    assert (status, body) == ("201 Created", b"")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/write", 405), ("PUT", "/write", 405), ("GET", "/nope", 404), ("POST", "/", 404)],
)
def test_other_routes_and_methods_get_a_json_4xx(
    h: Harness, method: str, path: str, status: int
) -> None:
    r = h.client.simulate_request(method, path)
    assert r.status_code == status
    assert set(r.json) == {"error", "path"} and path in r.json["error"]


def test_healthz_answers_200_ok(h: Harness) -> None:
    r = h.client.simulate_get("/healthz")
    assert (r.status_code, r.text) == (200, "ok\n")


def test_path_prefix_moves_every_route(harness: Callable[[Settings], Harness]) -> None:
    h = harness(Settings(path_prefix="/analytics"))
    r = h.client.simulate_post("/analytics/write", body=sample_payload("v2-start.json"))
    assert r.status_code == 201
    assert "sessions_total{" in h.client.simulate_get("/analytics/metrics").text
    assert h.client.simulate_get("/analytics/healthz").status_code == 200
    assert h.client.simulate_post("/write", body=sample_payload("v2-start.json")).status_code == 404


json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200)
@given(
    body=st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.dictionaries(
        st.sampled_from(["uuid", "type", "time", "user", "variables", "options", "host.port"]),
        json_values,
    ).map(lambda v: json.dumps(v).encode()),
    ctype=st.sampled_from(["text/plain;charset=UTF-8", "application/json", "", "x/\x7f"]),
)
def test_no_body_gets_a_5xx_and_every_4xx_names_its_problem(body: bytes, ctype: str) -> None:
    # A fresh app per example (about a millisecond to build): no example sees another's state.
    app = create_app(Settings(), environ={}, stream=io.StringIO())
    try:
        r = falcon.testing.TestClient(app).simulate_post(
            "/write", body=body, headers={"Content-Type": ctype}
        )
    finally:
        app.close()
    assert r.status_code in (201, 400, 413)
    if r.status_code != 201:
        assert set(r.json) == {"error", "path"} and r.json["error"]
