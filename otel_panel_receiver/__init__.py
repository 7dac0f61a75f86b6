"""OpenTelemetry-native receiver for the Grafana ``macropower-analytics-panel`` plugin.

The public API is what ``__all__`` lists; everything else is private and may change.
"""

from __future__ import annotations

from otel_panel_receiver.config import Settings, load_settings
from otel_panel_receiver.errors import ConfigError, PayloadError, ReceiverError
from otel_panel_receiver.model import EventKind, PanelEvent, SessionUpdate
from otel_panel_receiver.payload import decode
from otel_panel_receiver.providers import Telemetry, build_telemetry
from otel_panel_receiver.receiver import Receiver
from otel_panel_receiver.stores import MemorySessionStore, SessionStore
from otel_panel_receiver.telemetry import Recorder
from otel_panel_receiver.version import __version__
from otel_panel_receiver.web import create_app

__all__ = [
    "ConfigError",
    "EventKind",
    "MemorySessionStore",
    "PanelEvent",
    "PayloadError",
    "Receiver",
    "ReceiverError",
    "Recorder",
    "SessionStore",
    "SessionUpdate",
    "Settings",
    "Telemetry",
    "__version__",
    "build_telemetry",
    "create_app",
    "decode",
    "load_settings",
]
