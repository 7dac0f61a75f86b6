"""Benchmarks of otel-panel-receiver: programs that print figures and ratios, never tests.

Entry point: ``python -m benchmarks run`` (full, writes ``docs/benchmarks.md``) or
``python -m benchmarks --quick`` (the CI smoke). Modules, one job each: ``payloads`` (the request
mix), ``post.lua`` (wrk's side of it), ``servers``, ``peers`` (rotel, redis-server) and ``wrk``
(processes), ``receivers`` (which app and store each HTTP row serves), ``loadrun`` (serve, load,
read the CPU), ``bare_app`` (the baseline), the sections ``pipeline`` (with ``store_pipeline``
and ``lmdb_calls``), ``instructions`` (with ``instructions_child``, run under callgrind),
``scrape``, ``session_memory``, ``http_ingest`` (with ``http_rows``), ``collector_down`` and
``otlp_tuning`` (with ``otlp_batch``), then ``history`` (before and after of past changes),
``targets`` and ``report`` (tables, Markdown).
"""
