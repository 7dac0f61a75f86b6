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

The same count is made of the tree of :data:`BEFORE_COMMIT`, where the pipeline targets were set
against 25.8 and 41.9 µs (``docs/benchmarks.md`` of that commit), extracted with ``git archive``
and fed the same bodies (``instructions_child.py``). Instructions now ÷ instructions then,
times the µs measured then, is what the pipeline would take at that run's pace: the targets
checked on a figure no drift of the machine moves. A clone without that commit (shallow), or
dependencies that tree no longer runs on, leave the count of today's tree alone, and say why.

Run in full runs only: each child takes a minute or two under callgrind, two at a time.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

from benchmarks import targets
from benchmarks.plan import Plan
from benchmarks.report import Table
from benchmarks.servers import REPO

__all__ = ["callgrind_total", "run"]

SMALL: Final = 1_000
LARGE: Final = 3_000
SETTINGS: Final = {"disabled": True, "logfmt → /dev/null": False}  # disable_session_log
#: The commit whose pipeline the targets were set against, and its µs then (session log off,
#: logfmt), with each target.
BEFORE_COMMIT: Final = "99b6aab"
BEFORE_US: Final = {
    "disabled": (25.8, targets.PIPELINE_SILENT_US),
    "logfmt → /dev/null": (41.9, targets.PIPELINE_LOGGED_US),
}
CHILD: Final = Path(__file__).with_name("instructions_child.py")


def callgrind_total(text: str) -> int:
    """Return the instructions a callgrind output file counted (its ``totals:`` line)."""
    for line in text.splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise ValueError("no totals: line in the callgrind output")


def _count(valgrind: str, root: Path, silent: bool, payloads: int, scratch: Path) -> int:
    """Return the instructions callgrind counts for ``root``'s pipeline on ``payloads``."""
    out = scratch / f"callgrind-{root.name}-{int(silent)}-{payloads}.out"
    env = dict(os.environ, PYTHONHASHSEED="0")
    subprocess.run(
        [valgrind, "--tool=callgrind", f"--callgrind-out-file={out}",
         sys.executable, str(CHILD), str(root), str(int(silent)), str(payloads)],
        cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        timeout=900,
    )  # fmt: skip
    return callgrind_total(out.read_text())


def _extract(commit: str, into: Path) -> str:
    """Extract ``commit``'s tree into ``into``; return why not, or ``""``."""
    try:
        tar = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", commit],
            check=True, capture_output=True, timeout=120,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        return f"git archive {commit} failed ({exc}): a shallow clone lacks it"
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(into, filter="data")
    return ""


def _per_payload(valgrind: str, root: Path, scratch: Path) -> dict[str, float]:
    """Return ``root``'s instructions per payload for each session log setting."""
    runs = [(silent, n) for silent in SETTINGS.values() for n in (SMALL, LARGE)]
    with ThreadPoolExecutor(max_workers=2) as pool:  # counts do not depend on the pace
        totals = list(pool.map(lambda run: _count(valgrind, root, run[0], run[1], scratch), runs))
    counted = dict(zip(runs, totals, strict=True))
    return {
        where: (counted[silent, LARGE] - counted[silent, SMALL]) / (LARGE - SMALL)
        for where, silent in SETTINGS.items()
    }


def run(plan: Plan) -> list[Table]:
    """Count the pipeline's instructions per payload, with the session log off and on, now
    and at :data:`BEFORE_COMMIT`."""
    if plan.quick:
        return []
    table = Table(
        "In-process pipeline: instructions per payload (callgrind)",
        ("pipeline", "session log", "instructions/payload", f"at {BEFORE_COMMIT}",
         "now ÷ then", f"µs at the pace of {BEFORE_COMMIT}'s run", "target", "met"),
    )  # fmt: skip
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        table.notes.append("not measured: valgrind is not installed (Debian's package valgrind).")
        return [table]
    with tempfile.TemporaryDirectory(prefix="otel-panel-receiver-callgrind-") as scratch:
        now = _per_payload(valgrind, REPO, Path(scratch))
        before_tree = Path(scratch) / BEFORE_COMMIT
        why = _extract(BEFORE_COMMIT, before_tree)
        then: dict[str, float] = {}
        if not why:
            try:
                then = _per_payload(valgrind, before_tree, Path(scratch))
            except subprocess.CalledProcessError as exc:  # the old tree on newer dependencies
                lines = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
                why = f"its pipeline failed ({lines[-1] if lines else exc})"
    for where, per in now.items():
        table.figures[f"instructions: pipeline, {where}"] = per
        if not then:
            table.add("Receiver.handle(body), recorder and store", where, f"{per:,.0f}",
                      "", "", "", "", "")  # fmt: skip
            continue
        ratio = per / then[where]
        us, target = BEFORE_US[where]
        paced = us * ratio
        shown = f"{paced:.1f}"
        what = f"pipeline µs/payload from instructions, session log {where}"
        verdict = table.check(what, shown, target, paced)
        table.add("Receiver.handle(body), recorder and store", where, f"{per:,.0f}",
                  f"{then[where]:,.0f}", f"{ratio:.3f}", shown, str(target), verdict)  # fmt: skip
    table.notes.append(
        f"the pipeline of the targets (see the CPU table above) on the first {SMALL:,} and the "
        f"first {LARGE:,} payloads of the same mix, each in a child process under valgrind "
        "--tool=callgrind (PYTHONHASHSEED=0); the difference of the two totals over the "
        "difference of the counts, every thread included. Unlike the µs, the machine's pace "
        "does not move it: on 2026-12-03 four runs of the same code agreed within 900 "
        "instructions with the log off and 2,100 with logfmt (threads' work follows the "
        f"clock). at {BEFORE_COMMIT}: the same count of that commit's tree (git archive), "
        "given the same bodies, where the pipeline took 25.8 µs with the session log off and "
        "41.9 with logfmt, the figures the targets of 15 and 25 µs were set against; µs at "
        "its pace = those µs times now ÷ then."
        + (f" Not counted at {BEFORE_COMMIT}: {why}." if why else "")
    )
    return [table]
