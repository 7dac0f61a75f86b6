"""Correct ``/metrics`` with several worker processes: OTel deltas summed through shared files.

Each worker has its own MeterProvider, and a scrape reaches one worker at random. So with
several workers each provider exports **delta** sums every ``interval`` to this bridge, which
adds them into the worker's own file in the shared directory (``counter_<pid>.db``, in
prometheus_client's mmap format); every worker answers ``/metrics`` with the sum of all files,
those of exited workers included (:func:`files_families`). The OTel instruments, Views and
names are unchanged; counters never go back when a worker is recycled; ``/metrics`` lags by up
to one ``interval``, and a worker's last deltas are written when it exits (its providers are
shut down in gunicorn's ``worker_exit``). Each counter series also keeps, as its entry's
timestamp, when it began (the start of its first delta): its ``_created``.
"""

from __future__ import annotations

import glob
import os
import threading
from collections.abc import Callable
from typing import Any, Final

import msgspec
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
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from prometheus_client.mmap_dict import MmapedDict  # private: see pyproject.toml's bound

from otel_panel_receiver.export.exposition import Family, Series, families_from_otel

__all__ = [
    "EXPOSURES_DIRECTORY",
    "MultiprocessBridge",
    "clear_directory",
    "files_families",
    "mark_process_dead",
]

_DELTA: Final = AggregationTemporality.DELTA
_CUMULATIVE: Final = AggregationTemporality.CUMULATIVE
#: The subdirectory of the metrics directory where first exposures are kept (exposition.py).
EXPOSURES_DIRECTORY: Final = "exposures"

# An entry's key: family name, kind, help, unit, labels.
_Key = tuple[str, str, str, str, tuple[tuple[str, str], ...]]
_ENCODE: Final = msgspec.json.Encoder()
_DECODE: Final = msgspec.json.Decoder(_Key)


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
        """Add each counter delta to its entry; write each gauge's latest value."""
        with self._lock:
            for family in families_from_otel(metrics_data):  # sums are deltas here
                self._write(family)
        return MetricExportResult.SUCCESS

    def _write(self, family: Family) -> None:
        counter = family.kind == "counter"
        entries = self._file("counter" if counter else "gauge")
        for series in family.series:
            key = _ENCODE.encode(
                (family.name, family.kind, family.help, family.unit, series.labels)
            ).decode()
            if counter:
                value, began = entries.read_value(key)
                began = min(began, series.created) if value or began else series.created
                entries.write_value(key, value + series.value, began)
            else:  # a gauge is per process: the latest value, the live maximum across workers
                entries.write_value(key, series.value, 0.0)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Nothing is buffered: every export is written at once."""
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Close this process's files (their values stay for the other workers)."""
        with self._lock:
            for mmap_file in self._files.values():
                mmap_file.close()
            self._files.clear()


def files_families(path: str) -> list[Family]:
    """Return the families of every worker's files in ``path``: counters summed, gauges' maximum.

    A counter series' ``created`` is the earliest start any worker wrote for it.
    """
    counters: dict[_Key, tuple[float, float]] = {}
    gauges: dict[_Key, float] = {}
    for filename in glob.glob(os.path.join(path, "*.db")):
        kind = os.path.basename(filename).split("_", 1)[0]
        try:
            entries = MmapedDict.read_all_values_from_file(filename)
        except FileNotFoundError:  # a dead worker's gauges, removed since the listing
            continue
        for raw, value, began, _ in entries:
            key = _DECODE.decode(raw)
            if kind == "counter":
                total, first = counters.get(key, (0.0, began))
                counters[key] = (total + value, min(first, began))
            elif kind == "gauge":
                gauges[key] = max(gauges.get(key, value), value)
    families: dict[tuple[str, str, str, str], Family] = {}
    for (name, _, help_text, unit, labels), (total, first) in counters.items():
        family = families.get((name, "counter", help_text, unit))
        if family is None:
            family = families[name, "counter", help_text, unit] = Family(
                name, "counter", help_text, unit
            )
        family.series.append(Series(labels, total, first))
    for (name, _, help_text, unit, labels), value in gauges.items():
        family = families.get((name, "gauge", help_text, unit))
        if family is None:
            family = families[name, "gauge", help_text, unit] = Family(
                name, "gauge", help_text, unit
            )
        family.series.append(Series(labels, value))
    return list(families.values())


def mark_process_dead(pid: int, path: str) -> None:
    """Drop a dead worker's gauges from ``path``; its counters stay, so totals never go back."""
    for filename in glob.glob(os.path.join(path, f"gauge_{pid}.db")):
        os.remove(filename)


def clear_directory(path: str) -> None:
    """Create ``path`` or remove the files a previous run left in it (call before forking)."""
    os.makedirs(path, exist_ok=True)
    for pattern in ("*.db", os.path.join(EXPOSURES_DIRECTORY, "*.db")):
        for filename in glob.glob(os.path.join(path, pattern)):
            os.remove(filename)
