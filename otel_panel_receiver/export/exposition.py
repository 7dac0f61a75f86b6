"""``/metrics``: OpenTelemetry points as Prometheus families, exact where Prometheus reads them.

Prometheus takes the first sample it stores of a counter series as that series' baseline and
counts only what comes after it: a series first scraped at 3 (three sessions) adds 0 to
``increase()``, not 3. Most series of this receiver are new (a dashboard or a viewer seen for the
first time) and hold few sessions, so most sessions would be lost to ``increase()``. So a counter
series is exposed **at 0** for ``delay`` seconds after its first exposure, then with its true
value: every scraper whose interval is shorter than the delay stores the zero first, and counts
everything after it. Nothing is lost or counted twice: the values themselves are never changed,
only withheld for a while. First exposures are remembered with the series (``series.py``: in
memory, or with several workers in their shared file, so every worker answers a scrape the same
way).

Histogram series (the browser metrics') are held the same way, every bucket with their count
and sum. The same rule holds for cumulative counters and histograms pushed over OTLP
(:func:`hold_new_series`): a collector that turns them into Prometheus remote writes, or
VictoriaMetrics, also takes a series' first value as its baseline, while a backend that reads
the points' start times loses nothing by the zeros (the start time is kept).

With ``created``, the OpenMetrics exposition also carries ``_created`` for each counter series
(when it began counting), for backends that turn a created timestamp into a zero sample
themselves (Prometheus 3 with ``--enable-feature=created-timestamp-zero-ingestion``). It is off
by default: every Prometheus without that flag stores ``_created`` as one more series per
counter series (seen with 2.42 and 3.5.3).

The text is prometheus_client's, byte for byte. Its encoders check and escape every label name
of every sample (tens of µs a series: 2,000 series took 90 to 140 ms, in a worker whose event
loop serves the payloads meanwhile), so the counter and gauge families whose names need no
escaping, the bulk of a page, are written here: the family's ``# HELP``, ``# TYPE`` and
``# UNIT`` lines by prometheus_client's encoder (given the family without its samples), then
one line per sample, its label values escaped as the encoder does. Histograms, names that need
escaping, an ``escaping`` other than underscores or UTF-8, and the process metrics go through
the encoder whole; ``tests/test_exposition.py`` holds both paths to the same bytes.

With ``process``, a scrape also carries the standard ``process_*`` metrics of the process that
answers it (prometheus_client's collector: CPU seconds, memory, open files, start time). The
service asks for them only when it runs one worker: with several, each scrape would show a
different worker, so they are left out, as prometheus_client's multiprocess mode does.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

import msgspec
from opentelemetry.exporter.prometheus._mapping import (  # private: see pyproject.toml's bound
    map_unit,
    sanitize_attribute,
    sanitize_full_name,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    HistogramDataPoint,
    Metric,
    MetricsData,
    Sum,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics_core import Metric as PrometheusFamily
from prometheus_client.openmetrics.exposition import ALLOWUTF8, UNDERSCORES
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

__all__ = [
    "ADDITIVE",
    "Exposition",
    "Exposures",
    "Family",
    "Kind",
    "Labels",
    "MemoryExposures",
    "Series",
    "families_from_otel",
    "hold_new_series",
    "prometheus_name",
    "series_key",
]

Labels = tuple[tuple[str, str], ...]
_KEYS: Final = msgspec.json.Encoder()


Kind = Literal["counter", "gauge", "histogram"]
#: The kinds whose series only add up: held at 0 when new, summed across workers.
ADDITIVE: Final = frozenset({"counter", "histogram"})


@dataclass(frozen=True, slots=True)
class Series:
    """One series of a family: its labels, its value, and when it began (unix s, 0: unknown).

    A histogram's ``value`` is the sum of its observations and ``buckets`` the count of
    observations in each bucket (not cumulative): one per bound of its family, then ``+Inf``.
    """

    labels: Labels
    value: float
    created: float = 0.0
    buckets: tuple[float, ...] = ()

    def zero(self) -> Series:
        """Return this series with nothing counted yet (what a new series shows at first)."""
        return Series(self.labels, 0.0, self.created, (0.0,) * len(self.buckets))


@dataclass(slots=True)
class Family:
    """One metric as Prometheus shows it: ``name`` without ``_total`` and without the unit.

    ``bounds``: a histogram's bucket bounds (increasing, ``+Inf`` implied). ``ttl``: a gauge
    series not set for that many seconds leaves ``/metrics`` (0: it stays).
    """

    name: str
    kind: Kind
    help: str
    unit: str
    series: list[Series] = field(default_factory=list)
    bounds: tuple[float, ...] = ()
    ttl: float = 0.0

    def key(self, labels: Labels) -> str:
        """Return the text that names one series of this family across processes."""
        return series_key(self.name, self.unit, labels)


def series_key(name: str, unit: str, labels: Labels) -> str:
    """Return the text that names one series of a family across processes."""
    return _KEYS.encode((name, unit, labels)).decode()


def prometheus_name(metric: Metric) -> tuple[str, str]:
    """Return the family name and unit the OTel Prometheus exporter gives ``metric``."""
    return sanitize_full_name(metric.name), map_unit(metric.unit or "")


def families_from_otel(
    data: MetricsData | None, *, skip_scopes: Collection[str] = ()
) -> list[Family]:
    """Return the families of OTel metrics: monotonic sums are counters, the rest gauges.

    Label keys are sanitised as the OTel Prometheus exporter does; a counter series'
    ``created`` is its point's start time (for a cumulative sum, when the SDK first recorded
    the series; for a delta, when its interval began). Metrics of ``skip_scopes`` (an
    instrumentation scope's name) are left out.
    """
    out: list[Family] = []
    if data is None:
        return out
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            if sm.scope.name in skip_scopes:
                continue
            for metric in sm.metrics:
                family = _family(metric)
                if family is not None:
                    out.append(family)
    return out


def _family(metric: Metric) -> Family | None:
    data = metric.data
    counter = isinstance(data, Sum) and data.is_monotonic
    if not counter and not isinstance(data, Gauge | Sum):
        return None  # histograms: the browser metrics', which reach the table another way
    name, unit = prometheus_name(metric)
    family = Family(name, "counter" if counter else "gauge", metric.description or "", unit)
    for point in data.data_points:
        created = point.start_time_unix_nano / 1e9 if counter else 0.0
        family.series.append(
            Series(labels_of(point.attributes), float(point.value), created)  # type: ignore[union-attr]
        )
    return family


def labels_of(attributes: Mapping[str, Any] | None) -> Labels:
    """Return OTel attributes as Prometheus labels, keys sanitised as the OTel exporter does."""
    keys = _LABEL_KEYS
    return tuple(
        (keys.get(key) or _label_key(key), value if type(value) is str else _label_value(value))
        for key, value in (attributes or {}).items()
    )


_LABEL_KEYS: dict[str, str] = {}  # attribute key -> label name: the receiver's, an embedder's


def _label_key(key: str) -> str:
    label = sanitize_attribute(key)
    if len(_LABEL_KEYS) < 1024:  # keys are few; a flood of odd ones is not kept
        _LABEL_KEYS[key] = label
    return label


def counter_family(name: str, unit: str, description: str, series: list[Series]) -> Family:
    """Return the family the OTel Prometheus exporter would make of a counter and its series."""
    return named_family("counter", name, unit, description, series)


def named_family(
    kind: Kind,
    name: str,
    unit: str,
    description: str,
    series: list[Series],
    *,
    bounds: tuple[float, ...] = (),
    ttl: float = 0.0,
) -> Family:
    """Return the family of an OTel instrument's name and unit, as its exporter names it."""
    name, unit = sanitize_full_name(name), map_unit(unit)
    return Family(name, kind, description, unit, series, bounds, ttl)


def _label_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Exposures(Protocol):
    """When each counter series was first exposed to a scraper."""

    def first(self, keys: Sequence[str], now: float) -> list[float]:
        """Return each key's first exposure, recording ``now`` for keys never exposed."""
        ...


class MemoryExposures:
    """First exposures of this process's series (one worker)."""

    def __init__(self) -> None:
        self._first: dict[str, float] = {}
        self._lock = threading.Lock()

    def first(self, keys: Sequence[str], now: float) -> list[float]:
        """Return each key's first exposure, recording ``now`` for keys never exposed."""
        with self._lock:
            return [self._first.setdefault(key, now) for key in keys]

    def forget(self, keys: Sequence[str]) -> None:
        """Forget ``keys`` (their exposure did not reach the backend)."""
        with self._lock:
            for key in keys:
                self._first.pop(key, None)


class Exposition:
    """Answer scrapes: families from ``source``, new counter series at 0 for ``delay`` seconds.

    ``delay`` 0 exposes every value at once (for scrapers that count a series' first sample,
    such as VictoriaMetrics, or for tests). With ``created``, OpenMetrics scrapes get each
    counter series' ``_created``; with ``process``, the ``process_*`` metrics of this process.
    """

    def __init__(
        self,
        source: Callable[[], list[Family]],
        *,
        delay: float,
        created: bool = False,
        process: bool = False,
        exposures: Exposures | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._source = source
        self.delay = delay
        self.created = created
        # registry=None: the collector is read here only, never through the global registry.
        self._process = ProcessCollector(registry=None) if process else None
        self._exposures = exposures if exposures is not None else MemoryExposures()
        self._clock = clock
        #: The ``{...}`` of each series on the last page, by its family's keys and its labels.
        self._rendered: dict[tuple[tuple[str, ...], Labels], str] = {}

    def families(self) -> list[Family]:
        """Return the families as a scrape now sees them (new counter series held at 0)."""
        families = self._source()
        if self.delay <= 0:
            return families
        keys = [
            family.key(series.labels)
            for family in families
            if family.kind in ADDITIVE
            for series in family.series
        ]
        if not keys:
            return families
        now = self._clock()
        young = iter([now - first < self.delay for first in self._exposures.first(keys, now)])
        for family in families:
            if family.kind in ADDITIVE:
                family.series = [s.zero() if next(young) else s for s in family.series]
        return families

    def scrape(self, accept: str = "") -> tuple[bytes, str]:
        """Return ``/metrics``' body and content type: OpenMetrics if ``accept`` asks for it."""
        encoder, content_type = choose_encoder(accept)
        openmetrics = content_type.startswith("application/openmetrics-text")
        created = self.created and openmetrics
        families = self.families()
        escaping = _ESCAPING.search(content_type)
        if escaping is not None and escaping.group(1) not in (UNDERSCORES, ALLOWUTF8):
            return encoder(
                _Collected(families, created=created, process=self._process)
            ), content_type

        def encoded(family: PrometheusFamily | None, process: ProcessCollector | None) -> str:
            text = encoder(_Collected([], created=False, process=process, extra=family)).decode()
            return text.removesuffix(_EOF) if openmetrics else text

        parts: list[str] = []
        rendered, kept = self._rendered, {}
        for family in families:
            keys = _label_keys(family)
            head = _head(family, keys)
            if head is None:  # a histogram, or names to escape: all by the encoder
                parts.append(encoded(_prometheus_family(family, created=created), None))
                continue
            parts.append(encoded(head, None))  # its HELP, TYPE and UNIT lines
            sample = f"{head.name}_total" if family.kind == "counter" else head.name
            start = f"{head.name}_created"
            for series in family.series:
                labels = rendered.get((keys, series.labels))
                if labels is None:
                    labels = _label_text(series.labels, keys)
                kept[keys, series.labels] = labels
                parts.append(f"{sample}{labels} {floatToGoString(series.value)}\n")  # type: ignore[no-untyped-call]
                if created and series.created:
                    parts.append(f"{start}{labels} {floatToGoString(series.created)}\n")  # type: ignore[no-untyped-call]
        self._rendered = kept  # the label sets of this page: bounded by the table
        if self._process is not None:
            parts.append(encoded(None, self._process))
        if openmetrics:
            parts.append(_EOF)
        return "".join(parts).encode(), content_type


def hold_new_series(
    data: MetricsData, *, delay: float, exposures: Exposures, now: float
) -> tuple[MetricsData, list[str]]:
    """Return ``data`` with each cumulative counter and histogram point at 0 for ``delay`` s.

    The rule of :class:`Exposition`, for points pushed over OTLP: the first point a backend
    stores of a new series is 0, whatever it makes of start times. Delta points are never held
    (a held delta would be lost). Also return the keys of the series first seen now, which the
    caller forgets again if the export fails.
    """
    if delay <= 0:
        return data, []
    new: list[str] = []
    held = dataclasses.replace(
        data,
        resource_metrics=[
            dataclasses.replace(
                rm,
                scope_metrics=[
                    dataclasses.replace(
                        sm, metrics=[_hold(m, delay, exposures, now, new) for m in sm.metrics]
                    )
                    for sm in rm.scope_metrics
                ],
            )
            for rm in data.resource_metrics
        ],
    )
    return held, new


def _hold(metric: Metric, delay: float, exposures: Exposures, now: float, new: list[str]) -> Metric:
    data = metric.data
    if not (
        ((isinstance(data, Sum) and data.is_monotonic) or isinstance(data, HistogramData))
        and data.aggregation_temporality is AggregationTemporality.CUMULATIVE
    ):
        return metric
    points: list[Any] = list(data.data_points)
    keys = [
        _KEYS.encode((metric.name, sorted((p.attributes or {}).items()))).decode() for p in points
    ]
    firsts = exposures.first(keys, now)
    new += [key for key, first in zip(keys, firsts, strict=True) if first == now]
    held = [
        _nothing_yet(point) if now - first < delay else point
        for point, first in zip(points, firsts, strict=True)
    ]
    changed: Any = data  # a Sum or a Histogram: both have data_points
    return dataclasses.replace(metric, data=dataclasses.replace(changed, data_points=held))


def _nothing_yet(point: Any) -> Any:
    """Return a cumulative point with nothing counted (its start time kept)."""
    if isinstance(point, HistogramDataPoint):
        return dataclasses.replace(
            point, count=0, sum=0, bucket_counts=[0] * len(point.bucket_counts), min=0, max=0
        )
    return dataclasses.replace(point, value=0)


_EOF: Final = "# EOF\n"
_ESCAPING: Final = re.compile(r"escaping=([\w-]+)")
#: Names every escaping written here leaves as they are: legacy label names, not reserved
#: (``__``), which are also legacy metric names.
_PLAIN_NAME: Final = re.compile(r"(?!__)[a-zA-Z_][a-zA-Z0-9_]*")


def _head(family: Family, keys: tuple[str, ...]) -> PrometheusFamily | None:
    """Return a counter's or gauge's family without samples (what its ``# HELP``, ``# TYPE``
    and ``# UNIT`` lines are made of), or ``None`` when a name it would write needs escaping
    or it is a histogram."""
    if family.kind == "histogram":
        return None
    kind = GaugeMetricFamily if family.kind == "gauge" else CounterMetricFamily
    head = kind(family.name, family.help, labels=keys, unit=family.unit)
    match = _PLAIN_NAME.fullmatch
    if match(head.name) is None or any(match(key) is None for key in keys):
        return None
    return head


def _label_text(labels: Labels, keys: Sequence[str]) -> str:
    """Return the ``{...}`` of a series as prometheus_client's encoders write it: every key of
    its family in order, "" where it has none, each value escaped."""
    if not keys:
        return ""
    values = _row(labels, keys)
    return (
        "{" + ",".join(f'{k}="{_escape_value(v)}"' for k, v in zip(keys, values, strict=True)) + "}"
    )


def _escape_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Collected:
    """What prometheus_client's encoders read: an object whose ``collect()`` gives families
    (``extra``: one more, already converted)."""

    def __init__(
        self,
        families: list[Family],
        *,
        created: bool,
        process: ProcessCollector | None,
        extra: PrometheusFamily | None = None,
    ) -> None:
        self._families = families
        self._created = created
        self._process = process
        self._extra = extra

    def collect(self) -> Iterator[PrometheusFamily]:
        for family in self._families:
            yield _prometheus_family(family, created=self._created)
        if self._extra is not None:
            yield self._extra
        if self._process is not None:
            yield from self._process.collect()


def _prometheus_family(family: Family, *, created: bool) -> PrometheusFamily:
    keys = _label_keys(family)
    rows = [(_row(series.labels, keys), series) for series in family.series]
    if family.kind == "gauge":
        gauge = GaugeMetricFamily(family.name, family.help, labels=keys, unit=family.unit)
        for row, series in rows:
            gauge.add_metric(row, series.value)
        return gauge
    if family.kind == "histogram":
        return _histogram(family, keys, rows, created=created)
    counter = CounterMetricFamily(family.name, family.help, labels=keys, unit=family.unit)
    for row, series in rows:
        counter.add_metric(
            row, series.value, created=series.created if created and series.created else None
        )
    return counter


def _label_keys(family: Family) -> tuple[str, ...]:
    """Return the label keys of every series of the family, sorted: each series gets every key,
    "" where it has none (as the OTel exporter writes them)."""
    return tuple(sorted({key for series in family.series for key, _ in series.labels}))


def _row(labels: Labels, keys: Sequence[str]) -> list[str]:
    """Return the values of ``labels`` in the order of ``keys``, "" for a key it lacks."""
    values = dict(labels)
    return [values.get(key, "") for key in keys]


def _histogram(
    family: Family, keys: Sequence[str], rows: list[tuple[list[str], Series]], *, created: bool
) -> PrometheusFamily:
    bounds = [floatToGoString(bound) for bound in family.bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
    histogram = HistogramMetricFamily(family.name, family.help, labels=keys, unit=family.unit)
    for row, series in rows:
        total, cumulative = 0.0, []
        for le, count in zip(bounds, series.buckets, strict=True):
            total += count
            cumulative.append((le, total))
        histogram.add_metric(row, cumulative, series.value)
        if created and series.created:
            histogram.samples.append(
                Sample(f"{histogram.name}_created", dict(zip(keys, row, strict=True)),
                       series.created)
            )  # fmt: skip
    return histogram
