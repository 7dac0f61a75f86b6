"""The panel's payloads: wire shapes, flattened and 1.x forms, decoded into a ``PanelEvent``."""

from __future__ import annotations

from otel_panel_receiver.payload._decode import decode, load, validation_error
from otel_panel_receiver.payload._wire import MAX_TIME

__all__ = ["MAX_TIME", "decode", "load", "validation_error"]
