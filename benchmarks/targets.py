"""The receiver's targets, in one place: reported beside each figure, never asserted."""

from __future__ import annotations

from typing import Final

from benchmarks.report import Target

__all__ = [
    "BYTES_PER_SESSION",
    "P99_MS",
    "PIPELINE_US",
    "RECEIVER_OVER_BARE",
    "SCRAPE_MS_AT_2000",
    "UPSTREAM_BYTES_PER_SESSION",
]

#: Requests/s of the receiver divided by the bare Falcon app's, same server, same run.
RECEIVER_OVER_BARE: Final = Target(0.6, "", at_least=True)
#: p99 latency of ``POST /write`` at 16 connections.
P99_MS: Final = Target(10, " ms")
#: CPU per payload of the in-process pipeline (decode, session, counters, log record).
PIPELINE_US: Final = Target(50, " µs")
#: RSS per tracked session.
BYTES_PER_SESSION: Final = Target(256, " B")
#: ``GET /metrics`` latency with 2,000 series.
SCRAPE_MS_AT_2000: Final = Target(50, " ms")
#: What the upstream Go receiver holds per session (measured on it), for comparison only.
UPSTREAM_BYTES_PER_SESSION: Final = 1_800
