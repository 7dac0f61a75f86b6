"""``/metrics`` for Prometheus: new counter series first exposed at 0, nothing lost; _created."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from otel_panel_receiver.app import ReceiverApp, create_app
from otel_panel_receiver.config import Settings
from otel_panel_receiver.export.exposition import Exposition, Family, MemoryExposures, Series
from otel_panel_receiver.export.series import SERIES_FILE, LmdbSeries
from otel_panel_receiver.testing import FakeClock, in_memory_telemetry, sample_payload

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
SESSIONS = "grafana_analytics_sessions_total"
DURATION = "grafana_analytics_sessions_duration_seconds_total"


def values(text: str, name: str) -> list[float]:
    """Return the values of the samples called ``name`` in a text exposition."""
    return [
        s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name
    ]


def counter(labels: tuple[tuple[str, str], ...], value: float, created: float = 0.0) -> Family:
    return Family("c", "counter", "help", "", [Series(labels, value, created)])


class Source:
    """A family source the test changes between scrapes."""

    def __init__(self) -> None:
        self.families: list[Family] = []

    def __call__(self) -> list[Family]:
        return [Family(f.name, f.kind, f.help, f.unit, list(f.series)) for f in self.families]


def test_a_new_counter_series_is_0_until_the_delay_after_its_first_scrape() -> None:
    clock, source = FakeClock(1000.0), Source()
    exposition = Exposition(source, delay=90, clock=clock)
    source.families = [counter((("a", "1"),), 3)]
    assert values(exposition.scrape()[0].decode(), "c_total") == [0.0]
    clock.advance(89.9)
    assert values(exposition.scrape()[0].decode(), "c_total") == [0.0]
    clock.advance(0.1)
    assert values(exposition.scrape()[0].decode(), "c_total") == [3.0]


def test_what_arrives_during_the_delay_is_shown_whole_after_it() -> None:
    clock, source = FakeClock(0.0), Source()
    exposition = Exposition(source, delay=60, clock=clock)
    for total in (1, 2, 5):
        source.families = [counter((("a", "1"),), total)]
        assert [s.value for s in exposition.families()[0].series] == [0.0]
        clock.advance(10)
    clock.advance(60)
    source.families = [counter((("a", "1"),), 7)]
    assert [s.value for s in exposition.families()[0].series] == [7.0]


def test_the_delay_counts_from_the_first_scrape_not_from_the_first_session() -> None:
    clock, source = FakeClock(0.0), Source()
    exposition = Exposition(source, delay=60, clock=clock)
    source.families = [counter((("a", "1"),), 1)]
    clock.advance(3600)  # an hour with no scrape (Prometheus was down)
    assert [s.value for s in exposition.families()[0].series] == [0.0]


def test_each_series_has_its_own_delay_and_gauges_are_never_held() -> None:
    clock, source = FakeClock(0.0), Source()
    exposition = Exposition(source, delay=60, clock=clock)
    gauge = Family("g", "gauge", "help", "", [Series((), 1.0)])
    source.families = [counter((("a", "1"),), 1), gauge]
    assert [s.value for f in exposition.families() for s in f.series] == [0.0, 1.0]
    clock.advance(60)
    source.families = [
        Family("c", "counter", "help", "", [Series((("a", "1"),), 1), Series((("a", "2"),), 4)]),
        gauge,
    ]
    assert [s.value for f in exposition.families() for s in f.series] == [1.0, 0.0, 1.0]


def test_a_delay_of_0_shows_every_value_at_once() -> None:
    source = Source()
    source.families = [counter((("a", "1"),), 3)]
    assert values(Exposition(source, delay=0).scrape()[0].decode(), "c_total") == [3.0]


def app_with(**settings: object) -> ReceiverApp:
    return create_app(Settings(disable_session_log=True, **settings))  # type: ignore[arg-type]


def test_the_app_holds_every_counter_at_0_at_first_and_counts_after_the_delay() -> None:
    app = app_with(new_series_delay=3600)
    for name in ("v2-start.json", "v2-heartbeat.json", "v2-end.json"):
        app.receiver.handle(sample_payload(name))
    text = app.telemetry.scrape()[0].decode()
    assert values(text, SESSIONS) == [0.0] and values(text, DURATION) == [0.0]
    assert values(text, "grafana_analytics_up") == [1.0]
    assert app.telemetry.exposition is not None
    app.telemetry.exposition.delay = 0  # as if the hour had passed
    text = app.telemetry.scrape()[0].decode()
    assert values(text, SESSIONS) == [1.0] and values(text, DURATION) == [135.0]
    app.close()


def test_created_timestamps_are_in_openmetrics_only_and_only_when_asked() -> None:
    app = app_with(new_series_delay=0, openmetrics_created=True)
    app.receiver.handle(sample_payload("v2-start.json"))
    text = app.telemetry.scrape()[0].decode()
    assert "_created" not in text  # the 0.0.4 text format has no place for it
    om = app.telemetry.scrape(OPENMETRICS)[0].decode()
    [created] = values(om, "grafana_analytics_sessions_created")
    assert created > 1_700_000_000
    app.close()
    plain = app_with(new_series_delay=0)
    plain.receiver.handle(sample_payload("v2-start.json"))
    assert "_created" not in plain.telemetry.scrape(OPENMETRICS)[0].decode()
    plain.close()


def test_each_series_carries_its_own_start_time_for_otlp_and_created() -> None:
    clock = FakeClock()
    telemetry = in_memory_telemetry(Settings(new_series_delay=0, openmetrics_created=True))
    app = create_app(Settings(), telemetry=telemetry, clock=clock)
    app.receiver.handle(sample_payload("v2-start.json"))
    other = sample_payload("v2-start.json").replace(b"ZQZXRMXMk", b"other-uid")
    other = other.replace(b"3f0c6a9e-2b7d-4c1e", b"00000000-2b7d-4c1e")
    app.receiver.handle(other)
    data = telemetry.metric_reader.get_metrics_data()
    assert data is not None
    [sessions] = [
        m for m in data.resource_metrics[0].scope_metrics[0].metrics
        if m.name == "grafana_analytics_sessions"
    ]  # fmt: skip
    starts = {
        dict(p.attributes or {})["dashboard_uid"]: p.start_time_unix_nano
        for p in sessions.data.data_points
    }
    assert starts["ZQZXRMXMk"] < starts["other-uid"]  # not the provider's start for both
    om = app.telemetry.scrape(OPENMETRICS)[0].decode()
    created = sorted(values(om, "grafana_analytics_sessions_created"))
    # Each reader keeps its own series, begun within microseconds of each other.
    assert created == pytest.approx(sorted(s / 1e9 for s in starts.values()), abs=0.01)
    app.close()
    telemetry.shutdown()


def test_worker_processes_agree_on_first_exposure_through_their_table(tmp_path: Path) -> None:
    a = LmdbSeries(str(tmp_path / SERIES_FILE), limit=10)
    b = LmdbSeries(str(tmp_path / SERIES_FILE), limit=10)
    c = Family("c", "counter", "help", "", [Series((("k", "x"),), 1.0, 1.0)])
    a.absorb([c])
    key = c.key((("k", "x"),))
    assert a.first([key], 100.0) == [100.0]
    assert b.first([key], 130.0) == [100.0]  # b sees a's record
    a.close()
    b.close()


def test_memory_exposures_forget_everything_with_the_process() -> None:
    first, again = MemoryExposures(), MemoryExposures()  # a restart: every series is new
    assert first.first(["x"], 1.0) == [1.0]
    assert again.first(["x"], 9.0) == [9.0]


# -- the page is prometheus_client's, byte for byte ------------------------------------------

#: What scrapers send: none, Prometheus 2.x's text, OpenMetrics (2.42's Accept), Prometheus 3's
#: UTF-8 names, and the escapings written by prometheus_client itself (dots, values).
ACCEPTS = (
    "",
    "text/plain;version=0.0.4",
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8",
    "text/plain;version=1.0.0;escaping=allow-utf-8",
    "application/openmetrics-text;version=1.0.0;escaping=dots",
    "text/plain;version=1.0.0;escaping=values",
    "application/openmetrics-text",
)
#: Label values a client may send, escapes and all.
HOSTILE = ('a"b', "back\\slash", "new\nline", "", "ünï©ødé 🎛", '\\"\n', "}{,=", "x" * 300)


def hostile_families() -> list[Family]:
    """Counters and gauges with hostile values, a label set missing a key, a unit, no labels,
    names that need escaping, a reserved label name, and a histogram."""
    rows = [
        Series((("dashboard", value), ("user", HOSTILE[-1 - i])), i + 0.5, 1_700_000_000.25)
        for i, value in enumerate(HOSTILE)
    ]
    partial = Series((("dashboard", "only"),), 3.0, 0.0)  # no "user": written user=""
    last = [Series((("dashboard", "d"),), 1.7e9, 0.0), Series((("dashboard", "e"),), 1e22, 0.0)]
    odd = Series((("dash-board", "x"), ("__reserved", "y")), 2.0, 5.0)
    histogram = Series((("a", '"'),), 3.0, 9.0, (1, 2, 0))
    return [
        Family(
            "grafana_analytics_sessions",
            "counter",
            'Sessions "x".\nNew line \\',
            "",
            [*rows, partial],
        ),
        Family("grafana_analytics_sessions_duration", "counter", "Seconds.", "seconds", rows),
        Family("grafana_analytics_tracked", "gauge", "Tracked.", "", [Series((), 7.0, 0.0)]),
        Family("grafana_analytics_last", "gauge", "When.", "seconds", last),
        Family("needs.escaping", "counter", "Dotted.", "", [Series((("a", "1"),), 1.0, 5.0)]),
        Family("c", "counter", "Odd label names.", "", [odd]),
        Family("h", "histogram", "A histogram.", "", [histogram], (0.5, 1.0)),
    ]


@pytest.mark.parametrize("created", [False, True])
@pytest.mark.parametrize("accept", ACCEPTS)
def test_the_page_is_prometheus_clients_own_byte_for_byte(accept: str, created: bool) -> None:
    from prometheus_client.exposition import choose_encoder
    from prometheus_client.process_collector import ProcessCollector

    from otel_panel_receiver.export.exposition import _Collected

    families = hostile_families()
    exposition = Exposition(lambda: families, delay=0, created=created, process=True)
    for _ in range(2):  # the second page from the label texts the first one kept
        page, content_type = exposition.scrape(accept)
        encoder, expected_type = choose_encoder(accept)
        om = content_type.startswith("application/openmetrics-text")
        process = ProcessCollector(registry=None)
        expected = encoder(_Collected(families, created=created and om, process=process))
        assert content_type == expected_type
        # The process metrics are read twice (CPU seconds, memory): the rest must be equal.
        ours, theirs = (
            [line for line in text.decode().splitlines() if not line.startswith("process_")]
            for text in (page, expected)
        )
        assert ours == theirs
        assert any('dashboard="a\\"b"' in line for line in ours)
