"""Privacy by choice: user labels clear, pseudonymous or none; distinct viewers; log redaction."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import falcon.testing

from otel_panel_receiver.config import Settings
from otel_panel_receiver.privacy import KEY_LIFETIME, Pseudonyms
from otel_panel_receiver.stores import MemorySessionStore, open_store
from otel_panel_receiver.testing import FakeClock, MemoryTelemetry, sample_payload
from tests.conftest import AppFactory

START = sample_payload("v2-start.json")  # jdoe, Jane Doe, jdoe@example.com, user id 7
DAY = 86_400.0
T0 = 1_796_000_000.0  # a moment of a UTC day


def as_user(body: bytes, login: str, user_id: int, uuid_tail: str) -> bytes:
    """Return ``body`` as another viewer's, in a session of its own."""
    return (
        body.replace(b'"jdoe"', f'"{login}"'.encode())
        .replace(b'"id": 7', f'"id": {user_id}'.encode())
        .replace(b"7d2e4b8f6c10", uuid_tail.encode())
    )


def sessions_labels(telemetry: MemoryTelemetry) -> list[dict[str, str]]:
    return [attrs for attrs, _ in telemetry.points("grafana_analytics_sessions")]


def viewers(telemetry: MemoryTelemetry) -> dict[str, float]:
    points = telemetry.points("grafana_analytics_dashboard_viewers")
    return {attrs["dashboard_uid"]: value for attrs, value in points}


def test_pseudonymous_labels_name_nobody_and_map_a_viewer_to_one_label_a_day(
    make_app: AppFactory, telemetry: MemoryTelemetry
) -> None:
    clock = FakeClock(T0)
    app = make_app(Settings(user_labels="pseudonymous"), telemetry=telemetry, clock=clock)
    app.receiver.handle(START)
    app.receiver.handle(as_user(START, "jdoe", 7, "000000000001"))  # jdoe again, same day
    [labels] = sessions_labels(telemetry)
    assert labels["user_login"] == labels["user_name"] != "jdoe"
    assert labels["user_login"].startswith("u") and len(labels["user_login"]) == 17
    text = falcon.testing.TestClient(app).simulate_get("/metrics").text
    assert "jdoe" not in text and "Jane" not in text


def test_a_pseudonym_is_stable_for_a_day_shared_by_workers_and_new_the_next_day(
    tmp_path: Path,
) -> None:
    clock = FakeClock(T0)
    url = f"sqlite://{tmp_path}/sessions.db"
    a = open_store(url, max_size=100, idle_ttl=3600, clock=clock)
    b = open_store(url, max_size=100, idle_ttl=3600, clock=clock)
    from otel_panel_receiver.payload import decode

    event = decode(START, now=0)
    first = Pseudonyms(a, clock).label(event)
    assert Pseudonyms(b, clock).label(event) == first  # another worker: the same label
    clock.advance(DAY)
    assert Pseudonyms(a, clock).label(event) != first  # a new day, a new key
    clock.advance(KEY_LIFETIME)  # yesterday's key is gone: its labels point to nobody
    assert Pseudonyms(b, FakeClock(T0)).label(event) != first
    a.close()
    b.close()


def test_distinct_viewers_per_dashboard_per_day(
    make_app: AppFactory, telemetry: MemoryTelemetry
) -> None:
    clock = FakeClock(T0)
    store = MemorySessionStore(clock=clock)
    receiver = make_app(Settings(), telemetry=telemetry, store=store, clock=clock).receiver
    receiver.handle(START)  # jdoe
    receiver.handle(as_user(START, "jdoe", 7, "000000000001"))  # jdoe's second session
    receiver.handle(as_user(START, "ann", 8, "000000000002"))  # ann
    receiver.handle(sample_payload("v2-heartbeat.json"))  # no new session: not a visit
    anonymous = START.replace(b'"id": 7', b'"id": 0').replace(b'"jdoe"', b'""')
    receiver.handle(anonymous.replace(b"7d2e4b8f6c10", b"000000000003"))  # not counted
    assert viewers(telemetry) == {"ZQZXRMXMk": 2}
    clock.advance(DAY)
    receiver.handle(as_user(START, "jdoe", 7, "000000000004"))  # jdoe, the next day
    assert viewers(telemetry) == {"ZQZXRMXMk": 3}


def test_user_labels_none_and_disable_user_metrics_drop_the_labels(
    make_app: AppFactory, make_telemetry: Callable[[Settings], MemoryTelemetry]
) -> None:
    for settings in (Settings(user_labels="none"), Settings(disable_user_metrics=True)):
        telemetry = make_telemetry(settings)
        make_app(settings, telemetry=telemetry).receiver.handle(START)
        [labels] = sessions_labels(telemetry)
        assert "user_login" not in labels and "user_name" not in labels


def test_no_email_reaches_any_metric_in_any_mode(
    make_app: AppFactory, make_telemetry: Callable[[Settings], MemoryTelemetry]
) -> None:
    modes: tuple[Literal["clear", "pseudonymous", "none"], ...] = ("clear", "pseudonymous", "none")
    for mode in modes:
        settings = Settings(user_labels=mode, new_series_delay=0)
        telemetry = make_telemetry(settings)
        app = make_app(settings, telemetry=telemetry)
        app.receiver.handle(START)
        assert (
            "jdoe@example.com" not in falcon.testing.TestClient(app).simulate_get("/metrics").text
        )


def test_redacted_log_fields_never_reach_a_line_logfmt_or_raw(make_app: AppFactory) -> None:
    redact = "user_email,user_login,user_name,user_id"
    out = io.StringIO()
    make_app(Settings(log_redact=redact), stream=out).receiver.handle(START)
    line = out.getvalue()
    assert "jdoe" not in line and "Jane" not in line
    assert "user_email=[redacted]" in line and "user_id=[redacted]" in line
    raw = io.StringIO()
    make_app(Settings(log_redact=redact, log_raw=True), stream=raw).receiver.handle(START)
    user = json.loads(raw.getvalue())["data"]["user"]
    assert (user["login"], user["email"], user["name"], user["id"]) == ("[redacted]",) * 4


def test_remembered_viewer_markers_and_labels_are_the_days_keyed_hashes_and_change_daily() -> None:
    from otel_panel_receiver.payload import decode
    from otel_panel_receiver.privacy import viewer_id

    clock = FakeClock(T0)
    pseudonyms = Pseudonyms(MemorySessionStore(clock=clock), clock)

    def expected(body: bytes) -> int:
        event = decode(body, now=0)
        parts = (event.host.address, event.dashboard.uid, viewer_id(event))
        return pseudonyms.day_marker("viewer", *parts)

    def labels() -> list[str]:
        return [pseudonyms.label(decode(body, now=0)) for body in bodies * 2]

    def expected_labels() -> list[str]:
        return [pseudonyms.label_of(viewer_id(decode(body, now=0))) for body in bodies * 2]

    bodies = [as_user(START, f"user{n}", n, f"{n:012x}") for n in range(1, 4)]
    today = [pseudonyms.marker(decode(body, now=0)) for body in bodies * 2]  # then remembered
    assert today == [expected(body) for body in bodies * 2]
    assert len(set(today)) == 3
    today_labels = labels()
    assert today_labels == expected_labels() and len(set(today_labels)) == 3
    clock.advance(DAY)
    tomorrow = [pseudonyms.marker(decode(body, now=0)) for body in bodies]
    assert tomorrow == [expected(body) for body in bodies]
    assert not set(tomorrow) & set(today)
    assert labels() == expected_labels() and not set(labels()) & set(today_labels)
