"""The bare app under granian's RSGI, served as the receiver is: ``benchmarks.bare_rsgi:app``.

The same adapter as ``otel_panel_receiver.rsgi`` (each request read whole, then the WSGI app
in the event loop), so that the receiver ÷ bare ratio on granian compares the apps alone.
"""

from __future__ import annotations

from benchmarks.bare_app import create_app
from otel_panel_receiver.buffered import BufferedRSGI

__all__ = ["app"]

app = BufferedRSGI(create_app(), max_body=65_536, timeout=10.0)
