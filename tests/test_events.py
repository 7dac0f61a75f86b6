"""The event API through falcon.testing: batches, per-item errors, user links, privacy, bounds."""

from __future__ import annotations

import gc
import io
import json
import random
import re
import tracemalloc
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import falcon.testing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_panel_receiver.app import ReceiverApp, create_app
from otel_panel_receiver.config import Settings
from otel_panel_receiver.errors import StoreUnavailable
from otel_panel_receiver.events import MAX_EVENTS, MAX_LISTED, MAX_PROPS, MAX_VALUE
from otel_panel_receiver.stores import MemorySessionStore

if TYPE_CHECKING:
    from tests.conftest import AppFactory

EVENTS = "/v1/events"


class Api:
    """A receiver app whose log lines go to a string, and a client of its event routes."""

    def __init__(self, app: ReceiverApp, out: io.StringIO) -> None:
        self.app, self.out = app, out
        self.client = falcon.testing.TestClient(app)

    def post(self, doc: Any, path: str = EVENTS, **kw: Any) -> falcon.testing.Result:
        body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        return self.client.simulate_post(path, body=body, **kw)

    def get(self, doc: Any, path: str = EVENTS, **kw: Any) -> falcon.testing.Result:
        q = urllib.parse.quote(json.dumps(doc))
        return self.client.simulate_get(path, query_string=f"q={q}", **kw)

    def lines(self, msg: str = "Received event") -> list[str]:
        self.app.telemetry.force_flush()
        marks = (f'msg="{msg}"', f'"msg":"{msg}"')
        return [line for line in self.out.getvalue().splitlines() if any(m in line for m in marks)]

    def counted(self) -> dict[str, float]:
        """Return grafana_analytics_events_total by event name, as /metrics shows it."""
        text = self.client.simulate_get("/metrics").text
        found = re.findall(r'^grafana_analytics_events_total\{event="([^"]*)"\} (\S+)$', text, re.M)
        return {name: float(value) for name, value in found}

    def metric(self, name: str) -> str:
        text = self.client.simulate_get("/metrics").text
        return "\n".join(line for line in text.splitlines() if line.startswith(name))


@pytest.fixture
def api(make_app: AppFactory) -> Callable[..., Api]:
    def make(**options: Any) -> Api:
        out = io.StringIO()
        return Api(make_app(Settings(new_series_delay=0, **options), stream=out), out)

    return make


def batch(*events: Any, session: str = "s-1", user: Any = "42") -> dict[str, Any]:
    doc: dict[str, Any] = {"sessionId": session, "events": list(events)}
    if user is not None:
        doc["userId"] = user
    return doc


def test_each_event_is_a_log_record_and_counted_by_name(api: Callable[..., Api]) -> None:
    a = api()
    doc = batch(
        {"name": "export_clicked", "ts": 1_700_000_000_000, "props": {"format": "csv", "rows": 12}},
        {"name": "export_clicked", "props": {"format": "png", "big": True, "none": None}},
        {"name": "opened"},
    )
    r = a.post(doc)
    assert r.status_code == 202
    assert r.json == {"accepted": 3, "rejected": 0}
    lines = a.lines()
    assert len(lines) == 3
    assert lines[0] == (
        'level=info msg="Received event" event=export_clicked session_id=s-1 user_id=42 '
        "ts=1700000000000 prop.format=csv prop.rows=12"
    )
    assert "prop.big=true" in lines[1] and "prop.none" not in lines[1]
    assert a.counted() == {"export_clicked": 2.0, "opened": 1.0}


def test_invalid_events_are_left_out_named_by_index_and_path_and_the_rest_recorded(
    api: Callable[..., Api],
) -> None:
    a = api()
    doc = batch(
        {"name": "ok"},
        {"props": {"a": 1}},
        {"name": "nested", "props": {"deep": {"x": 1}}},
        {"name": "old", "ts": -5},
        "not an object",
        {"name": "x" * 129},
        {"name": 7},
    )
    r = a.post(doc)
    assert r.status_code == 202
    assert r.json["accepted"] == 1 and r.json["rejected"] == 6
    errors = {e["index"]: (e["path"], e["error"]) for e in r.json["errors"]}
    assert errors[1][0] == "events[1].name" and "missing" in errors[1][1]
    assert errors[2] == (
        "events[2].props.deep",
        "a property must be a string, number, boolean or null, got an object",
    )
    assert errors[3][0] == "events[3].ts" and "milliseconds" in errors[3][1]
    assert errors[4][0] == "events[4]" and "object" in errors[4][1]
    assert errors[5][0] == "events[5].name" and "128" in errors[5][1]
    assert errors[6][0] == "events[6].name" and "string" in errors[6][1]
    assert a.counted() == {"ok": 1.0}
    assert "grafana_analytics_events_rejected_total 6.0" in a.metric("grafana_analytics_events_")


def test_a_batch_with_no_valid_event_is_a_400_with_its_first_errors(
    api: Callable[..., Api],
) -> None:
    a = api()
    r = a.post(batch(*({"props": {}} for _ in range(MAX_LISTED + 5))))
    assert r.status_code == 400
    assert r.json["error"] == "name is missing: expected the event's name"
    assert r.json["path"] == "events[0].name"
    assert r.json["accepted"] == 0 and r.json["rejected"] == MAX_LISTED + 5
    assert len(r.json["errors"]) == MAX_LISTED
    assert r.json["errors"][0] == {
        "index": 0,
        "path": "events[0].name",
        "error": "name is missing: expected the event's name",
    }
    assert a.lines() == [] and a.counted() == {}
    requests = a.metric("grafana_analytics_event_requests_total")
    assert 'outcome="malformed"} 1.0' in requests and "accepted" not in requests
    assert a.post(batch()).status_code == 202  # an empty batch is not refused


def test_odd_property_names_are_kept_and_bounded(api: Callable[..., Api]) -> None:
    a = api(log_format="json")
    a.post(batch({"name": "e", "props": {"": 1, "k" * 500: 2}}))
    (line,) = a.lines()
    record = json.loads(line)
    assert record["prop."] == 1 and record["prop." + "k" * 127 + "…"] == 2


@pytest.mark.parametrize(
    ("body", "error", "path"),
    [
        (b"", "body is empty", ""),
        (b"{", "body is not valid JSON", ""),
        (b"[]", "expected object, got array", ""),
        (b'{"sessionId": "s"}', "events is missing", "events"),
        (b'{"events": {}}', "expected array, got object", "events"),
        (b'{"events": [], "sessionId": 5}', "expected string, got integer", "sessionId"),
        (b'{"events": [], "userId": [1]}', "got array", "userId"),
        (b'{"events": [], "sessionId": "' + b"s" * 129 + b'"}', "longer than 128", "sessionId"),
        (b'{"events": [' + b"[" * 5000 + b"]" * 5000 + b"]}", "nested too deeply", ""),
    ],
)
def test_a_bad_envelope_is_a_400_naming_the_problem_and_where(
    api: Callable[..., Api], body: bytes, error: str, path: str
) -> None:
    r = api().post(body)
    assert r.status_code == 400
    assert error in r.json["error"] and r.json["path"] == path


def test_more_events_than_the_limit_are_refused_whole(api: Callable[..., Api]) -> None:
    a = api()
    r = a.post(batch(*({"name": "e"} for _ in range(MAX_EVENTS + 1))))
    assert r.status_code == 400 and str(MAX_EVENTS) in r.json["error"]
    assert a.post(batch(*({"name": "e"} for _ in range(MAX_EVENTS)))).status_code == 202
    assert a.counted() == {"e": float(MAX_EVENTS)}


def test_properties_are_bounded(api: Callable[..., Api]) -> None:
    a = api()
    many = {f"k{i}": i for i in range(MAX_PROPS + 1)}
    r = a.post(batch({"name": "many", "props": many}, {"name": "long", "props": {"v": "x" * 5000}}))
    assert r.json["errors"] == [
        {"index": 0, "path": "events[0].props",
         "error": f"props has {MAX_PROPS + 1} entries, more than the limit of {MAX_PROPS}"},
    ]  # fmt: skip
    (line,) = a.lines()
    value = line.partition("prop.v=")[2]
    assert len(value) == MAX_VALUE and value.endswith("…")


def test_a_body_over_the_limit_is_a_413(api: Callable[..., Api]) -> None:
    a = api(max_body_size=1000)
    r = a.post(batch(*({"name": "e" * 100} for _ in range(20))))
    assert r.status_code == 413 and "larger than the limit of 1000 bytes" in r.json["error"]
    assert 'outcome="too_large"' in a.metric("grafana_analytics_event_requests_total")


def test_a_q_over_the_body_limit_is_a_400_naming_q(api: Callable[..., Api]) -> None:
    a = api(max_body_size=1000)
    r = a.get(batch(*({"name": "e" * 100} for _ in range(20))))
    assert r.status_code == 400 and r.json["path"] == "q"
    assert "larger than the limit of 1000 bytes" in r.json["error"]
    assert 'outcome="too_large"' in a.metric("grafana_analytics_event_requests_total")


def test_the_get_routes_take_the_same_document_in_q(api: Callable[..., Api]) -> None:
    a = api()
    assert a.get(batch({"name": "viewed", "props": {"page": "/a"}})).status_code == 202
    assert a.counted() == {"viewed": 1.0}
    assert a.get({"sessionId": "s-9", "userId": 7}, "/v1/setUserId").status_code == 202
    r = a.get({"sessionId": "s-9", "props": {"plan": "pro"}}, "/v1/setUserProps")
    assert r.status_code == 202
    assert a.lines("Session linked to user") == [
        'level=info msg="Session linked to user" session_id=s-9 user_id=7'
    ]
    assert a.lines("User properties set") == [
        'level=info msg="User properties set" session_id=s-9 prop.plan=pro'
    ]
    r = a.client.simulate_get(EVENTS)
    assert r.status_code == 400 and (r.json["path"], r.json["error"][:12]) == ("q", "q is missing")
    assert 'outcome="malformed"' in a.metric("grafana_analytics_event_requests_total")


def test_set_user_id_needs_a_user(api: Callable[..., Api]) -> None:
    r = api().post({"sessionId": "s"}, "/v1/setUserId")
    assert r.status_code == 400 and r.json["path"] == "userId"


@pytest.mark.parametrize("mode", ["clear", "pseudonymous", "none"])
def test_the_user_follows_the_user_labels_setting(api: Callable[..., Api], mode: str) -> None:
    a = api(user_labels=mode)
    a.post(batch({"name": "e"}, user="42"))
    a.post(batch({"name": "e"}, user="42"))
    a.post(batch({"name": "e"}, user="43"))
    users = [re.search(r"user_id=(\S+)", line) for line in a.lines()]
    if mode == "none":
        assert users == [None, None, None]
        return
    values = [m.group(1) for m in users if m]
    if mode == "clear":
        assert values == ["42", "42", "43"]
    else:  # the same viewer, the same daily pseudonym; never the id itself
        assert values[0] == values[1] != values[2]
        assert all(re.fullmatch(r"u[0-9a-f]{16}", v) for v in values)


def test_redacted_fields_and_properties_say_so(api: Callable[..., Api]) -> None:
    a = api(log_redact="user_id,prop.email")
    a.post(batch({"name": "signup", "props": {"email": "a@b.c", "plan": "pro"}}))
    (line,) = a.lines()
    assert "user_id=[redacted]" in line and "prop.email=[redacted]" in line
    assert "a@b.c" not in line and "prop.plan=pro" in line


def test_a_flood_of_random_names_stays_within_the_label_set_limit(
    api: Callable[..., Api],
) -> None:
    a = api(metric_cardinality_limit=50)
    for start in range(0, 2000, MAX_EVENTS):
        names = ({"name": f"junk-{i}"} for i in range(start, start + MAX_EVENTS))
        assert a.post(batch(*names)).status_code == 202
    a.post(batch({"name": "real"}))
    counted = a.counted()
    assert len(counted) <= 50 and counted["real"] == 1.0
    assert 'grafana_analytics_series_retired_total{metric="grafana_analytics_events"}' in (
        a.metric("grafana_analytics_series_retired_total")
    )


def test_the_event_api_can_be_turned_off(api: Callable[..., Api]) -> None:
    a = api(disable_event_api=True)
    assert a.post(batch({"name": "e"})).status_code == 404
    assert a.get(batch({"name": "e"})).status_code == 404


def test_a_token_guards_the_event_api_as_it_guards_write(
    api: Callable[..., Api], tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret\n")
    a = api(auth="token", auth_token_file=str(tokens))
    r = a.post(batch({"name": "e"}))
    assert r.status_code == 401 and "token" in r.json["error"]
    assert a.post(batch({"name": "e"}), query_string="token=s3cret").status_code == 202
    assert (
        a.get(batch({"name": "e"}), headers={"Authorization": "Bearer s3cret"}).status_code == 202
    )
    assert a.counted() == {"e": 2.0}
    assert 'outcome="unauthorized"' in a.metric("grafana_analytics_event_requests_total")


def test_an_allowed_origin_gets_cors_on_the_event_routes(api: Callable[..., Api]) -> None:
    a = api(allowed_origins="https://app.example.com")
    origin = {"Origin": "https://app.example.com"}
    pre = a.client.simulate_options(
        EVENTS, headers={**origin, "Access-Control-Request-Method": "POST"}
    )
    assert pre.status_code == 204 and "POST" in pre.headers["Access-Control-Allow-Methods"]
    r = a.post(batch({"name": "e"}), headers=origin)
    assert r.status_code == 202
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    other = a.post(batch({"name": "e"}), headers={"Origin": "https://evil.example"})
    assert other.status_code == 403


@pytest.fixture(scope="module")
def shared() -> Any:
    """One app for many examples: the event API keeps nothing between requests but counts."""
    app = create_app(Settings(), stream=io.StringIO())
    yield Api(app, io.StringIO())
    app.close()


@settings(max_examples=150, deadline=None)
@given(body=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_body_gets_a_202_or_a_400_never_a_5xx(shared: Api, body: bytes) -> None:
    assert shared.post(body).status_code in (202, 400)


def test_a_flood_of_random_names_and_properties_does_not_grow_memory(
    api: Callable[..., Api],
) -> None:
    a = api(metric_cardinality_limit=100)
    rng = random.Random(3)

    def flood() -> int:
        events = [
            {"name": f"n{rng.getrandbits(64):x}", "props": {f"k{rng.getrandbits(32):x}": "v"}}
            for _ in range(MAX_EVENTS)
        ]
        assert a.post(batch(*events)).status_code == 202
        a.out.seek(0)
        a.out.truncate()  # the log lines are the test's stdout, not the receiver's memory
        return tracemalloc.get_traced_memory()[0]

    for _ in range(12):  # the bounded caches filled once (they empty and refill in turn)
        flood()
    gc.collect()
    tracemalloc.start()
    try:
        held = [flood() for _ in range(32)]  # 16,000 more new names and property names
    finally:
        tracemalloc.stop()
    # A leak grows with every batch (about 200 KiB a batch if each name kept a series); the
    # bounded caches only swing between empty and full. Compare the first and last batches.
    first, last = sum(held[:6]) / 6, sum(held[-6:]) / 6
    assert last - first < 2 << 20, f"{last - first:.0f} bytes more after 13,000 new names"
    assert len(a.counted()) <= 100


class _NoSecrets(MemorySessionStore):
    """A store that cannot give the day's key: as a shared store does while it is down."""

    def secret(self, name: str, ttl: float) -> bytes:
        raise StoreUnavailable("the store is down (a test)")


def test_a_store_that_cannot_give_the_pseudonym_key_is_a_503_counted(
    make_app: AppFactory,
) -> None:
    app = make_app(Settings(user_labels="pseudonymous", new_series_delay=0),
                   store=_NoSecrets(), stream=io.StringIO())  # fmt: skip
    a = Api(app, io.StringIO())
    r = a.post(batch({"name": "e"}))
    assert r.status_code == 503 and r.headers["Retry-After"]
    assert "send it again later" in r.json["error"]
    assert 'outcome="store_unavailable"' in a.metric("grafana_analytics_event_requests_total")
    assert a.counted() == {}
