"""The entry point for WSGI servers: ``benchmarks.bare_wsgi:app``."""

from __future__ import annotations

from benchmarks.bare_app import create_app

__all__ = ["app"]

app = create_app()
