"""The receiver's own faults, in process: one truthful outcome per request, whatever fails.

A store that cannot take an update answers 503 with ``Retry-After`` and records nothing; a
fault of the receiver itself answers 500 and logs its traceback once per place per interval;
a log stream that blocks or fails never fails a request; a store found emptied adopts the
sessions it lost instead of counting them again; the counts of several workers reach their
shared table before a payload is answered. The same faults with real processes, disks and
servers are in ``tests/e2e/test_faults.py``.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import falcon.testing
import pytest

from otel_panel_receiver import MemorySessionStore, Receiver, Recorder
from otel_panel_receiver.config import Settings
from otel_panel_receiver.errors import StoreUnavailable
from otel_panel_receiver.export.exposition import Family
from otel_panel_receiver.export.series import SERIES_FILE, LmdbSeries, MemorySeries, SeriesReader
from otel_panel_receiver.export.sink import LineSink
from otel_panel_receiver.recorder import COUNTERS
from otel_panel_receiver.sessions import SessionRules
from otel_panel_receiver.stores import GuardedStore
from otel_panel_receiver.stores._protocol import Update
from otel_panel_receiver.testing import FakeClock, MemoryTelemetry, sample_payload

if TYPE_CHECKING:
    from tests.conftest import AppFactory

R = TypeVar("R")


def outcomes(telemetry: MemoryTelemetry) -> dict[str, float]:
    return {a["outcome"]: v for a, v in telemetry.points("grafana_analytics_payloads")}


def sessions(telemetry: MemoryTelemetry) -> float:
    return sum(v for _, v in telemetry.points("grafana_analytics_sessions"))


class FlakyStore(MemorySessionStore):
    """A memory store that fails every call while ``down``, and counts the calls it got."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.down = False
        self.calls = 0

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.down:
            raise StoreUnavailable("session store 'flaky': disk I/O error")

    def apply(self, key: int, fn: Update[R]) -> R:
        self._maybe_fail()
        return super().apply(key, fn)

    def mark(self, key: int, ttl: float) -> bool:
        self._maybe_fail()
        return super().mark(key, ttl)

    def ping(self) -> None:
        self._maybe_fail()


# -- the guard ----------------------------------------------------------------------------------


def test_a_failed_store_is_not_called_again_until_retry_after_then_one_call_probes_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(100.0)
    backend = FlakyStore()
    store = GuardedStore(backend, retry_after=1.0, clock=clock)
    backend.down = True
    with pytest.raises(StoreUnavailable, match="disk I/O error"):
        store.apply(1, lambda old: (1, None))
    assert backend.calls == 1 and store.down
    for _ in range(5):  # refused at once: a frozen backend costs one request its timeout
        with pytest.raises(StoreUnavailable):
            store.apply(1, lambda old: (1, None))
    assert backend.calls == 1
    clock.advance(1.0)
    with pytest.raises(StoreUnavailable):  # the probe, and the backend is still down
        store.apply(1, lambda old: (1, None))
    assert backend.calls == 2
    backend.down = False
    clock.advance(1.0)
    assert store.apply(1, lambda old: (1, "ok")) == "ok"
    assert not store.down and store.apply(2, lambda old: (1, "ok")) == "ok"
    going = [r for r in caplog.records if "unavailable" in r.getMessage()]
    back = [r for r in caplog.records if "available again" in r.getMessage()]
    assert len(going) == 1 and len(back) == 1  # once each way, not once per request
    assert back[0].fields["refused_meanwhile"] == 5  # type: ignore[attr-defined]


def test_while_a_probe_waits_on_the_backend_the_other_calls_are_refused_at_once() -> None:
    clock = FakeClock(100.0)
    entered, release = threading.Event(), threading.Event()

    class Slow(FlakyStore):
        def ping(self) -> None:
            entered.set()
            release.wait(5)
            super().ping()

    backend = Slow()
    store = GuardedStore(backend, clock=clock)
    backend.down = True
    with pytest.raises(StoreUnavailable):
        store.apply(1, lambda old: (1, None))
    clock.advance(2.0)
    backend.down = False
    probe = threading.Thread(target=store.ping)
    probe.start()
    assert entered.wait(5)
    with pytest.raises(StoreUnavailable):
        store.apply(1, lambda old: (1, None))
    release.set()
    probe.join(5)
    assert store.apply(1, lambda old: (1, "ok")) == "ok"


# -- the receiver: one outcome per payload --------------------------------------------------


def test_a_store_that_fails_records_nothing_and_counts_the_refusal(
    telemetry: MemoryTelemetry, clock: FakeClock
) -> None:
    from otel_panel_receiver.outcomes import Outcomes

    store = FlakyStore()
    recorder = Recorder(telemetry.meter_provider, telemetry.logger_provider)
    outcome_counts = Outcomes(telemetry.meter_provider)
    receiver = Receiver(store, recorder, clock=clock, outcomes=outcome_counts)
    store.down = True
    with pytest.raises(StoreUnavailable):
        receiver.handle(sample_payload("v2-start.json"), client="192.0.2.1")
    assert sessions(telemetry) == 0 and telemetry.log_records() == ()
    assert outcomes(telemetry) == {"store_unavailable": 1}
    store.down = False
    receiver.handle(sample_payload("v2-start.json"))
    assert sessions(telemetry) == 1
    assert outcomes(telemetry) == {"store_unavailable": 1, "accepted": 1}


def test_a_viewer_mark_that_fails_after_the_update_still_records_the_payload(
    telemetry: MemoryTelemetry, clock: FakeClock
) -> None:
    from otel_panel_receiver.privacy import Pseudonyms

    class MarkFails(FlakyStore):
        def mark(self, key: int, ttl: float) -> bool:
            raise StoreUnavailable("session store 'flaky': database is locked")

    store = MarkFails()
    recorder = Recorder(telemetry.meter_provider, telemetry.logger_provider)
    receiver = Receiver(store, recorder, clock=clock, viewers=Pseudonyms(store, clock))
    update = receiver.handle(sample_payload("v2-start.json"))
    assert update.started and sessions(telemetry) == 1
    assert telemetry.points("grafana_analytics_dashboard_viewers") == []  # only the visit lost


def test_a_pseudonym_key_the_store_cannot_give_fails_the_payload_before_its_update(
    telemetry: MemoryTelemetry, clock: FakeClock
) -> None:
    """Today's key is fetched before the update: labelling after it cannot fail."""
    from otel_panel_receiver.privacy import Pseudonyms

    class NoSecret(FlakyStore):
        def secret(self, name: str, ttl: float) -> bytes:
            raise StoreUnavailable("session store 'flaky': database is locked")

    store = NoSecret()
    pseudonyms = Pseudonyms(store, clock)
    recorder = Recorder(telemetry.meter_provider, pseudonym=pseudonyms.label)
    receiver = Receiver(store, recorder, clock=clock, viewers=pseudonyms)
    with pytest.raises(StoreUnavailable):
        receiver.handle(sample_payload("v2-start.json"))
    assert len(store) == 0 and sessions(telemetry) == 0


def adopting_receiver(
    telemetry: MemoryTelemetry, clock: FakeClock, reset_at: float
) -> tuple[Receiver, MemorySessionStore]:
    store = MemorySessionStore(clock=clock)
    store.reset_at = reset_at
    recorder = Recorder(telemetry.meter_provider, telemetry.logger_provider)
    return Receiver(store, recorder, SessionRules(), clock=clock), store


def test_a_store_found_emptied_adopts_the_sessions_it_lost_instead_of_counting_them_again(
    telemetry: MemoryTelemetry, clock: FakeClock
) -> None:
    # The heartbeat sample has heartbeatInterval 60: a gap adds at most 75 s.
    receiver, _ = adopting_receiver(telemetry, clock, reset_at=clock() - 70)
    heartbeat = receiver.handle(sample_payload("v2-heartbeat.json"))
    assert (heartbeat.started, heartbeat.duration) == (False, 0.0)  # adopted: its gap is lost
    assert sessions(telemetry) == 0
    end = receiver.handle(sample_payload("v2-end.json"))
    assert not end.started and end.duration > 0  # tracked from then on
    assert sessions(telemetry) == 0


def test_a_start_or_an_event_after_the_window_is_counted_as_a_new_session(
    telemetry: MemoryTelemetry, clock: FakeClock
) -> None:
    receiver, _ = adopting_receiver(telemetry, clock, reset_at=clock() - 76)
    assert receiver.handle(sample_payload("v2-heartbeat.json")).started  # past 1.25 x 60 s
    receiver, _ = adopting_receiver(telemetry, clock, reset_at=clock())
    assert receiver.handle(sample_payload("v2-start.json")).started  # a start is always new


# -- HTTP: 503, 500, /readyz, /healthz ----------------------------------------------------------


def test_write_answers_503_with_retry_after_while_the_store_is_down(
    make_app: AppFactory, telemetry: MemoryTelemetry
) -> None:
    store = FlakyStore()
    client = falcon.testing.TestClient(make_app(store=store, telemetry=telemetry))
    store.down = True
    result = client.simulate_post("/write", body=sample_payload("v2-start.json"))
    assert result.status_code == 503 and result.headers["Retry-After"] == "1"
    assert "nothing was recorded" in result.json["error"]
    assert result.json["error"].startswith("session store 'flaky': disk I/O error")
    assert sessions(telemetry) == 0 and outcomes(telemetry) == {"store_unavailable": 1}
    assert client.simulate_get("/readyz").status_code == 503
    assert client.simulate_get("/healthz").status_code == 200
    store.down = False
    time.sleep(1.05)  # the guard's retry_after
    assert (
        client.simulate_post("/write", body=sample_payload("v2-start.json")).status == "201 Created"
    )
    assert client.simulate_get("/readyz").json == {
        "ready": True, "store": "ok", "exporters": {}
    }  # fmt: skip


def test_healthz_touches_nothing(make_app: AppFactory) -> None:
    class Broken(FlakyStore):
        def __getattribute__(self, name: str) -> Any:
            if name in ("apply", "get", "mark", "ping", "sweep", "__len__", "secret"):
                raise AssertionError(f"/healthz called the store's {name}")
            return super().__getattribute__(name)

    client = falcon.testing.TestClient(make_app(store=Broken()))
    assert client.simulate_get("/healthz").text == "ok\n"


def test_a_fault_of_the_receiver_is_a_500_and_one_traceback_per_place_per_interval(
    make_app: AppFactory, telemetry: MemoryTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(telemetry=telemetry)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug in the recorder")

    app.receiver.recorder.record = broken  # type: ignore[method-assign]
    client = falcon.testing.TestClient(app)
    caplog.set_level(logging.ERROR)
    for _ in range(50):
        result = client.simulate_post("/write", body=sample_payload("v2-start.json"))
        assert result.status_code == 500
    assert result.json == {"error": "internal error (RuntimeError); it is logged", "path": ""}
    lines = [r for r in caplog.records if r.getMessage().startswith("Internal error")]
    assert len(lines) == 1 and lines[0].exc_info is not None
    assert outcomes(telemetry) == {"internal_error": 50}


# -- the log stream ---------------------------------------------------------------------------


def test_a_full_pipe_never_blocks_the_writer_and_what_does_not_fit_is_counted() -> None:
    read_end, write_end = os.pipe()
    stream: IO[str] = os.fdopen(write_end, "w")
    sink = LineSink(stream, max_pending=64 * 1024)
    line = 'level=info msg="Received session data" ' + "x" * 60 + "\n"
    done = threading.Event()

    def write_many() -> None:
        for _ in range(20_000):  # 2 MB: the pipe holds 64 KiB, the queue 64 KiB
            sink.write(line)
        done.set()

    threading.Thread(target=write_many, daemon=True).start()
    assert done.wait(30), "a write blocked on the full pipe"
    assert sink.dropped["backlog"] > 0 and sink.dropped["error"] == 0
    received = bytearray()

    def drain() -> None:
        while chunk := os.read(read_end, 65_536):
            received.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    assert sink.flush(10)
    stream.close()
    reader.join(10)
    lines = received.decode().splitlines(keepends=True)
    assert set(lines) == {line}
    assert len(lines) + sink.dropped["backlog"] == 20_000  # every line written or counted
    os.close(read_end)


def test_a_stream_that_fails_drops_and_counts_the_lines() -> None:
    class FullDisk(io.StringIO):
        def fileno(self) -> int:
            return 1  # an OS file, so the sink writes from its thread

        def write(self, text: str) -> int:
            raise OSError(28, "No space left on device")

    sink = LineSink(FullDisk())
    for _ in range(10):
        sink.write("a line\n")
    assert sink.flush(5)
    assert sink.dropped == {"backlog": 0, "error": 10}


def test_the_log_failing_never_fails_a_recorded_payload(
    make_app: AppFactory, telemetry: MemoryTelemetry
) -> None:
    class Closed(io.StringIO):
        def write(self, text: str) -> int:
            raise ValueError("I/O operation on closed file")

    app = make_app(Settings(new_series_delay=0), stream=Closed())
    client = falcon.testing.TestClient(app)
    for _ in range(3):
        assert (
            client.simulate_post("/write", body=sample_payload("v2-start.json")).status_code == 201
        )
    text = client.simulate_get("/metrics").text
    assert 'grafana_analytics_log_lines_dropped_total{reason="error"} 3.0' in text
    assert "grafana_analytics_sessions_total{" in text


# -- the workers' shared table ------------------------------------------------------------------


def test_with_a_shared_table_a_payload_is_counted_in_it_before_it_is_answered(
    make_app: AppFactory, tmp_path: Path
) -> None:
    settings = Settings(
        session_store=f"sqlite://{tmp_path}/sessions.db",
        prometheus_multiproc_dir=str(tmp_path),
        multiproc_export_interval=3600.0,  # no timed collection in this test
    )
    app = make_app(settings, stream=io.StringIO())
    for name in ("v2-start.json", "v2-heartbeat.json", "v2-end.json"):
        app.receiver.handle(sample_payload(name))
    # Another worker's view: the file itself, read before any collection of this process.
    table = LmdbSeries(str(tmp_path / SERIES_FILE), 10_000)
    got = {f.name: sum(s.value for s in f.series) for f in table.families()}
    assert got["grafana_analytics_sessions"] == 1
    assert got["grafana_analytics_sessions_duration"] == 135.0
    assert app.telemetry.exposition is not None
    app.telemetry.scrape("")  # a collection: the SDK's own points of them are not added again
    got = {f.name: sum(s.value for s in f.series) for f in table.families()}
    assert got["grafana_analytics_sessions"] == 1
    table.close()


def test_counts_the_table_cannot_take_are_kept_and_added_at_the_next_collection() -> None:
    class FailsOnce(MemorySeries):
        failures = 1

        def absorb(self, families: Any) -> None:
            if self.failures:
                self.failures -= 1
                raise OSError(errno.ENOSPC, "No space left on device")
            super().absorb(families)

    from opentelemetry.sdk.metrics import MeterProvider

    table = FailsOnce(100)
    reader = SeriesReader(table, interval=3600.0)
    provider = MeterProvider(metric_readers=[reader])
    counter = provider.get_meter("t").create_counter("things")
    counter.add(2, {"a": "1"})
    reader.collect()  # the table refuses: the deltas are kept
    counter.add(3, {"a": "1"})
    reader.collect()
    values = {f.name: [s.value for s in f.series] for f in table.families()}
    assert values["things"] == [5.0]
    provider.shutdown()


def test_a_tally_the_table_refuses_is_kept_for_the_next_collection(tmp_path: Path) -> None:
    class Refuses(LmdbSeries):
        def tally(self, families: Any) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

    from opentelemetry.sdk.metrics import MeterProvider

    table = Refuses(str(tmp_path / SERIES_FILE), 100)
    reader = SeriesReader(table, interval=3600.0, tallied=COUNTERS)
    provider = MeterProvider(metric_readers=[reader])
    reader.tally([("grafana_analytics_sessions", {"dashboard_uid": "d"}, 1.0)])
    reader.families()  # a collection (the provider has no instrument: the SDK gives nothing)
    families: list[Family] = table.families()
    assert [(f.name, [s.value for s in f.series]) for f in families] == [
        ("grafana_analytics_sessions", [1.0])
    ]
    provider.shutdown()
