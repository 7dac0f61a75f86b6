"""``python -m otel_panel_receiver``: the same as the ``otel-panel-receiver`` command."""

from __future__ import annotations

import sys

from otel_panel_receiver.cli import main

if __name__ == "__main__":
    sys.exit(main())
