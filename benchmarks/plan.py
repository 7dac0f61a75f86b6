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
    http_two_workers: bool  # also serve the bare app with 2 workers
    http_one_thread: bool  # also gunicorn gthread with 1 thread (the CLI's memory-store default)
    #: Servers (``ServerSpec.kind``) whose 2-worker receiver row runs, with the default store.
    http_shared_store: tuple[str, ...]
    http_redis: bool  # the 2-worker rows of the other shared stores (Redis, SQLite)
    pipeline_payloads: int  # per repeat
    pipeline_repeats: int
    store_payloads: int  # per repeat, for each session store (SQLite and Redis are slower)
    store_repeats: int
    memory_sessions: tuple[int, ...]
    memory_traced: tuple[int, ...]  # also measured under tracemalloc (slower)
    scrape_series: tuple[int, ...]
    scrape_repeats: int
    otlp_repeats: int  # wrk runs of each OTLP tuning variant, interleaved; 0: not run
    otlp_export_batches: int  # in-process export() calls timed per batch size
    #: A build of the upstream Go receiver to load beside ours (``--go-receiver``), or "".
    go_receiver: str = ""
    #: Pairs of slices of the Go receiver and the command's default, served side by side and
    #: loaded in turn, per log setting; the targets against Go take the median ratio of the
    #: pairs. Even: each goes first in half of the pairs.
    go_pairs: int = 8
    go_slice_seconds: float = 3.0
    #: A pair during which other processes used more cores than this, in either slice, was
    #: disturbed: it is shown, not counted, and another pair is measured in its place, up to
    #: ``go_extra_pairs`` more (the pairs counted are then the undisturbed ones).
    go_quiet_cores: float = 0.1
    go_extra_pairs: int = 8


FULL: Final = Plan(
    quick=False,
    http_seconds=10,
    http_warmup_seconds=2,
    http_two_workers=True,
    http_one_thread=True,
    http_shared_store=("gunicorn-sync", "gunicorn-gthread", "granian"),
    http_redis=True,
    pipeline_payloads=20_000,
    pipeline_repeats=5,
    store_payloads=5_000,
    store_repeats=3,
    memory_sessions=(10_000, 100_000),
    memory_traced=(10_000, 100_000),
    scrape_series=(100, 2_000, 10_000),
    scrape_repeats=15,
    otlp_repeats=2,
    otlp_export_batches=20,
)

QUICK: Final = Plan(
    quick=True,
    http_seconds=2,
    http_warmup_seconds=1,
    http_two_workers=False,
    http_one_thread=False,
    http_shared_store=("gunicorn-gthread",),  # one smoke of the CLI with a shared store
    http_redis=False,
    pipeline_payloads=3_000,
    pipeline_repeats=3,
    store_payloads=300,
    store_repeats=1,
    memory_sessions=(10_000,),
    memory_traced=(10_000,),
    scrape_series=(100, 2_000, 10_000),
    scrape_repeats=3,
    otlp_repeats=0,
    otlp_export_batches=3,
    go_pairs=2,
    go_slice_seconds=2.0,
    go_extra_pairs=0,
)
