"""The recorder on a real SDK: counters, Views, log records (in-memory readers/exporters)."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_panel_receiver.model import SessionUpdate
from otel_panel_receiver.payload import decode
from otel_panel_receiver.providers import session_views
from otel_panel_receiver.telemetry import DURATION, SESSIONS, Recorder
from tests.peers import payload


def points(reader: InMemoryMetricReader, name: str) -> list[tuple[dict[str, Any], float]]:
    data = reader.get_metrics_data()
    assert data is not None
    return [
        (dict(p.attributes or {}), p.value)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == name
        for p in m.data.data_points  # type: ignore[union-attr]
    ]


def setup(users: bool = True, views_users: bool = True, **kw: Any):  # type: ignore[no-untyped-def]
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], views=session_views(users=views_users))
    logs = InMemoryLogRecordExporter()
    lp = LoggerProvider(shutdown_on_exit=False)
    lp.add_log_record_processor(SimpleLogRecordProcessor(logs))
    return Recorder(provider, lp, users=users, **kw), reader, logs


START = SessionUpdate(started=True, duration=0.0, ended=False, start_time=0)


def test_new_session_counts_one_and_start_adds_no_duration_series() -> None:
    rec, reader, _ = setup()
    rec.record(decode(payload("v2-start.json"), now=0), START)
    [(attrs, value)] = points(reader, SESSIONS)
    assert value == 1 and attrs["user_login"] == "jdoe"
    assert points(reader, DURATION) == []


def test_heartbeat_adds_its_duration_even_zero() -> None:
    rec, reader, _ = setup()
    hb = decode(payload("v2-heartbeat.json"), now=0)
    rec.record(hb, SessionUpdate(started=True, duration=0.0, ended=False, start_time=0))
    rec.record(hb, SessionUpdate(started=False, duration=60.0, ended=False, start_time=0))
    assert [v for _, v in points(reader, DURATION)] == [60.0]
    assert [v for _, v in points(reader, SESSIONS)] == [1]


def test_view_alone_drops_user_labels_and_sums_the_series() -> None:
    # The recorder still passes user attributes; the View removes them (an embedder's case).
    rec, reader, _ = setup(users=True, views_users=False)
    doc = payload("v2-start.json")
    rec.record(decode(doc, now=0), START)
    rec.record(decode(doc.replace(b'"jdoe"', b'"other"'), now=0), START)
    [(attrs, value)] = points(reader, SESSIONS)
    assert value == 2 and "user_login" not in attrs and "user_name" not in attrs


def test_one_log_record_per_payload_with_upstream_fields() -> None:
    rec, _, logs = setup()
    rec.record(decode(payload("v2-start.json"), now=0), START)
    [record] = logs.get_finished_logs()
    assert record.log_record.body == "Received session data"
    assert record.log_record.severity_text == "info"
    attrs = dict(record.log_record.attributes or {})
    assert attrs["uuid"] == "3f0c6a9e-2b7d-4c1e-9a51-7d2e4b8f6c10"
    assert attrs["env"].startswith("(label=Environment")
    assert record.log_record.timestamp is not None


def test_unknown_type_adds_the_upstream_warning_record() -> None:
    rec, _, logs = setup()
    rec.record(decode(b'{"uuid": "u", "type": "refresh", "time": 5}', now=0), START)
    warn, info = logs.get_finished_logs()
    assert warn.log_record.severity_text == "warn"
    assert warn.log_record.body == "Session has invalid type, defaulted to heartbeat"
    assert dict(warn.log_record.attributes or {}) == {"uuid": "u", "type": "refresh"}
    assert info.log_record.body == "Received session data"


@pytest.mark.parametrize("variable_log", [True, False])
def test_raw_log_carries_the_payload_under_data(variable_log: bool) -> None:
    rec, _, logs = setup(raw_log=True, variable_log=variable_log)
    rec.record(decode(payload("v2-start.json"), now=0), START)
    [record] = logs.get_finished_logs()
    data = dict(record.log_record.attributes or {})["data"]
    assert data["uuid"] == "3f0c6a9e-2b7d-4c1e-9a51-7d2e4b8f6c10"
    assert set(data["options"]) == {
        "postStart", "postEnd", "postHeartbeat", "heartbeatInterval", "heartbeatAlways",
    }  # fmt: skip
    assert len(data["variables"]) == (2 if variable_log else 0)


def test_session_log_can_be_disabled() -> None:
    rec, _, logs = setup(session_log=False)
    rec.record(decode(payload("v2-start.json"), now=0), START)
    assert logs.get_finished_logs() == ()


def test_hostile_variable_names_and_values_reach_the_log_intact() -> None:
    rec, _, logs = setup()
    body = (
        b'{"uuid":"u","type":"start","time":1,"variables":['
        b'{"name":"","values":["a"]},{"name":"type","values":[1,null]},'
        b'{"name":"x\\ny","values":["\\u0000"]}]}'
    )
    rec.record(decode(body, now=0), START)
    [record] = logs.get_finished_logs()
    attrs = dict(record.log_record.attributes or {})
    assert attrs["type"] == "start"
    assert attrs["var_"].endswith("values=[a])")
    assert attrs["var_type"].endswith("count=2, values=[1,null])")
    assert attrs["x\ny"].endswith("values=[\x00])")
