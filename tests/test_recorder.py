"""The recorder on a real SDK: counters, Views, log records (in-memory readers/exporters)."""

from __future__ import annotations

from typing import Any

import pytest

from otel_panel_receiver.config import Settings
from otel_panel_receiver.model import SessionUpdate
from otel_panel_receiver.payload import decode
from otel_panel_receiver.recorder import DURATION, SESSIONS, Recorder
from otel_panel_receiver.testing import MemoryTelemetry, in_memory_telemetry
from tests.peers import payload

KEY = 1


def setup(
    users: bool = True, views_users: bool = True, **kw: Any
) -> tuple[Recorder, MemoryTelemetry]:
    telemetry = in_memory_telemetry(Settings(disable_user_metrics=not views_users))
    recorder = Recorder(telemetry.meter_provider, telemetry.logger_provider, users=users, **kw)
    return recorder, telemetry


START = SessionUpdate(started=True, duration=0.0, ended=False, start_time=0)


def test_new_session_counts_one_and_start_adds_no_duration_series() -> None:
    rec, tel = setup()
    rec.record(decode(payload("v2-start.json"), now=0), START, KEY)
    [(attrs, value)] = tel.points(SESSIONS)
    assert value == 1 and attrs["user_login"] == "jdoe"
    assert tel.points(DURATION) == []


def test_heartbeat_adds_its_duration_even_zero() -> None:
    rec, tel = setup()
    hb = decode(payload("v2-heartbeat.json"), now=0)
    rec.record(hb, SessionUpdate(started=True, duration=0.0, ended=False, start_time=0), KEY)
    rec.record(hb, SessionUpdate(started=False, duration=60.0, ended=False, start_time=0), KEY)
    assert [v for _, v in tel.points(DURATION)] == [60.0]
    assert [v for _, v in tel.points(SESSIONS)] == [1]


def test_view_alone_drops_user_labels_and_sums_the_series() -> None:
    # The recorder still passes user attributes; the View removes them (an embedder's case).
    rec, tel = setup(users=True, views_users=False)
    doc = payload("v2-start.json")
    rec.record(decode(doc, now=0), START, KEY)
    rec.record(decode(doc.replace(b'"jdoe"', b'"other"'), now=0), START, KEY)
    [(attrs, value)] = tel.points(SESSIONS)
    assert value == 2 and "user_login" not in attrs and "user_name" not in attrs


def test_one_log_record_per_payload_with_upstream_fields() -> None:
    rec, tel = setup()
    rec.record(decode(payload("v2-start.json"), now=0), START, KEY)
    [record] = tel.log_records()
    assert record.log_record.body == "Received session data"
    assert record.log_record.severity_text == "info"
    attrs = dict(record.log_record.attributes or {})
    assert attrs["uuid"] == "3f0c6a9e-2b7d-4c1e-9a51-7d2e4b8f6c10"
    assert attrs["env"].startswith("(label=Environment")
    assert record.log_record.timestamp is not None


def test_unknown_type_adds_the_upstream_warning_record() -> None:
    rec, tel = setup()
    rec.record(decode(b'{"uuid": "u", "type": "refresh", "time": 5}', now=0), START, KEY)
    warn, info = tel.log_records()
    assert warn.log_record.severity_text == "warn"
    assert warn.log_record.body == "Session has invalid type, defaulted to heartbeat"
    assert dict(warn.log_record.attributes or {}) == {"uuid": "u", "type": "refresh"}
    assert info.log_record.body == "Received session data"


@pytest.mark.parametrize("variable_log", [True, False])
def test_raw_log_carries_the_payload_under_data(variable_log: bool) -> None:
    rec, tel = setup(raw_log=True, variable_log=variable_log)
    rec.record(decode(payload("v2-start.json"), now=0), START, KEY)
    [record] = tel.log_records()
    data = dict(record.log_record.attributes or {})["data"]
    assert data["uuid"] == "3f0c6a9e-2b7d-4c1e-9a51-7d2e4b8f6c10"
    assert set(data["options"]) == {
        "postStart", "postEnd", "postHeartbeat", "heartbeatInterval", "heartbeatAlways",
    }  # fmt: skip
    assert len(data["variables"]) == (2 if variable_log else 0)


def test_session_log_can_be_disabled() -> None:
    rec, tel = setup(session_log=False)
    rec.record(decode(payload("v2-start.json"), now=0), START, KEY)
    assert tel.log_records() == ()


def test_hostile_variable_names_and_values_reach_the_log_intact() -> None:
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
    assert attrs["var_"].endswith("values=[a])")
    assert attrs["var_type"].endswith("count=2, values=[1,null])")
    assert attrs["x\ny"].endswith("values=[\x00])")
