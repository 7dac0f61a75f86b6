"""Browser metrics: counters, gauges and histograms pushed from pages, within a schema.

A page posts a batch to ``POST /v1/metrics`` (CORS and auth as ``/write``)::

    {"metrics": [{"name": "js_errors", "labels": {"kind": "error"}},
                 {"name": "page_load", "labels": {"page": "home"}, "value": 1.84},
                 {"name": "open_panels", "value": 3}]}

Only what the schema (``--browser-metrics-schema``, :func:`load_schema`) defines is taken: the
metric names, their label names, and each label's values. A point outside it is left out and
named in the answer (its index, what is wrong, its JSON path) while the rest of its batch is
recorded (202); a batch none of whose points fits is a 400 naming the first. Without a schema
every name is unknown. So a flood of random names or values costs nothing but its answer.

Unlike a Pushgateway's last-value-wins groups, what browsers send is aggregated:

* a **counter** adds each point's ``value`` (1 when left out; never negative);
* a **histogram** counts each ``value`` in its fixed buckets (``le`` the schema's bounds) and
  adds it to the sum;
* a **gauge** takes the latest ``value`` of its label set, and leaves ``/metrics`` (and OTLP)
  when no browser has set it for ``ttl`` seconds.

Counters and histograms add up across browsers, workers and hosts like the panel's counters:
the counts reach the table of series (``export/series.py``; the workers' shared file) before
the batch is answered, and are held at 0 when new (``--new-series-delay``). Over OTLP they are
the SDK's instruments of the scope :data:`~otel_panel_receiver.version.BROWSER_SCOPE`
(cumulative per worker, as every other counter). A metric keeps at most
``--metric-cardinality-limit`` label sets, however many its allowlists would allow.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar

import msgspec
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from otel_panel_receiver.attributes import cut
from otel_panel_receiver.errors import ConfigError
from otel_panel_receiver.events import Intake, InvalidItem, Report, decode_item
from otel_panel_receiver.export.exposition import Family, Labels, Series, named_family
from otel_panel_receiver.model import Viewer
from otel_panel_receiver.payload import validation_error
from otel_panel_receiver.version import BROWSER_SCOPE, __version__

__all__ = [
    "MAX_POINTS",
    "REJECTED",
    "REQUESTS",
    "BrowserMetrics",
    "MetricSpec",
    "Schema",
    "load_schema",
    "parse_schema",
    "schema_setting",
]

#: The request counter of ``/v1/metrics`` (by outcome, like the panel's payloads).
REQUESTS: Final = "grafana_analytics_browser_metric_requests"
#: The counter of points left out of their batch for being outside the schema.
REJECTED: Final = "grafana_analytics_browser_metric_points_rejected"
#: Most points in one batch.
MAX_POINTS: Final = 500

#: The schema's own bounds: metrics, labels per metric, values per label, buckets.
MAX_METRICS: Final = 256
MAX_LABELS: Final = 16
MAX_VALUES: Final = 1000
MAX_BUCKETS: Final = 64
MAX_SCHEMA_BYTES: Final = 1 << 20
#: A gauge's ttl when the schema names none, and the longest allowed (seconds).
DEFAULT_TTL: Final = 300.0
MAX_TTL: Final = 7 * 86_400.0
_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,127}")
_LABEL: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_RESERVED: Final = "grafana_analytics_"
_LONGEST_VALUE: Final = 128

Kind = Literal["counter", "gauge", "histogram"]
T = TypeVar("T")


# -- the schema ---------------------------------------------------------------------------


class _MetricDoc(msgspec.Struct, forbid_unknown_fields=True):
    type: Kind
    help: str = ""
    unit: str = ""
    labels: dict[str, list[str]] = msgspec.field(default_factory=dict)
    buckets: list[float] | None = None
    ttl: float | None = None


class _SchemaDoc(msgspec.Struct, forbid_unknown_fields=True):
    metrics: dict[str, msgspec.Raw]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric a schema allows: its kind, labels and their values, buckets or ttl."""

    name: str
    kind: Kind
    help: str
    unit: str
    labels: Mapping[str, frozenset[str]]
    bounds: tuple[float, ...] = ()
    ttl: float = 0.0

    def family(self, series: list[Series]) -> Family:
        """Return this metric's family in ``/metrics`` with ``series``."""
        return named_family(
            self.kind, self.name, self.unit, self.help, series, bounds=self.bounds, ttl=self.ttl
        )


@dataclass(frozen=True, slots=True)
class Schema:
    """The browser metrics a receiver takes, by name (empty: none)."""

    metrics: Mapping[str, MetricSpec]


def schema_setting(path: str) -> Schema:
    """Return the schema ``--browser-metrics-schema`` names (none: empty); ``ConfigError``."""
    if not path:
        return Schema({})
    try:
        return load_schema(path)
    except ValueError as exc:
        raise ConfigError(f"--browser-metrics-schema: {exc}") from None


def load_schema(path: str) -> Schema:
    """Read and check the schema file at ``path``; raise ``ValueError`` naming what is wrong."""
    try:
        with open(path, "rb") as file:
            text = file.read(MAX_SCHEMA_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"cannot read the browser metrics schema {path}: {exc}") from None
    if len(text) > MAX_SCHEMA_BYTES:
        raise ValueError(f"{path}: larger than {MAX_SCHEMA_BYTES} bytes")
    try:
        return parse_schema(text)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def parse_schema(text: bytes) -> Schema:
    """Return the schema of a JSON document; raise ``ValueError`` naming what is wrong and where.

    The document is ``{"metrics": {NAME: {"type": "counter" | "gauge" | "histogram", "help",
    "unit", "labels": {LABEL: [VALUE, ...]}, "buckets": [...] (histograms), "ttl": seconds
    (gauges)}}}``.
    """
    doc = _decode(text, _SchemaDoc, "")
    if len(doc.metrics) > MAX_METRICS:
        raise ValueError(f"metrics: more than {MAX_METRICS} metrics")
    specs = {
        name: _spec(name, _decode(raw, _MetricDoc, f"metrics.{name}"))
        for name, raw in doc.metrics.items()
    }
    seen: dict[str, str] = {}
    for name, spec in specs.items():
        family = spec.family([])
        exported = family.name  # with the unit, as prometheus_client writes it
        if family.unit and not exported.endswith(f"_{family.unit}"):
            exported = f"{exported}_{family.unit}"
        if exported in seen:
            raise ValueError(
                f"metrics.{name}: exported as {exported}, the name of metrics.{seen[exported]}"
            )
        seen[exported] = name
    return Schema(specs)


def _decode(text: bytes, kind: type[T], at: str) -> T:
    """Decode ``text`` as ``kind``; raise ``ValueError`` naming what is wrong and where."""
    try:
        return msgspec.json.decode(text, type=kind)
    except msgspec.ValidationError as exc:
        error = validation_error(exc)
        where = ".".join(part for part in (at, error.path) if part)
        raise ValueError(f"{where}: {error.message}" if where else error.message) from None
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a JSON document: {exc}") from None


def _spec(name: str, doc: _MetricDoc) -> MetricSpec:
    at = f"metrics.{name}"
    if not _NAME.fullmatch(name):
        raise ValueError(f"{at}: a metric name is a letter then letters, digits or _ (128 at most)")
    if name.startswith(_RESERVED):
        raise ValueError(f"{at}: names beginning with {_RESERVED} are the receiver's own")
    if len(doc.help) > 1024 or len(doc.unit) > 32:
        raise ValueError(f"{at}: help is 1024 characters at most, unit 32")
    if len(doc.labels) > MAX_LABELS:
        raise ValueError(f"{at}.labels: more than {MAX_LABELS} labels")
    labels = {label: _values(f"{at}.labels.{label}", label, values)
              for label, values in doc.labels.items()}  # fmt: skip
    bounds, ttl = _shape(at, doc)
    return MetricSpec(name, doc.type, doc.help, doc.unit, labels, bounds, ttl)


def _values(at: str, label: str, values: list[str]) -> frozenset[str]:
    """Return a label's allowed values; raise ``ValueError`` for a bad name or list."""
    if not _LABEL.fullmatch(label) or label.startswith("__") or label == "le":
        raise ValueError(
            f"{at}: a label name is a letter or _ then letters, digits or _ (64 at most), "
            "neither le nor beginning with __"
        )
    if not values or len(values) > MAX_VALUES:
        raise ValueError(f"{at}: list between 1 and {MAX_VALUES} allowed values")
    if any(not value or len(value) > _LONGEST_VALUE for value in values):
        raise ValueError(f"{at}: a value is 1 to {_LONGEST_VALUE} characters")
    return frozenset(values)


def _shape(at: str, doc: _MetricDoc) -> tuple[tuple[float, ...], float]:
    """Return a histogram's bounds and a gauge's ttl; raise ``ValueError`` for bad ones."""
    if (doc.buckets is not None) != (doc.type == "histogram"):
        raise ValueError(f"{at}: buckets are given for histograms, and only for them")
    if doc.ttl is not None and doc.type != "gauge":
        raise ValueError(f"{at}: ttl is given for gauges only")
    bounds: tuple[float, ...] = ()
    if doc.buckets is not None:
        bounds = tuple(doc.buckets)
        if not 1 <= len(bounds) <= MAX_BUCKETS or not all(map(math.isfinite, bounds)):
            raise ValueError(f"{at}.buckets: between 1 and {MAX_BUCKETS} finite bounds")
        if any(a >= b for a, b in itertools.pairwise(bounds)):
            raise ValueError(f"{at}.buckets: bounds must increase (+Inf is implied)")
    ttl = 0.0
    if doc.type == "gauge":
        ttl = DEFAULT_TTL if doc.ttl is None else doc.ttl
        if not 0 < ttl <= MAX_TTL:
            raise ValueError(f"{at}.ttl: seconds, more than 0 and at most {MAX_TTL:.0f}")
    return bounds, ttl


# -- the endpoint -------------------------------------------------------------------------


class _Batch(msgspec.Struct, forbid_unknown_fields=False):
    metrics: list[msgspec.Raw] | None = None


class _Point(msgspec.Struct, forbid_unknown_fields=False):
    name: str | None = None
    labels: dict[str, Any] | None = None
    value: float | None = None


_BATCH: Final = msgspec.json.Decoder(_Batch)
_POINT: Final = msgspec.json.Decoder(_Point)
#: Put a batch's counts in the table of series before it is answered (``SeriesReader.put``).
Put = Callable[[list[Family]], None]


class BrowserMetrics:
    """Check browser points against ``schema``; record them in the table and the SDK.

    ``put`` receives each batch's families (the table ``/metrics`` serves); ``sdk`` also
    records them in OTel instruments (an OTLP reader, or an embedder's, reads them). ``limit``
    bounds the label sets each gauge keeps for the SDK.
    """

    def __init__(
        self,
        schema: Schema,
        meter_provider: MeterProvider,
        *,
        put: Put | None = None,
        sdk: bool = True,
        limit: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.schema = schema
        self._put = put
        self._clock = clock
        self._intake = Intake(
            meter_provider,
            requests=REQUESTS,
            rejected=REJECTED,
            unit="{point}",
            what="Browser metric point",
            description="Requests to /v1/metrics, by outcome: accepted, or why refused.",
        )
        self.outcomes = self._intake.outcomes
        self._instruments: dict[str, Any] = {}
        if sdk or put is None:
            meter = meter_provider.get_meter(BROWSER_SCOPE, __version__)
            for spec in schema.metrics.values():
                self._instruments[spec.name] = _instrument(meter, spec, limit, clock)

    def batch(self, body: bytes, *, client: str = "", identity: Viewer | None = None) -> Report:
        """Record the points of one batch that fit the schema; name the others in the report.

        Raises ``PayloadError`` for a batch that is not ``{"metrics": [...]}``.
        """
        doc = self._intake.envelope(body, _BATCH.decode, client)
        points = self._intake.items(doc.metrics, "metrics", MAX_POINTS, client)
        report = Report()
        taken: list[tuple[MetricSpec, Labels, float]] = []
        for index, raw in enumerate(points):
            try:
                taken.append(self._point(raw))
            except InvalidItem as exc:
                report.reject(index, exc, "metrics")
        report.accepted = len(taken)
        if taken:
            self._record(taken)
        self._intake.done(report, client)
        return report

    def _point(self, raw: msgspec.Raw) -> tuple[MetricSpec, Labels, float]:
        """Return one point's metric, labels and value; raise ``InvalidItem`` naming the fault."""
        point = decode_item(raw, _POINT.decode, "point")
        if not point.name:
            raise InvalidItem("name is missing: expected a metric's name", ".name")
        spec = self.schema.metrics.get(point.name)
        if spec is None:
            raise InvalidItem(_unknown(point.name, bool(self.schema.metrics)), ".name")
        labels = point.labels or {}
        for label, text in labels.items():
            if type(text) is not str:
                got = _quoted(msgspec.json.encode(text).decode())[1:-1]
                raise InvalidItem(f"a label value must be a string, got {got}", f".labels.{label}")
            allowed = spec.labels.get(label)
            if allowed is None:
                known = ", ".join(sorted(spec.labels)) or "none"
                raise InvalidItem(
                    f"{_quoted(label)} is not a label of {spec.name} (its labels: {known})",
                    f".labels.{label}",
                )
            if text not in allowed:
                raise InvalidItem(
                    f"{_quoted(text)} is not an allowed value of {spec.name}'s label {label}",
                    f".labels.{label}",
                )
        value = point.value
        if value is None:
            if spec.kind != "counter":
                raise InvalidItem(f"value is missing: {spec.name} is a {spec.kind}", ".value")
            value = 1.0
        if not math.isfinite(value) or (spec.kind == "counter" and value < 0):
            raise InvalidItem(f"value must be a finite number{_AT_LEAST[spec.kind]}", ".value")
        return spec, tuple(sorted(labels.items())), value

    def _record(self, taken: list[tuple[MetricSpec, Labels, float]]) -> None:
        """Aggregate a batch's points per series; put them in the table; record the SDK's."""
        now = self._clock()
        sums: dict[tuple[str, Labels], list[float]] = {}
        for spec, labels, value in taken:
            if spec.kind == "gauge":
                sums[spec.name, labels] = [value]
                continue
            row = sums.get((spec.name, labels))
            if row is None:
                row = sums[spec.name, labels] = [0.0] * (1 + len(spec.bounds) + bool(spec.bounds))
            row[0] += value
            if spec.bounds:
                row[1 + bisect.bisect_left(spec.bounds, value)] += 1
        if self._put is not None:
            by_metric: dict[str, list[Series]] = {}
            for (name, labels), row in sums.items():
                by_metric.setdefault(name, []).append(Series(labels, row[0], now, tuple(row[1:])))
            metrics = self.schema.metrics
            self._put([metrics[name].family(series) for name, series in by_metric.items()])
        if self._instruments:
            for spec, labels, value in taken:
                self._instruments[spec.name].take(value, dict(labels))


_AT_LEAST: Final = {"counter": " and at least 0", "gauge": "", "histogram": ""}


def _unknown(name: str, any_known: bool) -> str:
    if any_known:
        return f"unknown metric {_quoted(name)}: not in the browser metrics schema"
    return f"unknown metric {_quoted(name)}: no browser metrics schema is loaded"


def _quoted(text: str) -> str:
    """Return client text quoted for an error message, cut to 64 characters."""
    return msgspec.json.encode(cut(text, 64)).decode()


# -- the SDK's instruments ----------------------------------------------------------------


class _Add:
    def __init__(self, instrument: Any) -> None:
        self.take = instrument.add


class _Observe:
    def __init__(self, instrument: Any) -> None:
        self.take = instrument.record


class _Latest:
    """A gauge's latest value per label set for the SDK, forgotten after ``ttl`` (bounded)."""

    def __init__(self, ttl: float, limit: int, clock: Callable[[], float]) -> None:
        self._ttl = ttl
        self._limit = limit
        self._clock = clock
        self._values: OrderedDict[tuple[tuple[str, str], ...], tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, value: float, attributes: dict[str, str]) -> None:
        key = tuple(attributes.items())
        with self._lock:
            self._values.pop(key, None)
            self._values[key] = (value, self._clock())  # the latest at the end
            if len(self._values) > self._limit:
                self._values.popitem(last=False)

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        now = self._clock()
        with self._lock:
            values = self._values
            while values and now - next(iter(values.values()))[1] > self._ttl:
                values.popitem(last=False)
            return [Observation(value, dict(key)) for key, (value, _) in values.items()]


def _instrument(meter: Any, spec: MetricSpec, limit: int, clock: Callable[[], float]) -> Any:
    if spec.kind == "counter":
        return _Add(meter.create_counter(spec.name, unit=spec.unit, description=spec.help))
    if spec.kind == "histogram":
        return _Observe(
            meter.create_histogram(
                spec.name,
                unit=spec.unit,
                description=spec.help,
                explicit_bucket_boundaries_advisory=list(spec.bounds),
            )
        )
    latest = _Latest(spec.ttl, limit, clock)
    meter.create_observable_gauge(
        spec.name, callbacks=[latest.observe], unit=spec.unit, description=spec.help
    )
    return latest
