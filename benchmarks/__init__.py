"""Benchmarks of otel-panel-receiver: programs that print figures and ratios, never tests.

Entry point: ``python -m benchmarks run`` (full, writes ``docs/benchmarks.md``) or
``python -m benchmarks --quick`` (the CI smoke). Modules, one job each: ``payloads`` (the request
mix), ``post.lua`` (wrk's side of it), ``servers`` and ``wrk`` (processes), ``bare_app`` (the
baseline), the sections ``http_ingest``, ``pipeline``, ``session_memory``, ``scrape`` and
``collector_down``, and ``report`` (tables, targets, Markdown).
"""
