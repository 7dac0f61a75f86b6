"""The series ``/metrics`` serves: cumulative sums per label set, bounded per metric.

The SDK hands the :class:`SeriesReader` **deltas** once a second (and at every scrape); with
delta temporality its own storage empties at each collection, so it never holds more than one
interval's label sets. A flood can bring more new label sets in one interval than the SDK keeps
(``limit`` per metric, past which it folds them into one ``otel_metric_overflow`` point), so the
reader also collects at once, in the recording thread, after every ``limit // 2`` recorded
payloads (:meth:`SeriesReader.recorded`): a payload adds at most one label set to each metric,
so the SDK's storage never reaches its limit and no real label set is folded away.

The reader adds the deltas into a table of cumulative series: in memory for one process
(:class:`MemorySeries`), in an SQLite file shared by the worker processes of a host
(:class:`SqliteSeries`), so any worker answers a scrape with everybody's counts. The payload
counters (sessions, duration, viewers) come to the table straight from the recorder instead
(:meth:`SeriesReader.tally`, before each payload is answered), and the SDK's points of them are
left out of the collections.

Each metric keeps at most ``limit`` label sets. A new label set past the limit **retires** the
least recently updated one: its series leaves ``/metrics`` (a line is logged, at most one per
metric every 10 s, and ``grafana_analytics_series_retired_total{metric}`` counts it), and if
it comes back it starts again from 0 as a new series, which Prometheus reads as a reset (and
``--new-series-delay`` exposes at 0 first). So a flood of junk label sets cannot push real
traffic into one overflow series, and the table, the page and the scrape stay bounded.

The table also remembers when each series was first exposed to a scraper (``first``, the
``Exposures`` of ``exposition.py``); a retired series forgets it with the rest.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
    _Gauge,  # the SDK's synchronous Gauge, exported under this name
)
from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricReader, MetricsData

from otel_panel_receiver.export.exposition import (
    Family,
    Labels,
    Series,
    counter_family,
    families_from_otel,
    labels_of,
)
from otel_panel_receiver.stores.sqlite import WriterLock
from otel_panel_receiver.throttle import Throttle

__all__ = [
    "RETIRED",
    "SERIES_FILE",
    "MemorySeries",
    "SeriesReader",
    "SeriesTable",
    "SqliteSeries",
    "clear_directory",
    "reader_limits",
]

log = logging.getLogger(__name__)

#: The family that counts retired series, by the metric they left.
RETIRED: Final = "grafana_analytics_series_retired"
_RETIRED_HELP: Final = (
    "Series taken out of /metrics to keep each metric within --metric-cardinality-limit "
    "label sets, by metric."
)
_LOG_EVERY: Final = 10.0
#: The shared table's file in the workers' metrics directory.
SERIES_FILE: Final = "series.db"
_Meta = tuple[str, str, str, str]  # name, kind, help, unit


class SeriesTable:
    """What both tables share: the retirement report and its rate-limited log.

    ``shared``: the table is shared by worker processes, which must hand their counts over
    before they answer (:meth:`SeriesReader.recorded`).
    """

    shared = False

    def __init__(self, limit: int, clock: Callable[[], float]) -> None:
        self.limit = limit
        self._clock = clock
        self._throttle = Throttle(_LOG_EVERY)

    def _report(self, metric: str, retired: int) -> None:
        if not retired:
            return
        unlogged = self._throttle.admit(metric, retired)
        if unlogged is None:
            return
        log.warning(
            "Label set limit reached; the least recently updated series were retired",
            extra={
                "fields": {"metric": metric, "limit": self.limit, "retired": unlogged + retired}
            },
        )

    def _retired_family(self, retired: dict[str, int]) -> Family:
        """Return the deltas of the retirement counter: a series of the table like any other."""
        now = self._clock()
        series = [Series((("metric", name),), count, now) for name, count in retired.items()]
        return Family(RETIRED, "counter", _RETIRED_HELP, "", series)

    def absorb(self, families: Sequence[Family]) -> None:
        """Add counter deltas into their series; set gauges to their latest values."""
        raise NotImplementedError

    def tally(self, families: Sequence[Family]) -> None:
        """Add one payload's counter deltas into their series, now (a shared table's path)."""
        self.absorb(families)

    def families(self) -> list[Family]:
        """Return every series now, and the count of retired ones."""
        raise NotImplementedError

    def first(self, keys: Sequence[str], now: float) -> list[float]:
        """Return each series' first exposure, recording ``now`` for those never exposed."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the table holds open."""


@dataclass(slots=True)
class _Row:
    value: float
    created: float


class MemorySeries(SeriesTable):
    """The series of one process, at most ``limit`` label sets per metric."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.time) -> None:
        super().__init__(limit, clock)
        self._lock = threading.Lock()
        self._tables: dict[_Meta, OrderedDict[Labels, _Row]] = {}
        self._exposed: dict[str, float] = {}

    def absorb(self, families: Sequence[Family]) -> None:
        """Add counter deltas into their series; set gauges to their latest values."""
        retired: dict[str, int] = {}
        with self._lock:
            for family in families:
                gone = self._absorb(family)
                if gone:
                    retired[family.name] = gone
            if retired:
                self._absorb(self._retired_family(retired))
        for name, gone in retired.items():
            self._report(name, gone)

    def _absorb(self, family: Family) -> int:
        """Absorb one family's points (under the lock); return how many series it retired."""
        rows = self._tables.setdefault(_meta(family), OrderedDict())
        retired = 0
        for series in family.series:
            row = rows.pop(series.labels, None)
            if row is None:
                if len(rows) >= self.limit:
                    old, _ = rows.popitem(last=False)
                    self._exposed.pop(family.key(old), None)
                    retired += 1
                row = _Row(0.0, series.created)
            row.value = row.value + series.value if family.kind == "counter" else series.value
            rows[series.labels] = row  # the most recently updated at the end
        return retired

    def families(self) -> list[Family]:
        """Return every series now."""
        with self._lock:
            return [
                Family(name, kind, help_text, unit,  # type: ignore[arg-type]
                       [Series(labels, row.value, row.created) for labels, row in rows.items()])
                for (name, kind, help_text, unit), rows in self._tables.items()
                if rows
            ]  # fmt: skip

    def first(self, keys: Sequence[str], now: float) -> list[float]:
        """Return each series' first exposure, recording ``now`` for those never exposed."""
        with self._lock:
            return [self._exposed.setdefault(key, now) for key in keys]


#: Label sets whose conversion from attributes is remembered by a reader.
_LABELS_KEPT: Final = 4096

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS series (
        key TEXT PRIMARY KEY,
        name TEXT NOT NULL, kind TEXT NOT NULL, help TEXT NOT NULL, unit TEXT NOT NULL,
        labels TEXT NOT NULL, value REAL NOT NULL, created REAL NOT NULL,
        exposed REAL NOT NULL DEFAULT 0, touched INTEGER NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS series_by_age ON series (name, touched)",
)
_ADD_COUNTER: Final = """
INSERT INTO series (key, name, kind, help, unit, labels, value, created, touched)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (key) DO UPDATE SET value = value + excluded.value, touched = excluded.touched
"""
_SET_GAUGE: Final = """
INSERT INTO series (key, name, kind, help, unit, labels, value, created, touched)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, touched = excluded.touched
"""
_RETIRE: Final = """
DELETE FROM series WHERE key IN (
    SELECT key FROM series WHERE name = ? ORDER BY touched LIMIT max(0, (
        SELECT count(*) FROM series WHERE name = ?) - ?))
"""
_ENCODE: Final = msgspec.json.Encoder()
_LABELS: Final = msgspec.json.Decoder(Labels)


class SqliteSeries(SeriesTable):
    """The series of every worker process of a host, in one SQLite file (``path``).

    Each worker adds its deltas before it answers a payload (and every second), each time in
    one transaction; retirement happens in the same transaction, over every worker's series,
    so the bound is the same however many workers write. ``touched`` is the writer's clock in
    nanoseconds (the recency order across processes: one host, one clock; a clock stepped
    back only makes a few series look older). A connection must not cross a ``fork``: it is
    opened on first use in each process.
    """

    shared = True

    def __init__(self, path: str, limit: int, clock: Callable[[], float] = time.time) -> None:
        super().__init__(limit, clock)
        self.path = path
        self._lock = threading.Lock()
        self._writer = WriterLock(path + "-lock")  # the workers' writers queue on it
        self._conn: sqlite3.Connection | None = None
        self._pid = 0

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            conn = sqlite3.connect(
                self.path, timeout=10, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            # No fsync: the table lives as long as the service (emptied at each start, see
            # clear_directory), so an OS crash can cost it nothing that matters; a process
            # crash loses nothing committed. 10 us less CPU per payload, 20 us less wait.
            conn.execute("PRAGMA synchronous=OFF")
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA:
                    conn.execute(statement)
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def absorb(self, families: Sequence[Family]) -> None:
        """Add counter deltas into their series; set gauges; retire past the limit."""
        if any(family.series for family in families):
            self._write(families, self._absorb)

    def tally(self, families: Sequence[Family]) -> None:
        """Add one payload's counter deltas in one short transaction.

        A series' count of label sets is checked against the limit only when it may have
        grown: when an added series now holds just its delta (new, or 0 before).
        """
        self._write(families, self._add)

    def _write(
        self,
        families: Sequence[Family],
        step: Callable[[sqlite3.Connection, Family, int], int],
    ) -> None:
        """Write each family with ``step`` in one transaction; count what was retired."""
        retired: dict[str, int] = {}
        with self._lock:
            conn = self._connection()
            with self._writer.held(), conn:
                conn.execute("BEGIN IMMEDIATE")
                tick = time.time_ns()  # the recency order of the workers' writes
                for family in families:
                    gone = step(conn, family, tick)
                    if gone > 0:
                        retired[family.name] = gone
                if retired:
                    self._absorb(conn, self._retired_family(retired), tick)
        for name, gone in retired.items():
            self._report(name, gone)

    def _absorb(self, conn: sqlite3.Connection, family: Family, tick: int) -> int:
        """Write one family's points (in the open transaction); return how many were retired."""
        sql = _ADD_COUNTER if family.kind == "counter" else _SET_GAUGE
        conn.executemany(sql, [_row(family, s, tick) for s in family.series])
        return self._retire(conn, family)

    def _add(self, conn: sqlite3.Connection, family: Family, tick: int) -> int:
        """Add one counter family's deltas; retire only if a series may be new."""
        grew = False
        for series in family.series:
            ((value,),) = conn.execute(
                _ADD_COUNTER + " RETURNING value", _row(family, series, tick)
            ).fetchall()
            grew = grew or value == series.value
        return self._retire(conn, family) if grew else 0

    def _retire(self, conn: sqlite3.Connection, family: Family) -> int:
        return max(0, conn.execute(_RETIRE, (family.name, family.name, self.limit)).rowcount)

    def families(self) -> list[Family]:
        """Return every series now."""
        with self._lock:
            conn = self._connection()
            rows = conn.execute(
                "SELECT name, kind, help, unit, labels, value, created FROM series ORDER BY key"
            ).fetchall()
        out: dict[_Meta, Family] = {}
        for name, kind, help_text, unit, labels, value, created in rows:
            family = out.get((name, kind, help_text, unit))
            if family is None:
                family = out[name, kind, help_text, unit] = Family(name, kind, help_text, unit)
            family.series.append(Series(_LABELS.decode(labels), value, created))
        return list(out.values())

    def first(self, keys: Sequence[str], now: float) -> list[float]:
        """Return each series' first exposure, recording ``now`` for those never exposed."""
        with self._lock:
            conn = self._connection()
            with self._writer.held(), conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(
                    "UPDATE series SET exposed = ? WHERE key = ? AND exposed = 0",
                    [(now, key) for key in keys],
                )
                known = dict(conn.execute("SELECT key, exposed FROM series").fetchall())
        return [known.get(key) or now for key in keys]

    def close(self) -> None:
        """Close this process's connection; the series stay in the file."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
            self._writer.close()


def clear_directory(path: str) -> None:
    """Create the workers' metrics directory, or empty it of a previous run's table.

    Call before the workers start: a restart of the whole service starts its counters from 0.
    """
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.startswith(SERIES_FILE) or name.endswith(".db"):
            os.remove(os.path.join(path, name))


def _meta(family: Family) -> _Meta:
    return family.name, family.kind, family.help, family.unit


def _row(family: Family, series: Series, tick: int) -> tuple[Any, ...]:
    return (
        family.key(series.labels), family.name, family.kind, family.help, family.unit,
        _ENCODE.encode(series.labels).decode(), series.value, series.created, tick,
    )  # fmt: skip


def reader_limits(limit: int) -> dict[type, int]:
    """Return a MetricReader's ``cardinality_limits``: ``limit`` label sets per metric."""
    kinds = (Counter, UpDownCounter, Histogram, _Gauge, ObservableCounter,
             ObservableUpDownCounter, ObservableGauge)  # fmt: skip
    return dict.fromkeys(kinds, limit)


class SeriesReader(MetricReader):
    """Collect the SDK's deltas every ``interval`` seconds (and on demand) into ``table``.

    The SDK keeps at most ``table.limit`` label sets per metric between two collections, and
    :meth:`recorded` collects early enough that they never fill (see the module's docstring).
    With a table the workers share, the payload counters named in ``tallied`` (name -> unit,
    description) reach it by :meth:`tally`, one short transaction per payload before the
    payload is answered, so a worker killed after it answered loses none of them; the SDK's
    points of those counters are then left out of the collections (they would count twice).
    Deltas the table cannot take now (a full disk) are kept, merged, and given again at the
    next collection. The collecting thread starts with the reader: build it in the process
    that records (after a fork). ``shutdown`` makes a last collection.
    """

    def __init__(
        self,
        table: SeriesTable,
        interval: float = 1.0,
        tallied: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        delta, cumulative = AggregationTemporality.DELTA, AggregationTemporality.CUMULATIVE
        super().__init__(
            preferred_temporality={
                Counter: delta,
                ObservableCounter: delta,
                Histogram: delta,
                UpDownCounter: cumulative,
                ObservableUpDownCounter: cumulative,
                ObservableGauge: cumulative,
            },
            cardinality_limits=reader_limits(table.limit),
        )
        self.table = table
        self.tallied = dict(tallied or {})
        # Each tallied instrument's family as the exporter names it, computed once.
        self._tallied_meta = {
            name: (family.name, family.help, family.unit)
            for name, meta in self.tallied.items()
            for family in (counter_family(name, *meta, []),)
        }
        self._skip = {name for name, _, _ in self._tallied_meta.values()}
        # Attributes seen -> their labels: a payload's label set is almost always one seen
        # before; bounded, emptied when full (clients choose the values).
        self._labels: dict[tuple[tuple[str, Any], ...], Labels] = {}
        self._interval = interval
        self._burst = max(1, table.limit // 2)
        self._pending = 0
        self._clock = time.time
        self._collecting = threading.RLock()  # SDK flushes collect too, outside _gather
        self._held: list[Family] = []
        self._received = False  # deltas the table could not take yet
        self._throttle = Throttle(_LOG_EVERY)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="otel-panel-receiver-series", daemon=True
        )
        self._thread.start()

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        families = families_from_otel(metrics_data)
        if self._skip:
            families = [family for family in families if family.name not in self._skip]
        with self._collecting:
            self._absorb(families)

    def _absorb(self, families: list[Family]) -> None:
        """Give the table ``families`` and what it could not take before (under the lock)."""
        self._received = True
        if self._held:
            families = _merge([*self._held, *families])
        try:
            self.table.absorb(families)
        except (sqlite3.Error, OSError) as exc:
            self._held = families  # one point per series: bounded by the limit per metric
            self._failed(exc)
            return
        self._held = []

    def _failed(self, exc: Exception) -> None:
        if (unlogged := self._throttle.admit("absorb")) is not None:
            log.error(
                "Cannot add the counts to the table of series now; they are kept and added "
                "at the next collection",
                extra={"fields": {"reason": str(exc), "not_logged_since_last": unlogged}},
            )

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._gather()
            except Exception:  # the thread must outlive any one collection
                if self._throttle.admit("collect") is not None:
                    log.exception("Collecting the metrics failed; trying again in a second")

    def _gather(self) -> None:
        """Move what was recorded since the last collection into the table."""
        with self._collecting:
            self._pending = 0
            self._received = False
            self.collect()
            if self._held and not self._received:  # the SDK had nothing new to give
                self._absorb([])

    def tally(self, counts: list[tuple[str, dict[str, str], float]]) -> None:
        """Put one payload's increments of the ``tallied`` counters in the table now.

        If the table cannot take them (a full disk), they are kept with the deltas held for
        the next collection: the payload stays recorded, only its durability is delayed.
        """
        if not counts:
            return
        now = self._clock()
        meta, known = self._tallied_meta, self._labels
        families = []
        for name, attrs, value in counts:
            items = tuple(attrs.items())
            labels = known.get(items)
            if labels is None:
                if len(known) >= _LABELS_KEPT:
                    known.clear()
                labels = known[items] = labels_of(attrs)
            family, help_text, unit = meta[name]
            series = [Series(labels, value, now)]
            families.append(Family(family, "counter", help_text, unit, series))
        try:
            self.table.tally(families)
        except (sqlite3.Error, OSError) as exc:
            with self._collecting:
                self._held = _merge([*self._held, *families])
            self._failed(exc)

    def recorded(self) -> None:
        """Count one recorded payload; collect at once after ``limit // 2`` since the last.

        Called after each payload, so that a flood of new label sets cannot fill the SDK's
        storage between two timed collections (a payload adds at most one label set to each
        metric). Without a lock: a count lost to a race delays the collection by one payload,
        within the other half of the limit.
        """
        self._pending += 1
        if self._pending >= self._burst:
            self._gather()

    def families(self) -> list[Family]:
        """Collect what this process recorded since the last collection; return the table."""
        self._gather()
        return self.table.families()

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Stop the thread, make a last collection, close the table."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout_millis / 1000)
        self._gather()
        self.table.close()


def _merge(families: Sequence[Family]) -> list[Family]:
    """Return the families with one point per series: deltas of a counter added, else the last."""
    out: dict[_Meta, dict[Labels, Series]] = {}
    for family in families:
        points = out.setdefault(_meta(family), {})
        for point in family.series:
            before = points.get(point.labels)
            if before is not None and family.kind == "counter":
                points[point.labels] = Series(
                    point.labels, before.value + point.value, before.created
                )
            else:
                points[point.labels] = point
    return [
        Family(name, kind, help_text, unit, list(points.values()))  # type: ignore[arg-type]
        for (name, kind, help_text, unit), points in out.items()
    ]
