"""Build the OpenTelemetry SDK providers the receiver records into.

* a MeterProvider with the receiver's Views and a reader that adds the SDK's deltas into the
  bounded table of series ``/metrics`` serves (``series.py``; shared by the workers of a host
  in an SQLite file; new counter series held at 0 for ``--new-series-delay``,
  ``exposition.py``), plus an OTLP reader when an endpoint is configured;
* a LoggerProvider whose stdout exporter prints upstream's logfmt or JSON line per record,
  plus a batching OTLP exporter;
* a TracerProvider for session spans, whose id generator gives each session's span the trace id
  derived from its uuid; only when traces are pushed (or ``OTEL_TRACES_EXPORTER=console``).

Export to a collector never blocks ``/write``: metrics leave from the periodic reader's thread,
logs and spans through batch processors with bounded queues, each request with a 5 s timeout.
The resource is the SDK's, from the process environment as for any OpenTelemetry component:
``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` win over the receiver's own
``service.name``, ``service.version`` and ``service.instance.id``.
"""

from __future__ import annotations

import os
import random
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO, Final

from opentelemetry._logs import LoggerProvider as ApiLoggerProvider
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator

from otel_panel_receiver.attributes import METRIC_LABELS, USER_LABELS
from otel_panel_receiver.config import Settings
from otel_panel_receiver.export.exposition import Exposition, Family
from otel_panel_receiver.export.logproviders import (
    Flushable,
    StdoutLoggerProvider,
    TeeLoggerProvider,
)
from otel_panel_receiver.export.otlp import ExportHealth, exporter_setting, otlp_exporter
from otel_panel_receiver.export.series import (
    SERIES_FILE,
    LmdbSeries,
    MemorySeries,
    SeriesReader,
    SeriesTable,
    reader_limits,
)
from otel_panel_receiver.export.sink import LineSink, sink_for
from otel_panel_receiver.recorder import COUNTERS, DURATION, SESSIONS, Tally
from otel_panel_receiver.traces import SESSION_IDS
from otel_panel_receiver.version import BROWSER_SCOPE, INSTRUMENTATION_SCOPE, __version__

__all__ = [
    "SessionIdGenerator",
    "Telemetry",
    "build_resource",
    "build_telemetry",
    "session_views",
]

_SERVICE_NAME: Final = "otel-panel-receiver"


def session_views(*, users: bool = True, cardinality_limit: int | None = 10_000) -> list[View]:
    """Return the Views of the two session counters: label set L, user labels optional.

    Give them to a MeterProvider of your own to keep the receiver's privacy choice (``users``
    False drops ``user_login`` and ``user_name``) and its bound on label sets per metric
    (``None``: the bound of each reader, as the service sets it).
    """
    # Keeping every key is the SDK's default (None); naming them would only cost a filter.
    keys = None if users else set(METRIC_LABELS) - set(USER_LABELS)
    return [
        View(
            instrument_name=name,
            attribute_keys=keys,
            aggregation_cardinality_limit=cardinality_limit,
        )
        for name in (SESSIONS, DURATION)
    ]


class SessionIdGenerator(IdGenerator):
    """Random ids, except for session spans, which take the ids their session derives."""

    def __init__(self) -> None:
        self._random = RandomIdGenerator()

    def generate_span_id(self) -> int:
        """Return the session's span id inside a session span's start, else a random one."""
        ids = SESSION_IDS.get()
        return ids[1] if ids is not None else self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        """Return the session's trace id inside a session span's start, else a random one."""
        ids = SESSION_IDS.get()
        return ids[0] if ids is not None else self._random.generate_trace_id()


@dataclass
class Telemetry:
    """The providers the recorder uses, and the exposition ``/metrics`` serves.

    ``logger_provider`` is ``None`` when the per-payload log is off, ``tracer_provider`` when
    session spans go nowhere, ``exposition`` when ``/metrics`` is not served from here (an
    embedder exporting only through its own readers).
    """

    meter_provider: MeterProvider
    logger_provider: ApiLoggerProvider | None = None
    exposition: Exposition | None = None
    tracer_provider: TracerProvider | None = None
    #: Called after each payload, before its answer (``SeriesReader.recorded``), or ``None``.
    recorded: Callable[[], None] | None = None
    #: Receives each payload's counter increments before its answer (the table's path), or None.
    tally: Tally | None = None
    #: Whether the payload counters must also be recorded in the SDK (an OTLP reader reads them).
    sdk_counters: bool = True
    #: Puts counts recorded outside the SDK (the browser metrics) in the table, or None.
    put: Callable[[list[Family]], None] | None = None
    #: The health of each OTLP export, reported by ``/readyz``.
    exports: list[ExportHealth] = field(default_factory=list)
    #: Where stdout's lines queue (the payload log's and the receiver's own), flushed last.
    log_sink: LineSink | None = None
    _closed: bool = field(default=False, init=False, repr=False)

    def shutdown(self) -> None:
        """Flush and shut every provider down; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        # The API's provider cannot flush; ours and the SDK's can.
        logs: object = self.logger_provider
        if isinstance(logs, Flushable):
            logs.shutdown()
        self.meter_provider.shutdown()
        if self.log_sink is not None:
            self.log_sink.flush()

    def scrape(self, accept: str = "") -> tuple[bytes, str]:
        """Return ``/metrics``' body and content type: OpenMetrics if ``accept`` asks for it.

        Raises ``LookupError`` when this telemetry serves no ``/metrics``.
        """
        if self.exposition is None:
            raise LookupError("this telemetry serves no /metrics (no exposition)")
        return self.exposition.scrape(accept)

    def force_flush(self, timeout_millis: int = 10_000) -> None:
        """Export what is buffered now (logs, spans, and a metrics collection)."""
        if self.tracer_provider is not None:
            self.tracer_provider.force_flush(timeout_millis)
        logs: object = self.logger_provider
        if isinstance(logs, Flushable):
            logs.force_flush(timeout_millis)
        self.meter_provider.force_flush(timeout_millis)


def series_table(settings: Settings) -> SeriesTable:
    """Return the table ``/metrics`` serves: this process's, or the workers' shared file."""
    limit = settings.metric_cardinality_limit
    directory = settings.prometheus_multiproc_dir
    if directory:  # several workers: any of them answers with everybody's counts
        return LmdbSeries(os.path.join(directory, SERIES_FILE), limit)
    return MemorySeries(limit)


def build_telemetry(
    settings: Settings,
    *,
    stream: IO[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Telemetry:
    """Build the SDK providers for ``settings``; log lines go to ``stream`` (stdout).

    ``environ`` (the process environment unless given) holds the standard ``OTEL_*`` variables
    that switch OTLP signals on and set their endpoints, protocols and timeouts; the resource,
    headers, temporality and export interval are read from the process environment by the SDK
    itself. Raises :class:`ConfigError` for an OTLP setting that cannot work.
    """
    environ = os.environ if environ is None else environ
    resource = build_resource()
    table = series_table(settings)
    # The payload counters go to the table straight from the recorder (one worker's or the
    # workers' shared one, then before each answer); the SDK's points of them are left out.
    series = SeriesReader(
        table,
        settings.multiproc_export_interval,
        tallied=COUNTERS,
        direct_scopes=(BROWSER_SCOPE,),  # the browser metrics reach the table by put
    )
    readers: list[MetricReader] = [series]
    exposition = Exposition(
        series.families,
        delay=settings.new_series_delay,
        created=settings.openmetrics_created,
        process=not settings.prometheus_multiproc_dir,  # one worker: see Exposition
        exposures=series.table,
    )
    healths: list[ExportHealth] = []
    otlp_metrics = otlp_exporter("metrics", settings, environ)
    if otlp_metrics is not None:
        limits = reader_limits(settings.metric_cardinality_limit)
        readers.append(PeriodicExportingMetricReader(otlp_metrics[0], cardinality_limits=limits))
        healths.append(otlp_metrics[1])
    meter_provider = MeterProvider(
        resource=resource,
        shutdown_on_exit=False,  # the app's close() (gunicorn's worker_exit, atexit) shuts down
        metric_readers=readers,
        # The bound is each reader's: the series reader's SDK storage holds one interval.
        views=session_views(users=settings.user_label_mode != "none", cardinality_limit=None),
    )
    telemetry = Telemetry(
        meter_provider,
        _logger_provider(settings, environ, resource, stream, healths),
        exposition,
        _tracer_provider(settings, environ, resource, stream, healths),
        # No early collections (SeriesReader.recorded): the payload counters reach the table by
        # the tally, and their SDK points (recorded for an OTLP reader) are left out of the
        # series reader's collections, so a burst folded into its overflow point shows nowhere.
        recorded=None,
        tally=series.tally,
        sdk_counters=otlp_metrics is not None,
        put=series.put,
        exports=healths,
        log_sink=(sink := sink_for(stream)),
    )
    if healths:
        _observe_exports(meter_provider, healths)
    _observe_log_drops(meter_provider, sink)
    return telemetry


def _observe_log_drops(meter_provider: MeterProvider, sink: LineSink) -> None:
    """Count the log lines stdout's sink dropped, by reason (``backlog``, ``error``)."""

    def dropped(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {"reason": reason}) for reason, n in sink.dropped.items()]

    meter_provider.get_meter(INSTRUMENTATION_SCOPE, __version__).create_observable_counter(
        "grafana_analytics_log_lines_dropped",
        callbacks=[dropped],
        unit="{line}",
        description=(
            "Log lines not written to stdout: backlog (the reader did not keep up), error "
            "(writing failed, a full disk). The payloads were recorded all the same."
        ),
    )


def _observe_exports(meter_provider: MeterProvider, healths: list[ExportHealth]) -> None:
    """Count failed OTLP exports per signal in ``grafana_analytics_otlp_export_failures``."""

    def failures(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(h.failures_total, {"signal": h.signal}) for h in healths]

    meter_provider.get_meter(INSTRUMENTATION_SCOPE, __version__).create_observable_counter(
        "grafana_analytics_otlp_export_failures",
        callbacks=[failures],
        unit="{export}",
        description="OTLP exports that failed (their data dropped), by signal.",
    )


#: Records per OTLP log/span export. Encoding is pure Python and holds the GIL: the SDK's 512
#: took ~31 ms per log batch, stalling request threads (p99 ~45 ms); 64 takes ~3 ms at the same
#: cost per record (docs/benchmarks.md, OTLP tuning).
_OTLP_BATCH_SIZE: Final = 64


def _batch_size(environ: Mapping[str, str], variable: str) -> int | None:
    """Return our batch size, or None to let the SDK read the variable the user set."""
    return None if environ.get(variable) else _OTLP_BATCH_SIZE


def build_resource() -> Resource:
    """Return the SDK's resource with the receiver's defaults under the user's attributes."""
    ours = {
        "service.name": _SERVICE_NAME,
        "service.version": __version__,
        # One id per process (built after the fork under gunicorn): each worker its own series.
        "service.instance.id": str(uuid.UUID(int=random.getrandbits(128), version=4)),
    }
    # Resource.create puts the attributes it is given over the detected ones (the environment
    # variables included): hand it ours overlaid with what the user set, so the user's win.
    user = OTELResourceDetector().detect().attributes
    return Resource.create({**ours, **user})


def _logger_provider(
    settings: Settings,
    environ: Mapping[str, str],
    resource: Resource,
    stream: IO[str] | None,
    healths: list[ExportHealth],
) -> ApiLoggerProvider | None:
    if settings.disable_session_log:
        return None
    # The line is on stdout before the 201 goes out; OTLP records leave in batches.
    stdout = StdoutLoggerProvider(settings.log_format_effective, stream)
    otlp = otlp_exporter("logs", settings, environ)
    if otlp is None:
        return stdout
    exporter, health = otlp
    healths.append(health)
    provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    batch = _batch_size(environ, "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE")
    provider.add_log_record_processor(
        BatchLogRecordProcessor(exporter, max_export_batch_size=batch)
    )
    return TeeLoggerProvider(stdout=stdout, otlp=provider, admit=health.admit)


def _tracer_provider(
    settings: Settings,
    environ: Mapping[str, str],
    resource: Resource,
    stream: IO[str] | None,
    healths: list[ExportHealth],
) -> TracerProvider | None:
    otlp = otlp_exporter("traces", settings, environ)
    console = "console" in exporter_setting("traces", environ)
    if otlp is None and not console:
        return None
    provider = TracerProvider(
        resource=resource, id_generator=SessionIdGenerator(), shutdown_on_exit=False
    )
    if otlp is not None:
        healths.append(otlp[1])
        batch = _batch_size(environ, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
        provider.add_span_processor(BatchSpanProcessor(otlp[0], max_export_batch_size=batch))
    if console:
        provider.add_span_processor(
            SimpleSpanProcessor(
                ConsoleSpanExporter(out=stream if stream is not None else sys.stdout)
            )
        )
    return provider
