"""Changes the suite measured, with the figure before and after, both taken in the same run.

Each change names two figures the sections keep in ``Table.figures``: the old way (still
measured: a rebuilt code path, or a server setting) and the current one. Quoting figures of
an earlier run would compare different days of a machine that drifts 20 %.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from benchmarks.report import Table

__all__ = ["CHANGES", "Change", "table"]

_GTHREAD: Final = "gunicorn gthread ({}) x1, receiver, memory store: {}"


@dataclass(frozen=True, slots=True)
class Change:
    """A change, the figure it moved, and the keys of that figure before and after it."""

    change: str
    commit: str
    figure: str
    before: str
    after: str
    digits: int = 1


CHANGES: Final = (
    Change(
        "the stdout-only log line through a minimal logs-API provider instead of the SDK's "
        "LoggerProvider and SimpleLogRecordProcessor",
        "3ae6d59",
        "Receiver.handle CPU µs/payload, session log logfmt → /dev/null",
        "pipeline: whole, sdk log",
        "pipeline: whole, logged",
    ),
    Change(
        "unflatten makes lists of the objects it builds as it finds them (the path of each key "
        "remembered), instead of walking the whole tree a second time",
        "5d64f56",
        "unflatten CPU µs per flattened payload",
        "pipeline: unflatten, two passes",
        "pipeline: unflatten",
    ),
    Change(
        "a payload's groups (options, host, dashboard, user, variables) decoded and converted "
        "once per distinct text and remembered, nested or flattened, instead of every time",
        "bae565f, 0cc92d3",
        "decode CPU µs/payload, the benchmark's mix",
        "pipeline: decode, typed path",
        "pipeline: decode",
    ),
    *(
        Change(
            "`--threads` 0 (auto) runs 1 gthread thread with the memory store; it was 4",
            "c62d977",
            f"{what}, gunicorn gthread x1, receiver with the memory store",
            _GTHREAD.format("4 threads", what),
            _GTHREAD.format("1 thread", what),
            digits,
        )
        for what, digits in (("server CPU µs/req", 0), ("req/s", 0), ("p99 ms", 2))
    ),
)


def table(tables: Sequence[Table]) -> Table | None:
    """Return the history table from the figures of ``tables``; ``None`` if none was measured."""
    figures = {key: value for t in tables for key, value in t.figures.items()}
    result = Table(
        "History: before and after, measured in this run",
        ("change", "commit", "figure", "before", "after", "after ÷ before"),
    )
    measured = False
    for c in CHANGES:
        before, after = figures.get(c.before), figures.get(c.after)
        if before is None or after is None:
            result.add(c.change, c.commit, c.figure, "not measured in this run", "", "")
            continue
        measured = True
        ratio = f"{after / before:.2f}" if before else ""
        result.add(
            c.change, c.commit, c.figure, f"{before:,.{c.digits}f}", f"{after:,.{c.digits}f}", ratio
        )
    result.notes.append(
        "before: the old way, measured now beside the current one on the same code and load. "
        "3ae6d59: the receiver through the SDK's log pipeline, rebuilt in "
        "benchmarks/pipeline.py (In-process pipeline section). c62d977: the server as the CLI "
        "ran it before (4 threads) against as it runs it now (1 thread), HTTP ingest section; "
        "with one worker and the memory store more threads only take turns at the GIL. "
        "The unflatten change: the two-pass version rebuilt in benchmarks/pipeline.py, both on "
        "the flattened payloads of the mix, decoded to JSON values first. The remembered "
        "groups: the typed path the receiver keeps for what its fast path refuses, timed alone "
        "on the same mix (In-process pipeline section)."
    )
    return result if measured else None
