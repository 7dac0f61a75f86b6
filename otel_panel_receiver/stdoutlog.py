"""The per-payload line on stdout: one writer, reached two ways.

* :class:`StdoutLogExporter`, an SDK exporter, when records also go elsewhere (OTLP): the SDK
  builds each record once and hands it to both;
* :class:`StdoutLoggerProvider`, a minimal implementation of the OTel logs **API**, when stdout
  is the only destination (the default). The SDK's record pipeline (attribute validation and
  copying, processors) then costs about 20 µs per payload for nothing, half of the whole budget;
  the recorder does not know the difference, it speaks the API either way.

Both render through :func:`logformat.render`, so a line is the same byte for byte.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping, Sequence
from typing import IO, Any

from opentelemetry._logs import Logger, LoggerProvider, LogRecord, SeverityNumber
from opentelemetry.context import Context
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.util.types import AnyValue, Attributes

from otel_panel_receiver.logformat import LogFormat, render

__all__ = ["LineWriter", "StdoutLogExporter", "StdoutLoggerProvider"]


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


class StdoutLogExporter(LogRecordExporter):
    """Write each SDK log record as one upstream-style line (logfmt or JSON)."""

    def __init__(self, fmt: LogFormat = "logfmt", stream: IO[str] | None = None) -> None:
        self._writer = LineWriter(fmt, stream)

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        """Render and write the records; one write and flush per batch."""
        line = self._writer.line
        self._writer.write(
            "".join(
                line(r.log_record.severity_text, r.log_record.body, r.log_record.attributes)
                for r in batch
            )
        )
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release: the stream belongs to the caller."""

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Flush the stream."""
        self._writer.flush()
        return True


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
