"""The receiver's own operational log: start-up, warnings, export failures.

Written to stdout in the same format as the per-payload lines, so one log pipeline reads both.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Any, Final

from otel_panel_receiver.export.logformat import LineRenderer, LogFormat
from otel_panel_receiver.export.sink import sink_for

__all__ = ["LOGGER_NAME", "LineHandler", "configure_logging"]

LOGGER_NAME: Final = "otel_panel_receiver"

_LEVELS: Final = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warn",
    logging.ERROR: "error",
    logging.CRITICAL: "error",
}


class LineHandler(logging.Handler):
    """A ``logging`` handler that prints records as lines in the receiver's stdout format.

    ``extra={"fields": {...}}`` adds key/value fields; an exception adds ``err`` (its repr) and
    ``traceback``.
    """

    def __init__(self, fmt: LogFormat = "logfmt", stream: IO[str] | None = None) -> None:
        super().__init__()
        self._renderer = LineRenderer(fmt)
        self._stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        """Render and write one record; never raise into the caller."""
        try:
            level = _LEVELS.get(record.levelno, record.levelname.lower())
            fields: dict[str, Any] = dict(getattr(record, "fields", {}))
            if record.exc_info and record.exc_info[1] is not None:
                fields["err"] = repr(record.exc_info[1])
                fields["traceback"] = logging.Formatter().formatException(record.exc_info)
            line = self._renderer.render(level, record.getMessage(), fields)
            sink_for(self._stream if self._stream is not None else sys.stdout).write(line)
        except Exception:  # logging must not take the process down
            self.handleError(record)


def configure_logging(fmt: LogFormat) -> None:
    """Send the receiver's own messages to stdout in the per-payload line format.

    The OTLP exporters log every failed attempt, and the batch processors every record they
    drop while the collector is down; the receiver reports export failures once instead, so
    their loggers are quietened.
    """
    log = logging.getLogger(LOGGER_NAME)
    log.handlers[:] = [LineHandler(fmt)]
    log.setLevel(logging.INFO)
    log.propagate = False
    logging.getLogger("opentelemetry.exporter.otlp").setLevel(logging.CRITICAL)
    logging.getLogger("opentelemetry.sdk._shared_internal").setLevel(logging.ERROR)
