"""OTLP exporters, configured the OpenTelemetry way, and reported once when they fail.

Which signals are pushed is decided from the settings and the standard variables:

* a signal is on when ``OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT`` or the base endpoint
  (``--otlp-endpoint``, else ``OTEL_EXPORTER_OTLP_ENDPOINT``) is set, and
  ``OTEL_<SIGNAL>_EXPORTER`` is not ``none``;
* the transport is ``OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL``, else ``--otlp-protocol``, else
  ``OTEL_EXPORTER_OTLP_PROTOCOL``, else ``http/protobuf``;
* headers, temporality, export interval and resource attributes are read by the SDK itself
  from their standard variables; the request timeout is 5 s unless
  ``OTEL_EXPORTER_OTLP[_<SIGNAL>]_TIMEOUT`` says otherwise (seconds, as the Python SDK reads it).

Each exporter is wrapped so that a collector that is down is reported in the receiver's log
once when exports start failing and once when they recover, never per payload.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Literal, TypeVar, overload

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otel_panel_receiver.config import Settings
from otel_panel_receiver.errors import ConfigError
from otel_panel_receiver.export.exposition import MemoryExposures, hold_new_series

__all__ = [
    "DEFAULT_TIMEOUT",
    "PROBE_INTERVAL",
    "SIGNALS",
    "ExportHealth",
    "Signal",
    "check_otlp",
    "exporter_setting",
    "otlp_exporter",
    "signal_endpoint",
]

log = logging.getLogger("otel_panel_receiver")

T = TypeVar("T")

Signal = Literal["metrics", "logs", "traces"]
SIGNALS: Final[tuple[Signal, ...]] = ("metrics", "logs", "traces")
#: Request timeout of each export, well under gunicorn's 30 s graceful timeout.
DEFAULT_TIMEOUT: Final = 5.0
#: While exports fail, how often a record is let through to find out whether they work again.
PROBE_INTERVAL: Final = 1.0
#: An export waiting this long on the collector counts as failing for admission.
STALL: Final = 1.0


def exporter_setting(signal: Signal, environ: Mapping[str, str]) -> set[str]:
    """Return the exporters ``OTEL_<SIGNAL>_EXPORTER`` names (empty when unset)."""
    raw = environ.get(f"OTEL_{signal.upper()}_EXPORTER", "")
    return {part.strip().lower() for part in raw.split(",") if part.strip()}


def signal_endpoint(signal: Signal, settings: Settings, environ: Mapping[str, str]) -> str:
    """Return the endpoint one signal is pushed to, or ``""`` when it is not pushed."""
    if "none" in exporter_setting(signal, environ):
        return ""
    specific = environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT", "").strip()
    if specific:
        return specific
    base = settings.otlp_endpoint or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if not base:
        return ""
    if _protocol(signal, settings, environ) == "grpc":
        return base
    return f"{base.rstrip('/')}/v1/{signal}"


def _protocol(signal: Signal, settings: Settings, environ: Mapping[str, str]) -> str:
    name = f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL"
    proto = environ.get(name, "").strip()
    if not proto:
        name = "--otlp-protocol"
        proto = settings.otlp_protocol
    if not proto:
        name = "OTEL_EXPORTER_OTLP_PROTOCOL"
        proto = environ.get(name, "").strip() or "http/protobuf"
    if proto not in ("http/protobuf", "grpc"):
        raise ConfigError(f'{name} must be "http/protobuf" or "grpc" but got {proto!r}')
    return proto


def _timeout(signal: Signal, environ: Mapping[str, str]) -> float:
    for name in (f"OTEL_EXPORTER_OTLP_{signal.upper()}_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"):
        raw = environ.get(name, "").strip()
        if raw:
            try:
                return float(raw)
            except ValueError:
                raise ConfigError(f"{name} expected seconds as a number, got {raw!r}") from None
    return DEFAULT_TIMEOUT


def check_otlp(settings: Settings, environ: Mapping[str, str]) -> None:
    """Raise :class:`ConfigError` now for an OTLP setting that cannot work; build nothing.

    What the entry points run before they fork workers: each signal that is on must have a
    known protocol, a numeric timeout, and its exporter package installed.
    """
    for signal in SIGNALS:
        if signal_endpoint(signal, settings, environ):
            _exporter_class(signal, _protocol(signal, settings, environ))
            _timeout(signal, environ)


@overload
def otlp_exporter(
    signal: Literal["metrics"], settings: Settings, environ: Mapping[str, str]
) -> tuple[MetricExporter, ExportHealth] | None: ...
@overload
def otlp_exporter(
    signal: Literal["logs"], settings: Settings, environ: Mapping[str, str]
) -> tuple[LogRecordExporter, ExportHealth] | None: ...
@overload
def otlp_exporter(
    signal: Literal["traces"], settings: Settings, environ: Mapping[str, str]
) -> tuple[SpanExporter, ExportHealth] | None: ...
def otlp_exporter(
    signal: Signal, settings: Settings, environ: Mapping[str, str]
) -> tuple[MetricExporter | LogRecordExporter | SpanExporter, ExportHealth] | None:
    """Return one signal's OTLP exporter, wrapped to report failures, and its health.

    ``None`` when the signal is not pushed. The health's ``admit`` says whether a record should
    enter the export pipeline now (see :class:`ExportHealth`).
    """
    endpoint = signal_endpoint(signal, settings, environ)
    if not endpoint:
        return None
    protocol = _protocol(signal, settings, environ)
    cls = _exporter_class(signal, protocol)
    inner = cls(endpoint=endpoint, timeout=_timeout(signal, environ))
    health = ExportHealth(signal, endpoint)
    if signal == "metrics":
        hold = settings.new_series_delay
        return _ReportingMetricExporter(inner, health, hold=hold), health
    if signal == "logs":
        return _ReportingLogExporter(inner, health), health
    return _ReportingSpanExporter(inner, health), health


def _exporter_class(signal: Signal, protocol: str) -> Any:
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc import _log_exporter as glogs
            from opentelemetry.exporter.otlp.proto.grpc import metric_exporter as gmetrics
            from opentelemetry.exporter.otlp.proto.grpc import trace_exporter as gtraces

            return {
                "metrics": gmetrics.OTLPMetricExporter,
                "logs": glogs.OTLPLogExporter,
                "traces": gtraces.OTLPSpanExporter,
            }[signal]
    except ImportError:
        raise ConfigError(
            "OTLP over grpc needs the grpc exporter: pip install 'otel-panel-receiver[grpc]'"
        ) from None
    from opentelemetry.exporter.otlp.proto.http import _log_exporter as hlogs
    from opentelemetry.exporter.otlp.proto.http import metric_exporter as hmetrics
    from opentelemetry.exporter.otlp.proto.http import trace_exporter as htraces

    return {
        "metrics": hmetrics.OTLPMetricExporter,
        "logs": hlogs.OTLPLogExporter,
        "traces": htraces.OTLPSpanExporter,
    }[signal]


class ExportHealth:
    """Log an export failure once when it starts and once when exports work again.

    While exports fail, or one has been waiting on the collector for over :data:`STALL`
    seconds, :meth:`admit` lets one record a second into the export pipeline (the probe that
    notices the collector is back) and turns the rest away before they cost anything: the
    exporter's queue would drop them anyway.
    """

    def __init__(
        self, signal: Signal, endpoint: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.signal = signal
        self.endpoint = endpoint
        self.failing = False
        self.failures = 0
        self.failures_total = 0  # never reset: grafana_analytics_otlp_export_failures_total
        self.turned_away = 0
        self.busy_since: float | None = None
        self._clock = clock
        self._next_probe = 0.0
        self._exception_logged = False

    def guard(self, export: Callable[[], T]) -> T | None:
        """Run an export; an exception counts as a failure instead of reaching the SDK thread.

        The first exception is logged with its traceback (an exporter bug must be findable);
        later ones only count as failures.
        """
        try:
            return export()
        except Exception:  # an exporter bug must not stop the export thread
            if not self._exception_logged:
                self._exception_logged = True
                log.exception(
                    "OTLP exporter raised; counted as a failed export",
                    extra={"fields": {"signal": self.signal, "endpoint": self.endpoint}},
                )
            return None

    def admit(self) -> bool:
        """Return whether a record should enter the export pipeline now."""
        busy = self.busy_since
        if not self.failing and busy is None:
            return True
        now = self._clock()
        if not self.failing and busy is not None and now - busy < STALL:
            return True
        if now >= self._next_probe:
            self._next_probe = now + PROBE_INTERVAL
            return True
        self.turned_away += 1
        return False

    def report(self, ok: bool) -> None:
        """Take one export's outcome; log the first failure and the first success after it."""
        if ok and self.failing:
            self.failing = False
            log.info(
                "OTLP export recovered",
                extra={"fields": {"signal": self.signal, "endpoint": self.endpoint,
                                  "failed_exports": self.failures,
                                  "records_not_sent": self.turned_away}},
            )  # fmt: skip
            self.failures = self.turned_away = 0
        elif not ok:
            self.failures += 1
            self.failures_total += 1
            if not self.failing:
                self.failing = True
                self._next_probe = self._clock() + PROBE_INTERVAL
                log.warning(
                    "OTLP export failing; data of failed exports is dropped, ingest goes on",
                    extra={"fields": {"signal": self.signal, "endpoint": self.endpoint}},
                )


class _ReportingMetricExporter(MetricExporter):
    def __init__(self, inner: MetricExporter, health: ExportHealth, *, hold: float = 0) -> None:
        # The reader asks the exporter for these; the inner exporter's come from the standard
        # variables (OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE).
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self.inner = inner
        self._health = health
        self._hold = hold
        self._exposures = MemoryExposures()

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        # A new series goes out at 0 for a while, so that backends which take a series' first
        # value as its baseline (Prometheus remote write, VictoriaMetrics) count it.
        metrics_data, new = hold_new_series(
            metrics_data, delay=self._hold, exposures=self._exposures, now=time.time()
        )
        result = self._health.guard(
            lambda: self.inner.export(metrics_data, timeout_millis=timeout_millis)
        )
        ok = result is MetricExportResult.SUCCESS
        if not ok:
            self._exposures.forget(new)  # their zero never arrived: send it again next time
        self._health.report(ok)
        return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis)


class _ReportingLogExporter(LogRecordExporter):
    def __init__(self, inner: LogRecordExporter, health: ExportHealth) -> None:
        self.inner = inner
        self._health = health

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        self._health.busy_since = time.monotonic()
        try:
            result = self._health.guard(lambda: self.inner.export(batch))
        finally:
            self._health.busy_since = None
        ok = result is LogRecordExportResult.SUCCESS
        self._health.report(ok)
        return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self.inner.shutdown()  # type: ignore[no-untyped-call]  # untyped in the SDK


class _ReportingSpanExporter(SpanExporter):
    def __init__(self, inner: SpanExporter, health: ExportHealth) -> None:
        self.inner = inner
        self._health = health

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self._health.guard(lambda: self.inner.export(spans))
        ok = result is SpanExportResult.SUCCESS
        self._health.report(ok)
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self.inner.shutdown()
