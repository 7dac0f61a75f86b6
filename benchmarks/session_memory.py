"""Measure resident memory per tracked session, each size in a fresh Python process.

``python -m benchmarks.session_memory N [--traced]`` is the probe: it builds the receiver as the
service does, lets a warm-up of sessions in, then ``N`` more, and prints the memory before and
after as JSON: RSS, or with ``--traced`` the Python heap as ``tracemalloc`` counts it (exact, free
of allocator slack, but tracemalloc's own bookkeeping inflates RSS, hence a separate process).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

from benchmarks import targets
from benchmarks.plan import Plan
from benchmarks.report import Table

__all__ = ["measure", "run"]

_WARMUP = 2_000
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * _PAGE


def measure(sessions: int, *, traced: bool = False) -> dict[str, float]:
    """Return the memory before and after ``sessions`` new live sessions, in this process."""
    # Imported here: the probe's baseline then holds exactly what the service would import.
    from benchmarks.payloads import build_mix
    from otel_panel_receiver import Settings, create_app

    # The session log is off: a log record is written and dropped, never kept.
    settings = Settings(disable_session_log=True, max_cache_size=sessions + _WARMUP)
    app = create_app(settings)
    receiver = app.receiver
    starts = build_mix().session_starts()
    for _ in range(_WARMUP):
        receiver.handle(next(starts))
    gc.collect()
    if traced:
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0] if traced else _rss()
    began = time.process_time()
    for _ in range(sessions):
        receiver.handle(next(starts))
    cpu = time.process_time() - began
    gc.collect()
    after = tracemalloc.get_traced_memory()[0] if traced else _rss()
    live = len(receiver.store)
    if live != sessions + _WARMUP:
        raise RuntimeError(f"expected {sessions + _WARMUP} live sessions, the store holds {live}")
    return {"sessions": sessions, "before": before, "after": after, "cpu_s": cpu}


def _probe(sessions: int, *, traced: bool = False) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.session_memory",
            str(sessions),
            *(["--traced"] if traced else []),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if out.returncode != 0:
        raise RuntimeError(f"memory probe for {sessions} sessions failed:\n{out.stderr[-3000:]}")
    result: dict[str, float] = json.loads(out.stdout.splitlines()[-1])
    return result


def run(plan: Plan) -> list[Table]:
    """Probe each of ``plan.memory_sessions`` in its own fresh process."""
    target = targets.BYTES_PER_SESSION
    table = Table(
        "Memory: RSS growth per tracked session",
        (
            "live sessions",
            "RSS before MiB",
            "RSS growth MiB",
            "RSS bytes/session",
            "traced heap bytes/session",
            "target",
            "met",
        ),
    )
    for sessions in plan.memory_sessions:
        probe = _probe(sessions)
        traced = _probe(sessions, traced=True) if sessions in plan.memory_traced else None
        per = (probe["after"] - probe["before"]) / sessions
        heap = f"{(traced['after'] - traced['before']) / sessions:,.0f}" if traced else "not run"
        table.add(
            f"{sessions:,}",
            f"{probe['before'] / 2**20:.1f}",
            f"{(probe['after'] - probe['before']) / 2**20:.1f}",
            f"{per:,.0f}",
            heap,
            target,
            table.check(f"RSS bytes/session at {sessions:,}", f"{per:,.0f} B", target, per),
        )
    table.notes.append(
        f"each size in a fresh process: the receiver built as the service builds it (memory "
        f"store, Prometheus reader, session log off), {_WARMUP:,} warm-up sessions, then the "
        f"measured ones (start payloads of the rotating mix, ~270 label sets); growth of "
        f"/proc/self/statm RSS after gc.collect(); the traced heap is the same run in another "
        f"fresh process under tracemalloc (Python allocations only, no allocator slack; RSS "
        f"at 10k is coarse: freed pools of the warm-up are reused). The upstream Go receiver "
        f"holds about {targets.UPSTREAM_BYTES_PER_SESSION:,} bytes per session."
    )
    return [table]


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]), traced="--traced" in sys.argv[2:])))
