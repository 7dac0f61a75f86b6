"""How long and how large each benchmark runs: the full plan and the CI smoke."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["FULL", "QUICK", "Plan"]


@dataclass(frozen=True, slots=True)
class Plan:
    """Sizes and durations of one run; ``quick`` is the seconds-long smoke CI runs."""

    quick: bool
    http_seconds: float  # each measured wrk run
    http_warmup_seconds: float  # an unmeasured wrk run first, on the same server
    http_two_workers: bool  # also serve the bare app with 2 workers (the ceiling to come)
    pipeline_payloads: int  # per repeat
    pipeline_repeats: int
    memory_sessions: tuple[int, ...]
    memory_traced: tuple[int, ...]  # also measured under tracemalloc (slower)
    scrape_series: tuple[int, ...]
    scrape_repeats: int


FULL: Final = Plan(
    quick=False,
    http_seconds=10,
    http_warmup_seconds=2,
    http_two_workers=True,
    pipeline_payloads=20_000,
    pipeline_repeats=5,
    memory_sessions=(10_000, 100_000),
    memory_traced=(10_000, 100_000),
    scrape_series=(100, 2_000, 10_000),
    scrape_repeats=15,
)

QUICK: Final = Plan(
    quick=True,
    http_seconds=2,
    http_warmup_seconds=1,
    http_two_workers=False,
    pipeline_payloads=3_000,
    pipeline_repeats=3,
    memory_sessions=(10_000,),
    memory_traced=(10_000,),
    scrape_series=(100, 2_000, 10_000),
    scrape_repeats=3,
)
