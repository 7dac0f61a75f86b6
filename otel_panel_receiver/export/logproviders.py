"""Log providers of the OTel logs **API** for the per-payload records.

* :class:`StdoutLoggerProvider` renders each record's line and queues it for stdout, which a
  thread of its own writes (``sink.py``: a stuck log reader never stalls ``/write``; what
  cannot be written is dropped and counted). Going through the SDK's record pipeline
  (attribute validation and copying, processors) only to print a line costs about 20 µs per
  payload, close to half of the whole per-payload budget.
* :class:`TeeLoggerProvider` sends each record to stdout and, when OTLP export is on, to the
  SDK's LoggerProvider, but only while the collector takes them: while exports fail it lets one
  record a second through (the probe that notices the collector is back) and drops the rest
  before the SDK builds them, so a collector that is down costs ``/write`` nothing.

The recorder speaks the API and does not know which provider it was given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import IO, Protocol, runtime_checkable

from opentelemetry._logs import Logger, LoggerProvider, LogRecord, SeverityNumber
from opentelemetry.context import Context
from opentelemetry.util.types import AnyValue, Attributes

from otel_panel_receiver.export.logformat import LineRenderer, LogFormat
from otel_panel_receiver.export.sink import sink_for

__all__ = ["Flushable", "StdoutLoggerProvider", "TeeLoggerProvider"]


@runtime_checkable
class Flushable(Protocol):
    """A provider that can flush and shut down (the SDK's, and ours; the API's cannot)."""

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export or write what is buffered."""
        ...

    def shutdown(self) -> None:
        """Flush, then release what is held."""
        ...


class _RecordLogger(Logger):
    """A logger that takes a record given whole or by its fields (the API allows both).

    A subclass that needs whole records sets ``_needs_record``; the stdout logger does not,
    and renders the fields it is given without building a record.
    """

    _needs_record = True

    def emit(
        self,
        record: LogRecord | None = None,
        *,
        timestamp: int | None = None,
        observed_timestamp: int | None = None,
        context: Context | None = None,
        severity_number: SeverityNumber | None = None,
        severity_text: str | None = None,
        body: AnyValue | None = None,
        attributes: Attributes = None,
        event_name: str | None = None,
        exception: BaseException | None = None,
    ) -> None:
        """Emit one record."""
        if record is None:
            if not self._needs_record:
                self._write(severity_text, body, attributes)
                return
            record = LogRecord(
                timestamp=timestamp,
                observed_timestamp=observed_timestamp,
                context=context,
                severity_number=severity_number,
                severity_text=severity_text,
                body=body,
                attributes=attributes,
                event_name=event_name,
            )
        self._emit_record(record)

    def _emit_record(self, record: LogRecord) -> None:
        self._write(record.severity_text, record.body, record.attributes)

    def _write(self, level: str | None, body: AnyValue | None, attributes: Attributes) -> None:
        raise NotImplementedError

    def enabled(
        self,
        *,
        context: Context | None = None,
        severity_number: SeverityNumber | None = None,
        event_name: str | None = None,
    ) -> bool:
        """Every record is written (at least to stdout)."""
        return True


class _LineWriter:
    """Render records as lines and hand them to the stream's sink (``sink.py``)."""

    def __init__(self, fmt: LogFormat, stream: IO[str] | None) -> None:
        self._renderer = LineRenderer(fmt)
        self.sink = sink_for(stream)

    def write(self, level: str | None, body: AnyValue | None, attributes: Attributes) -> None:
        fields = {} if attributes is None else attributes
        self.sink.write(self._renderer.render(level or "info", str(body), fields))

    def flush(self, timeout: float = 5.0) -> None:
        self.sink.flush(timeout)


class _StdoutLogger(_RecordLogger):
    _needs_record = False

    def __init__(self, name: str, version: str | None, writer: _LineWriter) -> None:
        super().__init__(name, version)
        self._write = writer.write  # type: ignore[method-assign]  # one call less per record


class StdoutLoggerProvider(LoggerProvider):
    """An OTel logs API provider whose loggers write each record straight to stdout."""

    def __init__(self, fmt: LogFormat = "logfmt", stream: IO[str] | None = None) -> None:
        self._writer = _LineWriter(fmt, stream)

    def get_logger(
        self,
        name: str,
        version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> Logger:
        """Return a logger writing to this provider's stream."""
        return _StdoutLogger(name, version, self._writer)

    @property
    def dropped(self) -> dict[str, int]:
        """Lines the stream's sink dropped, by reason (``backlog``, ``error``)."""
        return self._writer.sink.dropped

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Write what is queued, within the timeout."""
        self._writer.flush(timeout_millis / 1000)
        return True

    def shutdown(self) -> None:
        """Write what is queued (5 s at most); the stream belongs to the caller."""
        self._writer.flush()


class _TeeLogger(_RecordLogger):
    def __init__(
        self,
        name: str,
        version: str | None,
        stdout: Logger,
        otlp: Logger,
        admit: Callable[[], bool],
    ) -> None:
        super().__init__(name, version)
        self._stdout = stdout
        self._otlp = otlp
        self._admit = admit

    def _emit_record(self, record: LogRecord) -> None:
        self._stdout.emit(record)
        if self._admit():
            self._otlp.emit(record)


class TeeLoggerProvider(LoggerProvider):
    """Give loggers that write to ``stdout`` always and to ``otlp`` while ``admit()`` is true."""

    def __init__(
        self, *, stdout: LoggerProvider, otlp: LoggerProvider, admit: Callable[[], bool]
    ) -> None:
        self.stdout = stdout
        self.otlp = otlp
        self._admit = admit

    def get_logger(
        self,
        name: str,
        version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> Logger:
        """Return a logger writing to both providers' loggers."""
        return _TeeLogger(
            name,
            version,
            self.stdout.get_logger(name, version, schema_url, attributes),
            self.otlp.get_logger(name, version, schema_url, attributes),
            self._admit,
        )

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Flush both providers."""
        flushed = [
            provider.force_flush(timeout_millis)
            for provider in (self.stdout, self.otlp)
            if isinstance(provider, Flushable)
        ]
        return all(flushed)

    def shutdown(self) -> None:
        """Shut both providers down."""
        for provider in (self.stdout, self.otlp):
            if isinstance(provider, Flushable):
                provider.shutdown()
