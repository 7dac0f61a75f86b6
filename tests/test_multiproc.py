"""Several workers, one /metrics: OTel deltas summed through shared files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from prometheus_client.parser import text_string_to_metric_families

from otel_panel_receiver.config import Settings
from otel_panel_receiver.export.exposition import Exposition
from otel_panel_receiver.export.multiproc import (
    MultiprocessBridge,
    clear_directory,
    files_families,
    mark_process_dead,
)
from otel_panel_receiver.export.providers import session_views
from otel_panel_receiver.receiver import Receiver
from otel_panel_receiver.recorder import Recorder
from otel_panel_receiver.stores import MemorySessionStore
from otel_panel_receiver.testing import sample_payload

if TYPE_CHECKING:
    from tests.conftest import AppFactory

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Worker:
    """One simulated worker: its own provider and bridge, a shared session store."""

    def __init__(self, path: Path, pid: int, store: MemorySessionStore) -> None:
        self.bridge = MultiprocessBridge(str(path), pid=lambda: pid)
        self.reader = PeriodicExportingMetricReader(self.bridge, export_interval_millis=10**9)
        self.provider = MeterProvider(
            metric_readers=[self.reader], views=session_views(), shutdown_on_exit=False
        )
        self.receiver = Receiver(store, Recorder(self.provider, None))

    def flush(self) -> None:
        self.provider.force_flush()

    def exit(self) -> None:
        self.provider.shutdown()


def merged(path: Path) -> str:
    """Return the exposition any worker serves from the files in ``path``, values at once."""
    return Exposition(lambda: files_families(str(path)), delay=0).scrape()[0].decode()


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
    a, b = Worker(tmp_path, 101, store), Worker(tmp_path, 102, store)
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
    worker = Worker(tmp_path, 7, MemorySessionStore())
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
    first = Worker(tmp_path, 201, store)
    first.receiver.handle(sample_payload(SESSION[0]))
    first.receiver.handle(sample_payload(SESSION[1]))
    first.exit()  # its last deltas are written at shutdown
    mark_process_dead(201, str(tmp_path))
    before = samples(merged(tmp_path))
    second = Worker(tmp_path, 202, store)
    second.receiver.handle(sample_payload(SESSION[2]))
    second.flush()
    after = samples(merged(tmp_path))
    assert all(after[key] >= value for key, value in before.items())
    assert sorted(v for (n, _), v in after.items() if "duration" in n) == [135.0]


def test_clear_directory_removes_a_previous_runs_files(tmp_path: Path) -> None:
    worker = Worker(tmp_path, 301, MemorySessionStore())
    worker.receiver.handle(sample_payload(SESSION[0]))
    worker.exit()
    clear_directory(str(tmp_path))
    assert list(tmp_path.glob("*.db")) == []


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
    assert list(tmp_path.glob("counter_*.db"))
    assert [v for (n, _), v in samples(text).items() if "duration" in n] == [135.0]
