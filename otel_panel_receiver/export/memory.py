"""Telemetry kept in memory: what tests read back instead of a collector or a scrape."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_panel_receiver.config import Settings
from otel_panel_receiver.export.exposition import Exposition
from otel_panel_receiver.export.providers import (
    SessionIdGenerator,
    Telemetry,
    build_resource,
    series_table,
    session_views,
)
from otel_panel_receiver.export.series import SeriesReader, reader_limits
from otel_panel_receiver.version import BROWSER_SCOPE

__all__ = ["MemoryTelemetry", "in_memory_telemetry"]


@dataclass(kw_only=True)
class MemoryTelemetry(Telemetry):
    """Providers whose metrics, log records and spans stay in this process to be read back.

    ``/metrics`` works too, with the same Views and the same ``--new-series-delay`` as the
    service's (``Settings(new_series_delay=0)`` shows every value at once).
    """

    metric_reader: InMemoryMetricReader = field(default_factory=InMemoryMetricReader)
    log_exporter: InMemoryLogRecordExporter = field(default_factory=InMemoryLogRecordExporter)
    span_exporter: InMemorySpanExporter = field(default_factory=InMemorySpanExporter)

    def points(self, name: str) -> list[tuple[dict[str, Any], float]]:
        """Return ``(attributes, value)`` of each data point of the metric ``name``, now."""
        data = self.metric_reader.get_metrics_data()
        if data is None:
            return []
        return [
            (dict(point.attributes or {}), point.value)
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
            if metric.name == name
            for point in metric.data.data_points
            if isinstance(point, NumberDataPoint)  # sums and gauges: all the receiver records
        ]

    def log_records(self) -> tuple[ReadableLogRecord, ...]:
        """Return every log record emitted so far, oldest first."""
        return self.log_exporter.get_finished_logs()

    def spans(self) -> tuple[ReadableSpan, ...]:
        """Return every span ended so far, oldest first."""
        return self.span_exporter.get_finished_spans()


def in_memory_telemetry(settings: Settings | None = None) -> MemoryTelemetry:
    """Return telemetry for ``settings`` (the defaults if none) that keeps everything in memory.

    Metrics get the receiver's Views (user labels, cardinality limit), logs are recorded unless
    the session log is off, and session spans always.
    """
    settings = settings if settings is not None else Settings()
    metric_reader = InMemoryMetricReader(
        cardinality_limits=reader_limits(settings.metric_cardinality_limit)
    )
    pull = SeriesReader(
        series_table(settings),
        settings.multiproc_export_interval,
        direct_scopes=(BROWSER_SCOPE,),  # the browser metrics reach the table by put
    )
    resource = build_resource()
    meter_provider = MeterProvider(
        resource=resource,
        shutdown_on_exit=False,
        metric_readers=[metric_reader, pull],
        views=session_views(users=settings.user_label_mode != "none", cardinality_limit=None),
    )
    log_exporter = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]  # untyped in the SDK
    logger_provider = None
    if not settings.disable_session_log:
        logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
    span_exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(
        resource=resource, id_generator=SessionIdGenerator(), shutdown_on_exit=False
    )
    tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    return MemoryTelemetry(
        meter_provider=meter_provider,
        logger_provider=logger_provider,
        exposition=Exposition(
            pull.families,
            delay=settings.new_series_delay,
            created=settings.openmetrics_created,
            exposures=pull.table,
        ),
        tracer_provider=tracer_provider,
        recorded=pull.recorded,
        put=pull.put,
        metric_reader=metric_reader,
        log_exporter=log_exporter,
        span_exporter=span_exporter,
    )
