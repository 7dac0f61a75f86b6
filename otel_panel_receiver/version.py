"""Who we are: the package version, and the instrumentation scope our telemetry carries."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Final

__all__ = ["BROWSER_SCOPE", "INSTRUMENTATION_SCOPE", "__version__"]

#: The name of the OpenTelemetry meter, logger and tracer of the receiver.
INSTRUMENTATION_SCOPE: Final = "otel_panel_receiver"
#: The scope of the browser metrics' instruments (the metrics a schema defines).
BROWSER_SCOPE: Final = "otel_panel_receiver.browser"

try:
    __version__ = version("otel-panel-receiver")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
