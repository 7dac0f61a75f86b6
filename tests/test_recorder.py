"""The recorder on a real SDK: counters, Views, log records (in-memory readers/exporters)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from otel_panel_receiver.config import Settings
from otel_panel_receiver.model import SessionUpdate
from otel_panel_receiver.payload import decode
from otel_panel_receiver.recorder import DURATION, SESSIONS, Recorder
from otel_panel_receiver.testing import MemoryTelemetry, sample_payload

KEY = 1

Setup = Callable[..., tuple[Recorder, MemoryTelemetry]]


@pytest.fixture
def setup(make_telemetry: Callable[[Settings], MemoryTelemetry]) -> Setup:
    """Return a maker of a recorder and the in-memory telemetry it records into.

    ``views_users`` is the telemetry's View setting, ``users`` the recorder's own: they differ
    when an embedder's Views drop the user labels.
    """

    def make(
        users: bool = True, views_users: bool = True, **kw: Any
    ) -> tuple[Recorder, MemoryTelemetry]:
        telemetry = make_telemetry(Settings(disable_user_metrics=not views_users))
        recorder = Recorder(telemetry.meter_provider, telemetry.logger_provider, users=users, **kw)
        return recorder, telemetry

    return make


def text(value: object) -> str:
    """Return a log attribute that must be a string."""
    assert isinstance(value, str), value
    return value


def mapping(value: object) -> Mapping[str, Any]:
    """Return a log attribute that must be a mapping."""
    assert isinstance(value, Mapping), value
    return value


START = SessionUpdate(started=True, duration=0.0, ended=False, start_time=0)


def test_new_session_counts_one_and_start_adds_no_duration_series(setup: Setup) -> None:
    rec, tel = setup()
    rec.record(decode(sample_payload("v2-start.json"), now=0), START, KEY)
    [(attrs, value)] = tel.points(SESSIONS)
    assert value == 1 and attrs["user_login"] == "jdoe"
    assert tel.points(DURATION) == []


def test_heartbeat_adds_its_duration_even_zero(setup: Setup) -> None:
    rec, tel = setup()
    hb = decode(sample_payload("v2-heartbeat.json"), now=0)
    rec.record(hb, SessionUpdate(started=True, duration=0.0, ended=False, start_time=0), KEY)
    rec.record(hb, SessionUpdate(started=False, duration=60.0, ended=False, start_time=0), KEY)
    assert [v for _, v in tel.points(DURATION)] == [60.0]
    assert [v for _, v in tel.points(SESSIONS)] == [1]


def test_view_alone_drops_user_labels_and_sums_the_series(setup: Setup) -> None:
    # The recorder still passes user attributes; the View removes them (an embedder's case).
    rec, tel = setup(users=True, views_users=False)
    doc = sample_payload("v2-start.json")
    rec.record(decode(doc, now=0), START, KEY)
    rec.record(decode(doc.replace(b'"jdoe"', b'"other"'), now=0), START, KEY)
    [(attrs, value)] = tel.points(SESSIONS)
    assert value == 2 and "user_login" not in attrs and "user_name" not in attrs


def test_one_log_record_per_payload_with_upstream_fields(setup: Setup) -> None:
    rec, tel = setup()
    rec.record(decode(sample_payload("v2-start.json"), now=0), START, KEY)
    [record] = tel.log_records()
    assert record.log_record.body == "Received session data"
    assert record.log_record.severity_text == "info"
    attrs = dict(record.log_record.attributes or {})
    assert attrs["uuid"] == "3f0c6a9e-2b7d-4c1e-9a51-7d2e4b8f6c10"
    assert text(attrs["env"]).startswith("(label=Environment")
    assert record.log_record.timestamp is not None


def test_unknown_type_adds_the_upstream_warning_record(setup: Setup) -> None:
    rec, tel = setup()
    rec.record(decode(b'{"uuid": "u", "type": "refresh", "time": 5}', now=0), START, KEY)
    warn, info = tel.log_records()
    assert warn.log_record.severity_text == "warn"
    assert warn.log_record.body == "Session has invalid type, defaulted to heartbeat"
    assert dict(warn.log_record.attributes or {}) == {"uuid": "u", "type": "refresh"}
    assert info.log_record.body == "Received session data"


@pytest.mark.parametrize("variable_log", [True, False])
def test_raw_log_carries_the_payload_under_data(setup: Setup, variable_log: bool) -> None:
    rec, tel = setup(raw_log=True, variable_log=variable_log)
    rec.record(decode(sample_payload("v2-start.json"), now=0), START, KEY)
    [record] = tel.log_records()
    data = mapping(dict(record.log_record.attributes or {})["data"])
    assert data["uuid"] == "3f0c6a9e-2b7d-4c1e-9a51-7d2e4b8f6c10"
    assert set(data["options"]) == {
        "postStart", "postEnd", "postHeartbeat", "heartbeatInterval", "heartbeatAlways",
    }  # fmt: skip
    assert len(data["variables"]) == (2 if variable_log else 0)


def test_disabled_session_log_emits_no_record(setup: Setup) -> None:
    rec, tel = setup(session_log=False)
    rec.record(decode(sample_payload("v2-start.json"), now=0), START, KEY)
    assert tel.log_records() == ()


def test_hostile_variable_names_and_values_reach_the_log_intact(setup: Setup) -> None:
    rec, tel = setup()
    body = (
        b'{"uuid":"u","type":"start","time":1,"variables":['
        b'{"name":"","values":["a"]},{"name":"type","values":[1,null]},'
        b'{"name":"x\\ny","values":["\\u0000"]}]}'
    )
    rec.record(decode(body, now=0), START, KEY)
    [record] = tel.log_records()
    attrs = dict(record.log_record.attributes or {})
    assert attrs["type"] == "start"
    assert text(attrs["var_"]).endswith("values=[a])")
    assert text(attrs["var_type"]).endswith("count=2, values=[1,null])")
    assert text(attrs["x\ny"]).endswith("values=[\x00])")


def test_with_a_tally_and_no_sdk_reader_the_counts_skip_the_sdk(
    telemetry: MemoryTelemetry,
) -> None:
    """The service's default: the table of series is fed by the tally alone."""
    tallied: list[Any] = []
    recorder = Recorder(telemetry.meter_provider, tally=tallied.extend, sdk_counters=False)
    event = decode(sample_payload("v2-heartbeat.json"), now=0)
    recorder.record(event, SessionUpdate(True, 60.0, False, event.time), 1)
    assert [(name, value) for name, _, value in tallied] == [(SESSIONS, 1), (DURATION, 60.0)]
    assert telemetry.points(SESSIONS) == [] and telemetry.points(DURATION) == []
    both = Recorder(telemetry.meter_provider, tally=tallied.extend)  # an OTLP reader reads them
    both.record(event, SessionUpdate(True, 60.0, False, event.time), 1)
    assert [v for _, v in telemetry.points(SESSIONS)] == [1]
