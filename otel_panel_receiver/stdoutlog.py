"""Log providers of the OTel logs **API** for the per-payload records.

* :class:`StdoutLoggerProvider` writes each record's line straight to stdout. Going through the
  SDK's record pipeline (attribute validation and copying, processors) only to print a line
  costs about 20 µs per payload, close to half of the whole per-payload budget.
* :class:`TeeLoggerProvider` sends each record to stdout and, when OTLP export is on, to the
  SDK's LoggerProvider, but only while the collector takes them: while exports fail it lets one
  record a second through (the probe that notices the collector is back) and drops the rest
  before the SDK builds them, so a collector that is down costs ``/write`` nothing.

The recorder speaks the API and does not know which provider it was given.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping
from typing import IO, Any

from opentelemetry._logs import Logger, LoggerProvider, LogRecord, SeverityNumber
from opentelemetry.context import Context
from opentelemetry.util.types import AnyValue, Attributes

from otel_panel_receiver.logformat import LogFormat, render

__all__ = ["LineWriter", "StdoutLoggerProvider", "TeeLoggerProvider"]


class LineWriter:
    """Render records as lines and write them to a text stream, one write and flush each."""

    def __init__(self, fmt: LogFormat = "logfmt", stream: IO[str] | None = None) -> None:
        self.fmt: LogFormat = fmt
        self._stream = stream if stream is not None else sys.stdout
        self._lock = threading.Lock()

    def write(self, lines: str) -> None:
        """Write already rendered lines."""
        with self._lock:
            self._stream.write(lines)
            self._stream.flush()

    def line(self, level: str | None, body: Any, attributes: Mapping[str, Any] | None) -> str:
        """Return one record's line."""
        return render(self.fmt, level or "info", str(body), attributes or {})

    def flush(self) -> None:
        """Flush the stream."""
        with self._lock:
            self._stream.flush()


class _StdoutLogger(Logger):
    def __init__(self, writer: LineWriter, name: str, version: str | None) -> None:
        super().__init__(name, version)
        self._writer = writer

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
        """Write the record's line at once."""
        if record is not None:
            severity_text, body, attributes = record.severity_text, record.body, record.attributes
        self._writer.write(self._writer.line(severity_text, body, attributes))

    def enabled(
        self,
        *,
        context: Context | None = None,
        severity_number: SeverityNumber | None = None,
        event_name: str | None = None,
    ) -> bool:
        """Return True: every record is written."""
        return True


class StdoutLoggerProvider(LoggerProvider):
    """An OTel logs API provider whose loggers write each record straight to stdout."""

    def __init__(self, fmt: LogFormat = "logfmt", stream: IO[str] | None = None) -> None:
        self._writer = LineWriter(fmt, stream)

    def get_logger(
        self,
        name: str,
        version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> Logger:
        """Return a logger writing to this provider's stream."""
        return _StdoutLogger(self._writer, name, version)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Flush the stream."""
        self._writer.flush()
        return True

    def shutdown(self) -> None:
        """Flush the stream; it belongs to the caller."""
        self._writer.flush()


class _TeeLogger(Logger):
    def __init__(
        self,
        name: str,
        version: str | None,
        pair: tuple[Logger, Logger],
        admit: Callable[[], bool],
    ) -> None:
        super().__init__(name, version)
        first, second = pair
        self._first = first
        self._second = second
        self._admit = admit

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
        """Emit to both loggers, to the second only while ``admit()`` says so."""
        if record is None:
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
        self._first.emit(record)
        if self._admit():
            self._second.emit(record)

    def enabled(
        self,
        *,
        context: Context | None = None,
        severity_number: SeverityNumber | None = None,
        event_name: str | None = None,
    ) -> bool:
        """Return True: every record reaches at least the first logger."""
        return True


class TeeLoggerProvider(LoggerProvider):
    """Give loggers that emit to ``first`` always and to ``second`` while ``admit()`` is true."""

    def __init__(
        self, first: LoggerProvider, second: LoggerProvider, admit: Callable[[], bool]
    ) -> None:
        self.first = first
        self.second = second
        self._admit = admit

    def get_logger(
        self,
        name: str,
        version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> Logger:
        """Return a logger writing to both providers' loggers."""
        pair = (
            self.first.get_logger(name, version, schema_url, attributes),
            self.second.get_logger(name, version, schema_url, attributes),
        )
        return _TeeLogger(name, version, pair, self._admit)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Flush both providers."""
        results = [
            getattr(p, "force_flush", lambda _: True)(timeout_millis)
            for p in (self.first, self.second)
        ]
        return all(results)

    def shutdown(self) -> None:
        """Shut both providers down."""
        for provider in (self.first, self.second):
            getattr(provider, "shutdown", lambda: None)()
