"""Build the OpenTelemetry SDK providers the receiver records into (with ``otlp.py``, the only
modules using the SDK).

* a MeterProvider with the receiver's Views and a Prometheus reader on a private registry
  (no ``target_info``, no scope labels), served at ``/metrics``, plus an OTLP reader when an
  endpoint is configured;
* a LoggerProvider whose stdout exporter prints upstream's logfmt or JSON line per record,
  plus a batching OTLP exporter;
* a TracerProvider for session spans, whose id generator gives each session's span the trace id
  derived from its uuid; only when traces are pushed (or ``OTEL_TRACES_EXPORTER=console``).

Export to a collector never blocks ``/write``: metrics leave from the periodic reader's thread,
logs and spans through batch processors with bounded queues, each request with a 5 s timeout.
"""

from __future__ import annotations

import random
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from opentelemetry._logs import LoggerProvider as ApiLoggerProvider
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from prometheus_client import CollectorRegistry

from otel_panel_receiver.attributes import METRIC_LABELS, USER_LABELS
from otel_panel_receiver.config import Settings
from otel_panel_receiver.multiproc import MultiprocessBridge, multiprocess_registry
from otel_panel_receiver.otlp import admission, exporter_setting, otlp_exporter
from otel_panel_receiver.stdoutlog import StdoutLoggerProvider, TeeLoggerProvider
from otel_panel_receiver.telemetry import DURATION, SESSIONS
from otel_panel_receiver.traces import SESSION_IDS
from otel_panel_receiver.version import __version__

__all__ = [
    "SessionIdGenerator",
    "Telemetry",
    "build_telemetry",
    "session_views",
]

SERVICE_NAME = "otel-panel-receiver"


def session_views(*, users: bool = True, cardinality_limit: int = 10_000) -> list[View]:
    """Return the Views of the two session counters: label set L, user labels optional."""
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
    """The providers the recorder uses, and the registry ``/metrics`` serves.

    ``tracer_provider`` is ``None`` when session spans go nowhere.
    """

    meter_provider: MeterProvider
    logger_provider: ApiLoggerProvider | None
    registry: CollectorRegistry
    tracer_provider: TracerProvider | None = None
    _closed: bool = field(default=False, repr=False)

    def shutdown(self) -> None:
        """Flush and shut every provider down; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        getattr(self.logger_provider, "shutdown", lambda: None)()
        self.meter_provider.shutdown()

    def force_flush(self, timeout_millis: int = 10_000) -> None:
        """Export what is buffered now (logs, spans, and a metrics collection)."""
        if self.tracer_provider is not None:
            self.tracer_provider.force_flush(timeout_millis)
        getattr(self.logger_provider, "force_flush", lambda _: True)(timeout_millis)
        self.meter_provider.force_flush(timeout_millis)


def build_telemetry(
    settings: Settings,
    *,
    stream: IO[str] | None = None,
    environ: Mapping[str, str] | None = None,
    extra_attributes: dict[str, Any] | None = None,
) -> Telemetry:
    """Build the SDK providers for ``settings``; log lines go to ``stream`` (stdout).

    ``environ`` holds the standard ``OTEL_*`` variables that switch OTLP signals on (the entry
    points pass ``os.environ``); headers, temporality and the export interval are read from the
    process environment by the SDK's exporters and readers themselves.
    """
    environ = environ if environ is not None else {}
    resource = _resource(environ, extra_attributes)
    readers: list[MetricReader]
    if settings.prometheus_multiproc_dir:  # several workers: /metrics sums their files
        registry = multiprocess_registry(settings.prometheus_multiproc_dir)
        bridge = MultiprocessBridge(settings.prometheus_multiproc_dir)
        interval = settings.multiproc_export_interval * 1000
        readers = [PeriodicExportingMetricReader(bridge, export_interval_millis=interval)]
    else:
        registry = CollectorRegistry(auto_describe=True)
        readers = [
            PrometheusMetricReader(
                disable_target_info=True, scope_info_enabled=False, registry=registry
            )
        ]
    metrics_exporter = otlp_exporter("metrics", settings, environ)
    if metrics_exporter is not None:
        readers.append(PeriodicExportingMetricReader(metrics_exporter))
    meter_provider = MeterProvider(
        resource=resource,
        shutdown_on_exit=False,  # the app's close() (gunicorn's worker_exit, atexit) shuts down
        metric_readers=readers,
        views=session_views(
            users=not settings.disable_user_metrics,
            cardinality_limit=settings.metric_cardinality_limit,
        ),
    )
    return Telemetry(
        meter_provider,
        _logger_provider(settings, environ, resource, stream),
        registry,
        _tracer_provider(settings, environ, resource, stream),
    )


#: Records per OTLP log/span export. Encoding is pure Python and holds the GIL: the SDK's 512
#: took ~31 ms per log batch, stalling request threads (p99 ~45 ms); 64 takes ~3 ms at the same
#: cost per record (docs/benchmarks.md, OTLP tuning).
OTLP_BATCH_SIZE = 64


def _batch_size(environ: Mapping[str, str], variable: str) -> int | None:
    """Return our batch size, or None to let the SDK read the variable the user set."""
    return None if environ.get(variable) else OTLP_BATCH_SIZE


def _resource(environ: Mapping[str, str], extra: dict[str, Any] | None) -> Resource:
    # Resource.create merges OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME; ours fill the gaps.
    attributes: dict[str, Any] = {
        "service.version": __version__,
        # One id per process (built after the fork under gunicorn): each worker its own series.
        "service.instance.id": str(uuid.UUID(int=random.getrandbits(128), version=4)),
        **(extra or {}),
    }
    named = environ.get("OTEL_SERVICE_NAME") or "service.name=" in environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    if not named:
        attributes["service.name"] = SERVICE_NAME
    resource = Resource.create(attributes)
    return resource


def _logger_provider(
    settings: Settings, environ: Mapping[str, str], resource: Resource, stream: IO[str] | None
) -> ApiLoggerProvider | None:
    if settings.disable_session_log:
        return None
    # The line is on stdout before the 201 goes out; OTLP records leave in batches.
    stdout = StdoutLoggerProvider(settings.log_format_effective, stream)
    exporter = otlp_exporter("logs", settings, environ)
    if exporter is None:
        return stdout
    provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    batch = _batch_size(environ, "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE")
    provider.add_log_record_processor(
        BatchLogRecordProcessor(exporter, max_export_batch_size=batch)
    )
    return TeeLoggerProvider(stdout, provider, admission(exporter))


def _tracer_provider(
    settings: Settings, environ: Mapping[str, str], resource: Resource, stream: IO[str] | None
) -> TracerProvider | None:
    exporter = otlp_exporter("traces", settings, environ)
    console = "console" in exporter_setting("traces", environ)
    if exporter is None and not console:
        return None
    provider = TracerProvider(
        resource=resource, id_generator=SessionIdGenerator(), shutdown_on_exit=False
    )
    if exporter is not None:
        batch = _batch_size(environ, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
        provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=batch))
    if console:
        provider.add_span_processor(
            SimpleSpanProcessor(
                ConsoleSpanExporter(out=stream if stream is not None else sys.stdout)
            )
        )
    return provider
