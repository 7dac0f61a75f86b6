"""The series behind /metrics: bounded per metric, and one table for several workers."""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import time
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client.parser import text_string_to_metric_families

from otel_panel_receiver.config import Settings
from otel_panel_receiver.export.exposition import Exposition, Family, Series
from otel_panel_receiver.export.providers import session_views
from otel_panel_receiver.export.series import (
    RETIRED,
    SERIES_FILE,
    LmdbSeries,
    MemorySeries,
    SeriesReader,
    SeriesTable,
    clear_directory,
)
from otel_panel_receiver.receiver import Receiver
from otel_panel_receiver.recorder import Recorder
from otel_panel_receiver.stores import MemorySessionStore
from otel_panel_receiver.testing import sample_payload
from tests.support.otlp_sink import OtlpSink

if TYPE_CHECKING:
    from collections.abc import Callable

    from otel_panel_receiver.app import ReceiverApp
    from otel_panel_receiver.testing import MemoryTelemetry
    from tests.conftest import AppFactory

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Worker:
    """One simulated worker: its own provider and reader, the shared table and session store."""

    def __init__(self, path: Path, store: MemorySessionStore) -> None:
        self.reader = SeriesReader(LmdbSeries(str(path / SERIES_FILE), 100), interval=3600)
        self.provider = MeterProvider(
            metric_readers=[self.reader], views=session_views(), shutdown_on_exit=False
        )
        self.receiver = Receiver(store, Recorder(self.provider, None))

    def flush(self) -> None:
        self.reader.collect()

    def exit(self) -> None:
        self.provider.shutdown()


def merged(path: Path) -> str:
    """Return the exposition any worker serves from the shared table, values at once."""
    table = LmdbSeries(str(path / SERIES_FILE), 100)
    try:
        return Exposition(table.families, delay=0, exposures=table).scrape()[0].decode()
    finally:
        table.close()


def samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        if family.name.startswith("grafana_analytics_sessions"):
            for s in family.samples:
                out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


SESSION = ("v2-start.json", "v2-heartbeat.json", "v2-end.json")


def test_two_workers_sum_to_what_one_process_shows(tmp_path: Path, make_app: AppFactory) -> None:
    clear_directory(str(tmp_path))
    store = MemorySessionStore()
    a, b = Worker(tmp_path, store), Worker(tmp_path, store)
    # One session's events spread over both workers, another session on b only.
    a.receiver.handle(sample_payload(SESSION[0]))
    b.receiver.handle(sample_payload(SESSION[1]))
    a.receiver.handle(sample_payload(SESSION[2]))
    b.receiver.handle(sample_payload("v2-variables-multi.json"))
    a.flush()
    b.flush()
    summed = samples(merged(tmp_path))

    single = make_app(Settings(disable_session_log=True, new_series_delay=0))
    for name in (*SESSION, "v2-variables-multi.json"):
        single.receiver.handle(sample_payload(name))
    assert summed == samples(single.telemetry.scrape()[0].decode())
    assert sum(v for (n, _), v in summed.items() if n.endswith("sessions_total")) == 2


def test_help_and_type_lines_match_the_single_process_exposition(tmp_path: Path) -> None:
    worker = Worker(tmp_path, MemorySessionStore())
    worker.receiver.handle(sample_payload(SESSION[1]))
    worker.flush()
    text = merged(tmp_path)
    assert "# HELP grafana_analytics_sessions_total Number of sessions.\n" in text
    assert "# TYPE grafana_analytics_sessions_total counter\n" in text
    assert (
        "# HELP grafana_analytics_sessions_duration_seconds_total Duration of sessions.\n" in text
    )
    assert 'grafana_host="grafana.example.com"' in text


def test_counters_do_not_go_back_when_a_worker_is_recycled(tmp_path: Path) -> None:
    store = MemorySessionStore()
    first = Worker(tmp_path, store)
    first.receiver.handle(sample_payload(SESSION[0]))
    first.receiver.handle(sample_payload(SESSION[1]))
    first.exit()  # its last deltas are written at shutdown
    before = samples(merged(tmp_path))
    second = Worker(tmp_path, store)
    second.receiver.handle(sample_payload(SESSION[2]))
    second.flush()
    after = samples(merged(tmp_path))
    assert all(after[key] >= value for key, value in before.items())
    assert sorted(v for (n, _), v in after.items() if "duration" in n) == [135.0]


def test_clear_directory_removes_a_previous_runs_table(tmp_path: Path) -> None:
    worker = Worker(tmp_path, MemorySessionStore())
    worker.receiver.handle(sample_payload(SESSION[0]))
    worker.exit()
    assert (tmp_path / SERIES_FILE).exists()
    clear_directory(str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_build_telemetry_serves_the_shared_files_when_a_directory_is_set(
    tmp_path: Path, make_app: AppFactory
) -> None:
    settings = Settings(
        prometheus_multiproc_dir=str(tmp_path), disable_session_log=True, new_series_delay=0
    )
    app = make_app(settings)
    for name in SESSION:
        app.receiver.handle(sample_payload(name))
    app.telemetry.force_flush()
    text = app.telemetry.scrape()[0].decode()
    assert (tmp_path / SERIES_FILE).exists()
    assert [v for (n, _), v in samples(text).items() if "duration" in n] == [135.0]


def family(name: str, *labels: str, value: float = 1.0) -> Family:
    return Family(name, "counter", "help", "", [Series((("a", x),), value, 1.0) for x in labels])


def series_of(table: SeriesTable, name: str) -> dict[str, float]:
    [found] = [f for f in table.families() if f.name == name]
    return {dict(s.labels)["a"]: s.value for s in found.series}


@pytest.fixture(params=["memory", "lmdb"])
def table(request: pytest.FixtureRequest, tmp_path: Path) -> SeriesTable:
    if request.param == "memory":
        return MemorySeries(limit=3)
    return LmdbSeries(str(tmp_path / SERIES_FILE), limit=3)


def test_past_the_limit_the_least_recently_updated_series_is_retired(table: SeriesTable) -> None:
    table.absorb([family("c", "x", "y", "z")])
    table.absorb([family("c", "x")])  # x is now the most recent
    table.absorb([family("c", "new")])
    assert series_of(table, "c") == {"x": 2.0, "z": 1.0, "new": 1.0}  # y was the oldest
    [retired] = [f for f in table.families() if f.name == RETIRED]
    assert [(dict(s.labels), s.value) for s in retired.series] == [({"metric": "c"}, 1.0)]


def test_retirement_follows_the_updates_made_since_the_series_were_added(
    table: SeriesTable,
) -> None:
    for label in ("x", "y", "z"):  # added in turn: x the oldest
        table.absorb([family("c", label)])
    table.absorb([family("c", "x")])  # updated since: the recency is now y, z, x
    table.absorb([family("c", "y")])  # z, x, y
    table.absorb([family("c", "new")])
    assert set(series_of(table, "c")) == {"x", "y", "new"}  # z was the least recently updated
    table.absorb([family("c", "y")])  # x, new, y
    table.absorb([family("c", "newer")])
    assert series_of(table, "c") == {"new": 1.0, "y": 3.0, "newer": 1.0}
    table.absorb([family("c", "last")])  # new goes: y and newer came after it
    assert set(series_of(table, "c")) == {"y", "newer", "last"}
    [retired] = [f for f in table.families() if f.name == RETIRED]
    assert [s.value for s in retired.series] == [3.0]


def test_a_flood_keeps_the_table_bounded_and_real_traffic_afterwards_in_its_own_series(
    table: SeriesTable, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="otel_panel_receiver"):
        for i in range(0, 2000, 100):
            table.absorb([family("c", *(f"junk{j}" for j in range(i, i + 100)))])
        table.absorb([family("c", "real", value=5)])
    rows = series_of(table, "c")
    assert len(rows) == 3 and rows["real"] == 5.0
    retired = [f for f in table.families() if f.name == RETIRED]
    assert [s.value for s in retired[0].series] == [1998.0]
    assert [dict(s.labels) for s in retired[0].series] == [{"metric": "c"}]
    assert len(caplog.records) == 1  # one line, not 1998: the rest are counted


def test_a_retired_series_that_comes_back_starts_again_from_0_as_a_new_series(
    table: SeriesTable,
) -> None:
    table.absorb([family("c", "x", value=7)])
    key = family("c", "x").key((("a", "x"),))
    assert table.first([key], 100.0) == [100.0]  # exposed
    table.absorb([family("c", "p", "q", "r")])  # x retired
    table.absorb([family("c", "x", value=2)])
    assert series_of(table, "c")["x"] == 2.0
    assert table.first([key], 500.0) == [500.0]  # new again: held at 0 by the exposition


def test_workers_writing_one_table_share_one_bound(tmp_path: Path) -> None:
    a = LmdbSeries(str(tmp_path / SERIES_FILE), limit=3)
    b = LmdbSeries(str(tmp_path / SERIES_FILE), limit=3)
    a.absorb([family("c", "1", "2")])
    b.absorb([family("c", "3", "4")])
    assert len(series_of(a, "c")) == 3 and series_of(a, "c") == series_of(b, "c")
    a.close()
    b.close()


def flood_body(i: int) -> bytes:
    """A session start of its own, on a dashboard of its own."""
    return (
        b'{"uuid":"%08x-0000-4000-8000-000000000000","type":"start","time":1700000000,'
        b'"host":{"hostname":"g.example.com"},"dashboard":{"name":"junk-%d","uid":"u%d"}}'
        % (i, i, i)
    )


@pytest.mark.parametrize(("workers", "otlp"), [(1, False), (2, False), (1, True)])
def test_a_burst_of_new_label_sets_between_two_collections_never_overflows_the_sdk(
    make_app: AppFactory, tmp_path: Path, workers: int, otlp: bool
) -> None:
    # No timed collection happens during the test (interval 1 h): 30 new label sets arrive
    # where the SDK keeps 10 between collections, then a real dashboard. The payload counters
    # reach the table straight from the recorder, so the SDK's bound never applies to them,
    # even where an OTLP reader has them recorded in the SDK too.
    settings = Settings(
        metric_cardinality_limit=10, multiproc_export_interval=3600, new_series_delay=0,
        disable_session_log=True,
        prometheus_multiproc_dir=str(tmp_path) if workers > 1 else "",
    )  # fmt: skip
    with contextlib.ExitStack() as stack:
        if otlp:
            sink = stack.enter_context(OtlpSink())
            settings = dataclasses.replace(settings, otlp_endpoint=sink.url)
        burst(make_app(settings))


def test_a_burst_recorded_in_the_sdk_alone_is_collected_before_it_overflows(
    make_app: AppFactory, make_telemetry: Callable[[Settings], MemoryTelemetry]
) -> None:
    # Telemetry without the table's tally (the in-memory one of otel_panel_receiver.testing,
    # or an embedder's own): the counters reach the table through the SDK, and the receiver's
    # hook (SeriesReader.recorded) collects every limit // 2 payloads, before the SDK folds a
    # real label set into otel_metric_overflow.
    settings = Settings(
        metric_cardinality_limit=10, multiproc_export_interval=3600, new_series_delay=0,
        disable_session_log=True,
    )  # fmt: skip
    telemetry = make_telemetry(settings)
    assert telemetry.tally is None and telemetry.recorded is not None
    burst(make_app(settings, telemetry=telemetry))


def burst(app: ReceiverApp) -> None:
    for i in range(30):
        app.receiver.handle(flood_body(i))
    app.receiver.handle(sample_payload("v2-start.json"))
    text = app.telemetry.scrape()[0].decode()
    assert "otel_metric_overflow" not in text
    sessions = [
        labels for (name, labels), _ in samples(text).items()
        if name == "grafana_analytics_sessions_total"
    ]  # fmt: skip
    assert len(sessions) == 10
    assert any(("dashboard_uid", "ZQZXRMXMk") in labels for labels in sessions)


def _tally_in_process(path: str, count: int, barrier: Barrier) -> None:
    table = LmdbSeries(path, limit=10)
    family = Family("grafana_analytics_sessions", "counter", "Number of sessions.", "",
                    [Series((("a", "x"),), 1.0, 1.0)])  # fmt: skip
    barrier.wait(30)
    for _ in range(count):
        table.tally([family])
        table.first([family.key(family.series[0].labels)], 5.0)
    table.close()


def test_workers_tallying_one_series_at_once_lose_no_increment(tmp_path: Path) -> None:
    path = str(tmp_path / SERIES_FILE)
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters, as the workers are
    barrier = ctx.Barrier(3)
    procs = [ctx.Process(target=_tally_in_process, args=(path, 500, barrier)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    table = LmdbSeries(path, limit=10)
    assert series_of(table, "grafana_analytics_sessions") == {"x": 1500.0}
    table.close()


def histogram(*observations: float, bounds: tuple[float, ...] = (1.0, 5.0)) -> Family:
    """A histogram family with one series holding ``observations`` (bucketed here)."""
    counts = [0.0] * (len(bounds) + 1)
    for value in observations:
        counts[next((i for i, b in enumerate(bounds) if value <= b), len(bounds))] += 1
    point = Series((("a", "x"),), sum(observations), 1.0, tuple(counts))
    return Family("h", "histogram", "help", "", [point], bounds)


def test_histogram_buckets_and_sums_add_up_in_either_table(table: SeriesTable) -> None:
    table.absorb([histogram(0.5, 3.0)])
    table.tally([histogram(7.0, 1.0, 1.0)])
    [found] = [f for f in table.families() if f.name == "h"]
    assert found.kind == "histogram" and found.bounds == (1.0, 5.0)
    [point] = found.series
    assert point.buckets == (3.0, 1.0, 1.0) and point.value == 12.5


def test_a_histogram_series_is_retired_whole(table: SeriesTable) -> None:
    for name in "pqrs":  # the limit is 3
        h = histogram(2.0)
        h.series = [Series((("a", name),), 2.0, 1.0, (0.0, 1.0, 0.0))]
        table.absorb([h])
    [found] = [f for f in table.families() if f.name == "h"]
    assert sorted(dict(s.labels)["a"] for s in found.series) == ["q", "r", "s"]
    assert all(s.buckets == (0.0, 1.0, 0.0) for s in found.series)


def gauge(value: float, ttl: float, *labels: str) -> Family:
    return Family("g", "gauge", "help", "", [Series((("a", x),), value) for x in labels], (), ttl)


def test_a_gauge_not_set_for_its_ttl_leaves_the_table(table: SeriesTable) -> None:
    table.absorb([gauge(3.0, 0.3, "old", "kept")])
    time.sleep(0.2)
    table.absorb([gauge(4.0, 0.3, "kept")])
    time.sleep(0.2)  # "old" was set 0.4 s ago, "kept" 0.2 s ago
    assert series_of(table, "g") == {"kept": 4.0}
    time.sleep(0.2)
    assert [f for f in table.families() if f.name == "g"] == []
    table.absorb([gauge(5.0, 0.3, "old")])  # back, as a new series
    assert series_of(table, "g") == {"old": 5.0}


def test_an_expired_gauge_frees_its_place_under_the_limit(tmp_path: Path) -> None:
    table = LmdbSeries(str(tmp_path / SERIES_FILE), limit=3)
    table.absorb([gauge(1.0, 0.2, "a", "b", "c")])
    time.sleep(0.3)
    assert [f for f in table.families() if f.name == "g"] == []  # deleted from the file
    table.absorb([gauge(2.0, 0.2, "d", "e", "f")])
    assert series_of(table, "g") == {"d": 2.0, "e": 2.0, "f": 2.0}
    assert [f for f in table.families() if f.name == RETIRED] == []  # none retired: room
    table.close()


def test_counting_points_is_tallying_their_families_retirements_and_first_exposures_too(
    table: SeriesTable,
) -> None:
    from otel_panel_receiver.export.series import point_families

    reference = MemorySeries(limit=3)
    meta = ("c", "counter", "help", "", (), 0.0)
    x, y = (family("c").key((("a", name),)) for name in "xy")
    for names in (["x", "y", "x"], ["z"], ["w", "x"], ["v"], ["x", "x"]):  # past the limit
        points = [(meta, (("a", name),), 1.5) for name in names]
        table.count(points, 10.0)
        reference.tally(point_families(points, 10.0))
        if names == ["x", "y", "x"]:
            assert table.first([x, y], 1.0) == [1.0, 1.0]  # both exposed
    assert series_of(table, "c") == series_of(reference, "c") == {"w": 1.5, "x": 7.5, "v": 1.5}
    retired = {f.name: [s.value for s in f.series] for f in table.families()}[RETIRED]
    assert retired == [2.0]  # y, then z: the least recently updated
    assert table.first([x, y], 99.0) == [1.0, 99.0]  # y, retired, forgot its first exposure


def test_the_reader_tallies_by_label_content_whichever_dict_carries_it() -> None:
    tallied = {"grafana_analytics_sessions": ("{session}", "Sessions.")}
    reader = SeriesReader(MemorySeries(limit=100), interval=3600, tallied=tallied)
    shared = {"a": "x"}
    for attrs in (shared, shared, {"a": "x"}, {"a": "y"}, shared):
        reader.tally([("grafana_analytics_sessions", attrs, 1.0)])
    [found] = [f for f in reader.table.families() if f.name == "grafana_analytics_sessions"]
    assert {dict(s.labels)["a"]: s.value for s in found.series} == {"x": 4.0, "y": 1.0}
    reader.shutdown()
