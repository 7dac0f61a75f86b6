"""The receiver's targets, in one place: reported beside each figure, never asserted."""

from __future__ import annotations

from typing import Final

from benchmarks.report import Target

__all__ = [
    "BYTES_PER_SESSION",
    "FLOOD_SCRAPE_MS",
    "GO_LOG_OFF",
    "GO_LOG_ON",
    "HOSTILE_BODY_CPU_MS",
    "P99_MS",
    "PIPELINE_LOGGED_US",
    "PIPELINE_SILENT_US",
    "RECEIVER_OVER_BARE",
    "SCRAPE_MS_AT_2000",
    "STALL_DELAY_MS",
    "UPSTREAM_BYTES_PER_SESSION",
    "WORKERS_GAIN",
]

#: Requests/s of the receiver divided by the bare Falcon app's, same server, same run.
RECEIVER_OVER_BARE: Final = Target(0.6, "", at_least=True)
#: p99 latency of ``POST /write`` at 16 connections.
P99_MS: Final = Target(10, " ms")
#: CPU per payload of the in-process pipeline (decode, session, counters, log record), with
#: the session log in logfmt and without it.
PIPELINE_LOGGED_US: Final = Target(25, " µs")
PIPELINE_SILENT_US: Final = Target(15, " µs")
#: Requests/s of the command's default server (one worker) divided by the upstream Go
#: receiver's, both with the session log on, and both with it off.
GO_LOG_ON: Final = Target(0.5, "", at_least=True)
GO_LOG_OFF: Final = Target(0.6, "", at_least=True)
#: Requests/s of the command's default server with 2 workers (their default shared store)
#: divided by its requests/s with 1 worker.
WORKERS_GAIN: Final = Target(1.3, "", at_least=True)
#: RSS per tracked session.
BYTES_PER_SESSION: Final = Target(256, " B")
#: ``GET /metrics`` latency with 2,000 series.
SCRAPE_MS_AT_2000: Final = Target(50, " ms")
#: What the upstream Go receiver holds per session (measured on it), for comparison only.
UPSTREAM_BYTES_PER_SESSION: Final = 1_800
#: CPU to answer one 64 KiB body of any shape (decode, rules, counters, log line).
HOSTILE_BODY_CPU_MS: Final = Target(100, " ms")
#: How much stalled or slow clients may delay a normal POST.
STALL_DELAY_MS: Final = Target(100, " ms")
#: A scrape of /metrics after a flood of new label sets.
FLOOD_SCRAPE_MS: Final = Target(1000, " ms")
