"""Build the OpenTelemetry SDK providers the receiver records into: the one module using the SDK.

* a MeterProvider with the receiver's Views and a Prometheus reader on a private registry
  (no ``target_info``, no scope labels), served at ``/metrics``;
* a LoggerProvider whose stdout exporter prints upstream's logfmt or JSON line per record.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    LogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry

from otel_panel_receiver.attributes import METRIC_LABELS, USER_LABELS
from otel_panel_receiver.config import Settings
from otel_panel_receiver.logformat import LogFormat, render
from otel_panel_receiver.telemetry import DURATION, SESSIONS
from otel_panel_receiver.version import __version__

__all__ = ["StdoutLogExporter", "Telemetry", "build_telemetry", "session_views"]

SERVICE_NAME = "otel-panel-receiver"


class StdoutLogExporter(LogRecordExporter):
    """Write each log record as one upstream-style line (logfmt or JSON) to a text stream."""

    def __init__(self, fmt: LogFormat = "logfmt", stream: IO[str] | None = None) -> None:
        self._fmt: LogFormat = fmt
        self._stream = stream if stream is not None else sys.stdout
        self._lock = threading.Lock()

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        """Render and write the records; one write and flush per batch."""
        text = "".join(
            render(
                self._fmt,
                record.log_record.severity_text or "info",
                str(record.log_record.body),
                record.log_record.attributes or {},
            )
            for record in batch
        )
        with self._lock:
            self._stream.write(text)
            self._stream.flush()
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release: the stream belongs to the caller."""

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Flush the stream."""
        with self._lock:
            self._stream.flush()
        return True


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


@dataclass
class Telemetry:
    """The providers the recorder uses, and the registry ``/metrics`` serves."""

    meter_provider: MeterProvider
    logger_provider: LoggerProvider | None
    registry: CollectorRegistry
    _closed: bool = field(default=False, repr=False)

    def shutdown(self) -> None:
        """Flush and shut every provider down; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.meter_provider.shutdown()
        if self.logger_provider is not None:
            self.logger_provider.shutdown()


def build_telemetry(
    settings: Settings,
    *,
    stream: IO[str] | None = None,
    extra_attributes: dict[str, Any] | None = None,
) -> Telemetry:
    """Build the SDK providers for ``settings``; log lines go to ``stream`` (stdout)."""
    resource = Resource.create(
        {"service.name": SERVICE_NAME, "service.version": __version__, **(extra_attributes or {})}
    )
    registry = CollectorRegistry(auto_describe=True)
    reader = PrometheusMetricReader(
        disable_target_info=True, scope_info_enabled=False, registry=registry
    )
    meter_provider = MeterProvider(
        resource=resource,
        metric_readers=[reader],
        views=session_views(
            users=not settings.disable_user_metrics,
            cardinality_limit=settings.metric_cardinality_limit,
        ),
    )
    logger_provider = None
    if not settings.disable_session_log:
        logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        logger_provider.add_log_record_processor(
            SimpleLogRecordProcessor(
                StdoutLogExporter(settings.log_format_effective, stream),
                meter_provider=meter_provider,
            )
        )
    return Telemetry(meter_provider, logger_provider, registry)
