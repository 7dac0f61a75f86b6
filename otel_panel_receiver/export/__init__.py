"""Everything that touches the OpenTelemetry SDK and prometheus_client.

The providers the recorder writes into (:func:`build_telemetry`), the Views that keep the
receiver's label set and privacy choice (:func:`session_views`), OTLP exporters reported once
when they fail, the multi-worker ``/metrics`` bridge, the stdout log providers and line format,
and the receiver's own operational log. Nothing below this package imports the SDK.
"""

from __future__ import annotations

from otel_panel_receiver.export.logformat import LogFormat
from otel_panel_receiver.export.oplog import LOGGER_NAME, LineHandler, configure_logging
from otel_panel_receiver.export.otlp import check_otlp
from otel_panel_receiver.export.providers import (
    SessionIdGenerator,
    Telemetry,
    build_telemetry,
    session_views,
)
from otel_panel_receiver.export.series import clear_directory

__all__ = [
    "LOGGER_NAME",
    "LineHandler",
    "LogFormat",
    "SessionIdGenerator",
    "Telemetry",
    "build_telemetry",
    "check_otlp",
    "clear_directory",
    "configure_logging",
    "session_views",
]
