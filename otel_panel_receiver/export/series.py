"""The series ``/metrics`` serves: cumulative sums per label set, bounded per metric.

The SDK hands the :class:`SeriesReader` **deltas** once a second (and at every scrape); with
delta temporality its own storage empties at each collection, so it never holds more than one
interval's label sets. A flood can bring more new label sets in one interval than the SDK keeps
(``limit`` per metric, past which it folds them into one ``otel_metric_overflow`` point). Where
the payload counters reach the table through the SDK (telemetry without the tally below, such
as ``otel_panel_receiver.testing``'s), the receiver has the reader collect at once, in the
recording thread, after every ``limit // 2`` recorded payloads (:meth:`SeriesReader.recorded`):
a payload adds at most one label set to each metric, so the SDK's storage never reaches its
limit and no real label set is folded away. The service's counters come by the tally, and it
makes no early collections.

The reader adds the deltas into a table of cumulative series: in memory for one process
(:class:`MemorySeries`), in an LMDB file shared by the worker processes of a host
(:class:`LmdbSeries`), so any worker answers a scrape with everybody's counts. The payload
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

import functools
import hashlib
import logging
import os
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import lmdb
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
    ADDITIVE,
    Family,
    Labels,
    Series,
    counter_family,
    families_from_otel,
    labels_of,
    series_key,
)
from otel_panel_receiver.memo import Memo
from otel_panel_receiver.stores.lmdb import Mapped
from otel_panel_receiver.throttle import Throttle

__all__ = [
    "RETIRED",
    "SERIES_FILE",
    "LmdbSeries",
    "MemorySeries",
    "SeriesReader",
    "SeriesTable",
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
SERIES_FILE: Final = "series.mdb"
_Meta = tuple[str, str, str, str, tuple[float, ...], float]  # name, kind, help, unit, bounds, ttl
#: One increment of a counter's series: its family's meta, its labels, the increment.
Point = tuple[_Meta, Labels, float]
#: A point as the LMDB table writes it: the series' hash, labels, value or delta, created,
#: a histogram's bucket counts; and a family's points with its meta and metric hash.
_Point = tuple[bytes, Labels, float, float, tuple[float, ...]]
_Keyed = tuple[_Meta, bytes, list[_Point]]


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

    def count(self, points: Sequence[Point], created: float) -> None:
        """Add counter increments into their series, as :meth:`tally` of their families."""
        self.tally(point_families(points, created))

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
    touched: float
    buckets: list[float] | None = None

    def add(self, kind: str, point: Series) -> None:
        """Add a counter's or histogram's delta; set a gauge's value."""
        if kind == "gauge":
            self.value = point.value
            return
        self.value += point.value
        if point.buckets:
            if self.buckets is None:
                self.buckets = list(point.buckets)
            else:
                self.buckets = [a + b for a, b in zip(self.buckets, point.buckets, strict=True)]


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
        now = self._clock()
        with self._lock:
            for family in families:
                gone = self._absorb(family, now)
                if gone:
                    retired[family.name] = gone
            if retired:
                self._absorb(self._retired_family(retired), now)
        for name, gone in retired.items():
            self._report(name, gone)

    def _absorb(self, family: Family, now: float) -> int:
        """Absorb one family's points (under the lock); return how many series it retired."""
        meta = _meta(family)
        rows = self._rows(meta)
        retired = 0
        for series in family.series:
            row, gone = self._row(rows, meta, series.labels, series.created, now)
            row.add(family.kind, series)
            retired += gone
        return retired

    def count(self, points: Sequence[Point], created: float) -> None:
        """Add counter increments into their series: :meth:`tally` without the families."""
        retired: dict[str, int] = {}
        now = self._clock()
        tables = self._tables
        with self._lock:
            for meta, labels, value in points:
                rows = tables.get(meta)  # _rows(meta), without the call: each payload
                if rows is None:
                    rows = self._rows(meta)
                row = rows.get(labels)
                if row is not None:  # _row() for a series the table has, without the call
                    row.touched = now
                    rows.move_to_end(labels)
                else:
                    row, gone = self._row(rows, meta, labels, created, now)
                    if gone:
                        retired[meta[0]] = retired.get(meta[0], 0) + gone
                row.value += value
            if retired:
                self._absorb(self._retired_family(retired), now)
        for name, gone in retired.items():
            self._report(name, gone)

    def _rows(self, meta: _Meta) -> OrderedDict[Labels, _Row]:
        rows = self._tables.get(meta)
        if rows is None:
            rows = self._tables[meta] = OrderedDict()
        return rows

    def _row(
        self,
        rows: OrderedDict[Labels, _Row],
        meta: _Meta,
        labels: Labels,
        created: float,
        now: float,
    ) -> tuple[_Row, int]:
        """Return the series' row, touched now and moved to the most recent end (under the
        lock), and how many series a new one retired: the least recently updated, past the
        limit."""
        retired = 0
        row = rows.pop(labels, None)
        if row is None:
            if len(rows) >= self.limit:
                old, _ = rows.popitem(last=False)
                self._exposed.pop(series_key(meta[0], meta[3], old), None)
                retired = 1
            row = _Row(0.0, created, now)
        row.touched = now
        rows[labels] = row
        return row, retired

    def families(self) -> list[Family]:
        """Return every series now (a gauge's not set for its ``ttl`` forgotten)."""
        now = self._clock()
        with self._lock:
            for (*_, ttl), rows in self._tables.items():
                if ttl:  # least recently set first
                    while rows and now - next(iter(rows.values())).touched > ttl:
                        rows.popitem(last=False)
            return [
                Family(name, kind, help_text, unit,  # type: ignore[arg-type]
                       [Series(labels, row.value, row.created, tuple(row.buckets or ()))
                        for labels, row in rows.items()],
                       bounds, ttl)
                for (name, kind, help_text, unit, bounds, ttl), rows in self._tables.items()
                if rows
            ]  # fmt: skip

    def first(self, keys: Sequence[str], now: float) -> list[float]:
        """Return each series' first exposure, recording ``now`` for those never exposed."""
        with self._lock:
            return [self._exposed.setdefault(key, now) for key in keys]


#: Label sets whose conversion from attributes is remembered by a reader.
_LABELS_KEPT: Final = 4096

#: What a table raises when it cannot take counts now (a full disk, a full map).
_REFUSALS: Final = (lmdb.Error, OSError)
_NAMES: Final = (b"series", b"age", b"counts")
#: value, created, first exposure (0: never), touched, aged (its key's place in ``age``), parts
#: (a histogram's buckets), followed by the parts (doubles) and the row's JSON.
_HEAD: Final = struct.Struct(">dddQQH")
_AGE: Final = struct.Struct(">8sQ16s")  # the metric's hash, aged, the series' hash
_COUNT: Final = struct.Struct(">Q")
_ENCODE: Final = msgspec.json.Encoder()
_RowMeta = tuple[str, str, str, str, Labels, tuple[float, ...], float]
_ROW: Final = msgspec.json.Decoder(_RowMeta)
#: Series whose hash is remembered by a table, by metric and label set (bounded, emptied when
#: full), and whose decoded names a scrape remembers.
_HASHES_KEPT: Final = 16_384
_FIRST_MAP_BYTES: Final = 32 << 20
_PER_SERIES_BYTES: Final = 8 << 10


def _hash(text: str | bytes, size: int = 16) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return hashlib.blake2b(data, digest_size=size).digest()


class LmdbSeries(SeriesTable):
    """The series of every worker process of a host, in one LMDB file (``path``).

    Each worker adds its deltas before it answers a payload (and every second), each time in
    one short transaction; retirement happens in the same transaction, over
    every worker's series, so the bound is the same however many workers write. Tables:

    * ``series``: the series' hash (16 bytes of the family's key) -> value, created, first
      exposure, touched, aged, a histogram's bucket counts, then the metric's name, kind, help,
      unit, labels, bounds and ttl (JSON);
    * ``age``: the metric's hash, aged, the series' hash: the series of a metric by the time
      they were last placed there, the oldest first, where retirement looks;
    * ``counts``: the metric's hash -> its series.

    ``touched`` is when the series was last updated, the writer's clock in nanoseconds (the
    recency order across processes: one host, one clock; a clock stepped back only makes a few
    series look older). An update does not move the series in ``age``: it writes its row
    alone (each LMDB call lets the GIL go, and under granian each one is a handoff to the
    server's threads, ~3 µs of CPU). Retirement puts it right: a series at the front of
    ``age`` updated since it was placed there (``touched`` after ``aged``) is placed again at
    ``touched`` and passed over, so what it retires is still the least recently updated; each
    move is paid for by an update since the last one. The file is not
    flushed to disk at each commit: it is emptied at every start of the service
    (:func:`clear_directory`), so an OS crash costs it nothing that matters, and a killed
    process loses nothing committed. It grows in allocated steps up to room for ``limit``
    series of a dozen metrics (``stores.lmdb.Mapped``); past that, writes fail like a full
    disk (the reader keeps the deltas for the next collection).
    """

    shared = True

    def __init__(self, path: str, limit: int, clock: Callable[[], float] = time.time) -> None:
        super().__init__(limit, clock)
        self.path = path
        most = _FIRST_MAP_BYTES + limit * _PER_SERIES_BYTES
        self._map = Mapped.attach(path, _NAMES, most=most, subdir=False)
        self._closed = False
        self._hashes: dict[tuple[str, str, Labels], bytes] = {}
        self._names: Memo[str, bytes] = Memo(size=len)  # metric hashes: a few dozen names
        self._rows: dict[bytes, _RowMeta] = {}  # hash -> decoded row

    def _key(self, name: str, unit: str, labels: Labels) -> bytes:
        hashes = self._hashes
        h = hashes.get((name, unit, labels))
        if h is None:
            if len(hashes) >= _HASHES_KEPT:
                hashes.clear()
            h = hashes[name, unit, labels] = _hash(series_key(name, unit, labels))
        return h

    def absorb(self, families: Sequence[Family]) -> None:
        """Add counter deltas into their series; set gauges; retire past the limit."""
        if any(family.series for family in families):
            self._write(self._keyed(families))

    def tally(self, families: Sequence[Family]) -> None:
        """Add one payload's counter deltas in one short transaction."""
        self._write(self._keyed(families))

    def count(self, points: Sequence[Point], created: float) -> None:
        """Add counter increments into their series, in one short transaction."""
        keyed: list[_Keyed] = []
        for meta, labels, value in points:
            h = self._key(meta[0], meta[3], labels)
            keyed.append((meta, self._name(meta[0]), [(h, labels, value, created, ())]))
        self._write(keyed)

    def _name(self, name: str) -> bytes:
        """Return the metric's hash, the prefix of its rows in ``age`` and its ``counts`` key."""
        h = self._names.get(name)
        return self._names.put(name, _hash(name, 8)) if h is None else h

    def _keyed(self, families: Sequence[Family]) -> list[_Keyed]:
        keyed: list[_Keyed] = []
        for family in families:
            name, unit = family.name, family.unit
            points = [
                (self._key(name, unit, s.labels), s.labels, s.value, s.created, s.buckets)
                for s in family.series
            ]
            keyed.append((_meta(family), self._name(name), points))
        return keyed

    def _write(self, keyed: list[_Keyed]) -> None:
        """Write every family's points in one transaction; count and report what was retired."""

        def write(txn: lmdb.Transaction) -> dict[str, int]:
            tick = time.time_ns()
            retired: dict[str, int] = {}
            for meta, name, points in keyed:
                gone = self._put(txn, meta, name, points, tick)
                if gone:
                    retired[meta[0]] = gone
            if retired:
                [(meta, name, points)] = self._keyed([self._retired_family(retired)])
                self._put(txn, meta, name, points, tick)
            return retired

        for name, gone in self._map.run(write).items():
            self._report(name, gone)

    def _put(
        self,
        txn: lmdb.Transaction,
        meta: _Meta,
        name: bytes,
        points: list[_Point],
        tick: int,
    ) -> int:
        """Write one family's points in the open transaction; return how many were retired."""
        series, age, counts = self._map.dbs
        added = 0
        family, kind, help_text, unit, bounds, ttl = meta
        for h, labels, delta, since, deltas in points:
            old = txn.get(h, db=series)
            if old is None:
                row = _ENCODE.encode((family, kind, help_text, unit, labels, bounds, ttl))
                head = _pack(delta, since, 0.0, tick, aged=tick, parts=deltas)
                txn.put(h, head + row, db=series)
                txn.put(_AGE.pack(name, tick, h), b"", db=age)
                added += 1
            else:
                value, created, exposed, _, aged, buckets, end = _unpack(old)
                if kind == "gauge":
                    value = delta
                else:
                    value += delta
                    if buckets:
                        buckets = tuple(a + b for a, b in zip(buckets, deltas, strict=True))
                head = _pack(value, created, exposed, tick, aged=aged, parts=buckets)
                txn.put(h, head + old[end:], db=series)
        if not added:
            return 0
        known = txn.get(name, db=counts)
        count = (_COUNT.unpack(known)[0] if known else 0) + added
        retired = self._retire(txn, name, count - self.limit) if count > self.limit else 0
        txn.put(name, _COUNT.pack(count - retired), db=counts)
        return retired

    def _retire(self, txn: lmdb.Transaction, name: bytes, n: int) -> int:
        """Retire the ``n`` least recently updated series of the metric; return how many.

        A series updated since it was placed in ``age`` is placed again and passed over: at
        most once each, so the walk is bounded by twice the metric's series.
        """
        series, age, _ = self._map.dbs
        retired = 0
        cursor = txn.cursor(age)
        while retired < n and cursor.set_range(name) and cursor.key()[:8] == name:
            h = bytes(cursor.key()[16:])
            old = txn.get(h, db=series)
            cursor.delete()
            if old is None:
                continue
            value, created, exposed, touched, aged, buckets, end = _unpack(old)
            if touched > aged:
                txn.put(_AGE.pack(name, touched, h), b"", db=age)
                head = _pack(value, created, exposed, touched, aged=touched, parts=buckets)
                txn.put(h, head + old[end:], db=series)
                continue
            txn.delete(h, db=series)
            retired += 1
        return retired

    def families(self) -> list[Family]:
        """Return every series now, by metric."""

        def read(txn: lmdb.Transaction) -> list[tuple[bytes, bytes]]:
            return cast("list[tuple[bytes, bytes]]", list(txn.cursor(self._map.dbs[0])))

        rows = self._map.run(read, write=False)
        now = time.time_ns()
        known, decoded = self._rows, {}
        out: dict[_Meta, Family] = {}
        expired: list[tuple[bytes, str, float]] = []
        for h, value in rows:
            point, created, _, touched, _, buckets, end = _unpack(value)
            row = known.get(h) or _ROW.decode(value[end:])
            name, kind, help_text, unit, labels, bounds, ttl = row
            if ttl and now - touched > ttl * 1e9:
                expired.append((h, name, ttl))
                continue
            decoded[h] = row
            meta = (name, kind, help_text, unit, bounds, ttl)
            family = out.get(meta)
            if family is None:
                family = Family(name, kind, help_text, unit, [], bounds, ttl)  # type: ignore[arg-type]
                out[meta] = family
            family.series.append(Series(labels, point, created, buckets))
        self._rows = decoded  # the rows of this scrape: bounded by the table
        if expired:
            self._map.run(functools.partial(self._expire, expired, now))
        for family in out.values():
            family.series.sort(key=lambda s: s.labels)
        return [out[meta] for meta in sorted(out)]

    def _expire(self, expired: list[tuple[bytes, str, float]], now: int, txn: Any) -> None:
        """Delete the gauge series not set for their ttl (unless set since they were read)."""
        series, age, counts = self._map.dbs
        for h, name, ttl in expired:
            old = txn.get(h, db=series)
            if old is None:
                continue
            touched, aged = _HEAD.unpack_from(old)[3:5]
            if now - touched <= ttl * 1e9:
                continue
            metric = _hash(name, 8)
            txn.delete(h, db=series)
            txn.delete(_AGE.pack(metric, aged, h), db=age)
            known = txn.get(metric, db=counts)
            if known:
                txn.put(metric, _COUNT.pack(max(0, _COUNT.unpack(known)[0] - 1)), db=counts)

    def first(self, keys: Sequence[str], now: float) -> list[float]:
        """Return each series' first exposure, recording ``now`` for those never exposed."""
        hashes = [_hash(key) for key in keys]

        def expose(txn: lmdb.Transaction) -> list[float]:
            series = self._map.dbs[0]
            out = []
            for h in hashes:
                old = txn.get(h, db=series)
                if old is None:
                    out.append(now)
                    continue
                value, created, exposed, touched, aged, parts = _HEAD.unpack_from(old)
                if not exposed:
                    exposed = now
                    txn.put(h, _HEAD.pack(value, created, now, touched, aged, parts)
                            + old[_HEAD.size :], db=series)  # fmt: skip
                out.append(exposed)
            return out

        return self._map.run(expose)

    def close(self) -> None:
        """Let this process's environment go; the series stay in the file."""
        if not self._closed:
            self._closed = True
            self._map.detach()


def clear_directory(path: str) -> None:
    """Create the workers' metrics directory, or empty it of a previous run's table.

    Call before the workers start: a restart of the whole service starts its counters from 0.
    """
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.startswith(SERIES_FILE) or name.endswith((".db", ".mdb")):
            os.remove(os.path.join(path, name))


def _meta(family: Family) -> _Meta:
    return family.name, family.kind, family.help, family.unit, family.bounds, family.ttl


def point_families(points: Sequence[Point], created: float) -> list[Family]:
    """Return counter increments as families, one series each."""
    return [
        Family(name, kind, help_text, unit, [Series(labels, value, created)], bounds, ttl)  # type: ignore[arg-type]
        for (name, kind, help_text, unit, bounds, ttl), labels, value in points
    ]


def _pack(
    value: float,
    created: float,
    exposed: float,
    touched: int,
    *,
    aged: int,
    parts: tuple[float, ...],
) -> bytes:
    """Return a series' head: its numbers and a histogram's bucket counts."""
    head = _HEAD.pack(value, created, exposed, touched, aged, len(parts))
    return head + struct.pack(f">{len(parts)}d", *parts) if parts else head


def _unpack(
    raw: bytes | memoryview,
) -> tuple[float, float, float, int, int, tuple[float, ...], int]:
    """Return a series' numbers, bucket counts, and where its JSON begins."""
    value, created, exposed, touched, aged, n = _HEAD.unpack_from(raw)
    end = _HEAD.size + 8 * n
    parts = struct.unpack_from(f">{n}d", raw, _HEAD.size) if n else ()
    return value, created, exposed, touched, aged, parts, end


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
    next collection. Instruments of the ``direct_scopes`` are left out too: what they record
    reaches the table by :meth:`put`. The collecting thread starts with the reader: build it
    in the process that records (after a fork). ``shutdown`` makes a last collection.
    """

    def __init__(
        self,
        table: SeriesTable,
        interval: float = 1.0,
        tallied: Mapping[str, tuple[str, str]] | None = None,
        direct_scopes: Collection[str] = (),
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
            name: _meta(counter_family(name, *meta, [])) for name, meta in self.tallied.items()
        }
        self._skip = {meta[0] for meta in self._tallied_meta.values()}
        self._direct = frozenset(direct_scopes)
        # Attributes seen -> their labels: a payload's label set is almost always one seen
        # before; bounded, emptied when full (clients choose the values). The recorder hands
        # the same attributes dict for the same label set, so it is first looked up by
        # identity (the entry keeps the dict, so its id cannot be reused meanwhile).
        self._labels: dict[tuple[tuple[str, ...], tuple[Any, ...]], Labels] = {}
        self._by_dict: dict[int, tuple[Mapping[str, Any], Labels]] = {}
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
        families = families_from_otel(metrics_data, skip_scopes=self._direct)
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
        except _REFUSALS as exc:
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
        meta, by_dict = self._tallied_meta, self._by_dict
        points: list[Point] = []
        for name, attrs, value in counts:
            entry = by_dict.get(id(attrs))
            if entry is not None and entry[0] is attrs:
                labels = entry[1]
            else:
                labels = self._labels_of(attrs)
                if len(by_dict) >= _LABELS_KEPT:
                    by_dict.clear()
                by_dict[id(attrs)] = (attrs, labels)
            points.append((meta[name], labels, value))
        now = self._clock()
        try:
            self.table.count(points, now)
        except _REFUSALS as exc:
            with self._collecting:
                self._held = _merge([*self._held, *point_families(points, now)])
            self._failed(exc)

    def _labels_of(self, attrs: Mapping[str, Any]) -> Labels:
        # Keys and values apart: two flat tuples of strings hash faster than one of pairs.
        key = (tuple(attrs), tuple(attrs.values()))
        labels = self._labels.get(key)
        if labels is None:
            if len(self._labels) >= _LABELS_KEPT:
                self._labels.clear()
            labels = self._labels[key] = labels_of(attrs)
        return labels

    def put(self, families: list[Family]) -> None:
        """Put counts recorded outside the SDK in the table now (the tallied counters' path).

        Counters and histograms add, gauges are set. If the table cannot take them (a full
        disk), they are kept with the deltas held for the next collection.
        """
        try:
            self.table.tally(families)
        except _REFUSALS as exc:
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
            if before is not None and family.kind in ADDITIVE:
                buckets = tuple(a + b for a, b in zip(before.buckets, point.buckets, strict=True))
                points[point.labels] = Series(
                    point.labels, before.value + point.value, before.created, buckets
                )
            else:
                points[point.labels] = point
    return [
        Family(name, kind, help_text, unit, list(points.values()), bounds, ttl)  # type: ignore[arg-type]
        for (name, kind, help_text, unit, bounds, ttl), points in out.items()
    ]
