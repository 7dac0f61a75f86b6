"""OpenTelemetry-native receiver for the Grafana ``macropower-analytics-panel`` plugin.

The public API is what ``__all__`` lists, plus the ``testing`` module; everything else is
private and may change. Names are imported on first use, so ``import otel_panel_receiver``
alone costs nothing, and ``decode`` does not load Falcon or the OpenTelemetry SDK.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from otel_panel_receiver.app import ReceiverApp, create_app
    from otel_panel_receiver.config import Settings, load_settings
    from otel_panel_receiver.errors import ConfigError, PayloadError, ReceiverError
    from otel_panel_receiver.export import Telemetry, build_telemetry, session_views
    from otel_panel_receiver.model import EventKind, PanelEvent, SessionUpdate
    from otel_panel_receiver.payload import decode
    from otel_panel_receiver.receiver import Receiver
    from otel_panel_receiver.recorder import Recorder
    from otel_panel_receiver.sessions import SessionRules, session_key
    from otel_panel_receiver.stores import (
        LmdbSessionStore,
        MemorySessionStore,
        RedisSessionStore,
        SessionStore,
        SqliteSessionStore,
        open_store,
    )
    from otel_panel_receiver.traces import SessionTracer
    from otel_panel_receiver.version import __version__

#: Where each public name lives.
_WHERE: Final = {
    "ReceiverApp": "app",
    "create_app": "app",
    "Settings": "config",
    "load_settings": "config",
    "ConfigError": "errors",
    "PayloadError": "errors",
    "ReceiverError": "errors",
    "Telemetry": "export",
    "build_telemetry": "export",
    "session_views": "export",
    "EventKind": "model",
    "PanelEvent": "model",
    "SessionUpdate": "model",
    "decode": "payload",
    "Receiver": "receiver",
    "Recorder": "recorder",
    "SessionRules": "sessions",
    "session_key": "sessions",
    "LmdbSessionStore": "stores",
    "MemorySessionStore": "stores",
    "RedisSessionStore": "stores",
    "SessionStore": "stores",
    "SqliteSessionStore": "stores",
    "open_store": "stores",
    "SessionTracer": "traces",
    "__version__": "version",
}

__all__ = [
    "ConfigError",
    "EventKind",
    "LmdbSessionStore",
    "MemorySessionStore",
    "PanelEvent",
    "PayloadError",
    "Receiver",
    "ReceiverApp",
    "ReceiverError",
    "Recorder",
    "RedisSessionStore",
    "SessionRules",
    "SessionStore",
    "SessionTracer",
    "SessionUpdate",
    "Settings",
    "SqliteSessionStore",
    "Telemetry",
    "__version__",
    "build_telemetry",
    "create_app",
    "decode",
    "load_settings",
    "open_store",
    "session_key",
    "session_views",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
