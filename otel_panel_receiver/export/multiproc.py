"""Correct ``/metrics`` with several worker processes: OTel deltas into shared counter files.

Each gunicorn worker has its own MeterProvider, and a scrape reaches one worker at random. So
with several workers each provider exports **delta** sums every ``interval`` to this bridge,
which adds them into the worker's own file of prometheus_client's multiprocess format
(``counter_<pid>.db`` in the shared directory); ``/metrics`` is then served by
prometheus_client's ``MultiProcessCollector``, which sums every file, those of dead workers
included. The OTel instruments, Views and names are unchanged; counters never go back when a
worker is recycled; ``/metrics`` lags by up to one ``interval``, and a worker's last deltas
are written when it exits (its providers are shut down in gunicorn's ``worker_exit``).
"""

from __future__ import annotations

import glob
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Final

# A private module of the exporter: the names must be the ones its reader gives. The dependency
# range in pyproject.toml stops at the exporter's next minor release for this import.
from opentelemetry.exporter.prometheus._mapping import map_unit, sanitize_full_name
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    Sum,
)
from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.mmap_dict import MmapedDict, mmap_key

__all__ = [
    "MultiprocessBridge",
    "clear_directory",
    "mark_process_dead",
    "multiprocess_registry",
    "prometheus_name",
]

_DELTA: Final = AggregationTemporality.DELTA
_CUMULATIVE: Final = AggregationTemporality.CUMULATIVE


def prometheus_name(metric: Metric) -> str:
    """Return the family name the OTel Prometheus exporter gives ``metric`` (before ``_total``)."""
    name = sanitize_full_name(metric.name)
    unit = map_unit(metric.unit or "")
    if unit and not name.endswith(f"_{unit}"):
        name = f"{name}_{unit}"
    return name


class MultiprocessBridge(MetricExporter):
    """Add exported deltas into this process's files in a multiprocess directory."""

    def __init__(self, path: str, pid: Callable[[], int] = os.getpid) -> None:
        super().__init__(
            preferred_temporality={
                Counter: _DELTA,
                ObservableCounter: _DELTA,
                Histogram: _DELTA,
                UpDownCounter: _CUMULATIVE,
                ObservableUpDownCounter: _CUMULATIVE,
                ObservableGauge: _CUMULATIVE,
            }
        )
        self._path = path
        self._pid = pid
        self._files: dict[str, MmapedDict] = {}
        self._lock = threading.Lock()

    def _file(self, kind: str) -> MmapedDict:
        mmap_file = self._files.get(kind)
        if mmap_file is None:
            filename = os.path.join(self._path, f"{kind}_{self._pid()}.db")
            mmap_file = self._files[kind] = MmapedDict(filename)
        return mmap_file

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        """Add each monotonic delta to its counter; write each gauge's latest value."""
        now = time.time()
        with self._lock:
            for rm in metrics_data.resource_metrics:
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        self._write(metric, now)
        return MetricExportResult.SUCCESS

    def _write(self, metric: Metric, now: float) -> None:
        data = metric.data
        name = prometheus_name(metric)
        help_text = metric.description or ""
        if isinstance(data, Sum) and data.is_monotonic:
            counters = self._file("counter")
            for point in data.data_points:
                labels = {k: str(v) for k, v in (point.attributes or {}).items()}
                key = mmap_key(
                    name, f"{name}_total", list(labels), list(labels.values()), help_text
                )
                if data.aggregation_temporality is _DELTA:
                    value = counters.read_value(key)[0] + point.value
                else:  # a cumulative sum arrives whole: it replaces
                    value = float(point.value)
                counters.write_value(key, value, now)
        elif isinstance(data, Gauge | Sum):
            # Gauges (and non-monotonic sums) are per process: the live maximum across workers.
            gauges = self._file("gauge_livemax")
            for gpoint in data.data_points:
                labels = {k: str(v) for k, v in (gpoint.attributes or {}).items()}
                key = mmap_key(name, name, list(labels), list(labels.values()), help_text)
                gauges.write_value(key, float(gpoint.value), now)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Nothing is buffered: every export is written at once."""
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Close this process's files (their values stay for the collector)."""
        with self._lock:
            for mmap_file in self._files.values():
                mmap_file.close()
            self._files.clear()


def multiprocess_registry(path: str) -> CollectorRegistry:
    """Return a registry whose collection sums every worker's files in ``path``."""
    registry = CollectorRegistry(auto_describe=False)
    multiprocess.MultiProcessCollector(registry, path=path)
    return registry


def mark_process_dead(pid: int, path: str) -> None:
    """Drop a dead worker's gauges from ``path``; its counters stay, so totals never go back."""
    multiprocess.mark_process_dead(pid, path)


def clear_directory(path: str) -> None:
    """Create ``path`` or remove the files a previous run left in it (call before forking)."""
    os.makedirs(path, exist_ok=True)
    for filename in glob.glob(os.path.join(path, "*.db")):
        os.remove(filename)
