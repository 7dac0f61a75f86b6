"""The benchmark command: run the sections, print the tables, write ``docs/benchmarks.md``."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Final

from benchmarks import (
    collector_down,
    history,
    hostile,
    http_ingest,
    instructions,
    otlp_tuning,
    pipeline,
    scrape,
    session_memory,
)
from benchmarks.peers import find_redis_server, redis_version
from benchmarks.plan import FULL, QUICK, Plan
from benchmarks.report import Machine, Table, machine, render_markdown, render_text, summary
from benchmarks.servers import REPO
from benchmarks.wrk import find_wrk, wrk_version

__all__ = ["SECTIONS", "main"]

Section = Callable[[Plan], list[Table]]

#: In running order: the in-process ones first, before servers share the two cores.
SECTIONS: Final[dict[str, Section]] = {
    "pipeline": pipeline.run,
    "instructions": instructions.run,
    "scrape": scrape.run,
    "memory": session_memory.run,
    "http": http_ingest.run,
    "collector": collector_down.run,
    "otlp": otlp_tuning.run,
    "hostile": hostile.run,
}
DOCS: Final = REPO / "docs" / "benchmarks.md"


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of ``python -m benchmarks``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure the receiver: HTTP ingest, pipeline CPU, memory, scrape cost. "
        "Prints figures and their targets; never asserts a figure. Installs nothing.",
    )
    parser.add_argument("command", nargs="?", choices=("run",), default="run", help="run (default)")
    parser.add_argument(
        "--quick", action="store_true", help="seconds-long smoke (CI): short runs, no docs written"
    )
    parser.add_argument(
        "--only",
        metavar="SECTION[,SECTION]",
        help=f"run only these sections, of: {', '.join(SECTIONS)}",
    )
    parser.add_argument(
        "--write-docs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"write the tables to {DOCS.relative_to(REPO)} "
        "(default: yes for a full run of every section, no otherwise)",
    )
    parser.add_argument(
        "--http-seconds", type=float, metavar="S", help="length of each measured wrk run"
    )
    parser.add_argument(
        "--go-receiver",
        metavar="PATH",
        help="a build of the upstream Go receiver: loaded like ours (log on and off), every "
        "receiver row then also shown as a ratio to it (docs/benchmarks.md says how to build "
        "one from its public source, outside this repository)",
    )
    return parser


def _sections(only: str | None) -> list[str]:
    if not only:
        return list(SECTIONS)
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown section {unknown[0]!r}: expected one of {', '.join(SECTIONS)}")
    return names


def _run_sections(names: Sequence[str], plan: Plan) -> tuple[list[Table], list[str]]:
    """Run and print each section; return the tables and the names of the sections that failed."""
    tables: list[Table] = []
    failed: list[str] = []
    for name in names:
        print(f"-- {name} ...", file=sys.stderr, flush=True)
        try:
            done = SECTIONS[name](plan)
        except Exception:  # report the section and go on with the others
            traceback.print_exc()
            failed.append(name)
            continue
        print(render_text(done), flush=True)
        tables += done
    return tables, failed


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks; return 1 if a section failed or a result is invalid, else 0.

    A bad command line exits with status 2.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.http_seconds:
        plan = dataclasses.replace(plan, http_seconds=args.http_seconds)
    if args.go_receiver:
        if not os.access(args.go_receiver, os.X_OK):
            parser.error(f"--go-receiver {args.go_receiver!r} is no executable file")
        plan = dataclasses.replace(plan, go_receiver=os.path.abspath(args.go_receiver))
    try:
        names = _sections(args.only)
    except ValueError as exc:
        parser.error(str(exc))  # exits with status 2
    write_docs = args.write_docs
    if write_docs is None:
        write_docs = not args.quick and names == list(SECTIONS)
    began, load_before = time.monotonic(), os.getloadavg()[0]
    wrk, redis = find_wrk(), find_redis_server()
    tools = {"wrk": wrk_version(wrk)} if wrk else {}
    if redis:
        tools["redis-server"] = redis_version(redis)
    facts = machine(tools)  # the source as it was at the start
    tables, failed = _run_sections(names, plan)
    past = history.table(tables)
    if past is not None:
        print(render_text([past]), flush=True)
        tables.append(past)
    if any(t.checks for t in tables):
        overview = summary(tables)
        print(render_text([overview]), flush=True)
        tables.insert(0, overview)
    problems = list(dict.fromkeys(p for t in tables for p in t.problems))
    problems += [f"section {n} failed" for n in failed]
    missed = sum(t.missed for t in tables)
    print(f"{len(tables)} tables in {time.monotonic() - began:.0f} s; targets missed: {missed}.")
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    load = (
        f"1-minute load average {load_before:.2f} at the start, {os.getloadavg()[0]:.2f} at the end"
    )
    print(f"{load} (other work on the machine skews absolute figures).")
    if write_docs and not problems:
        _write_docs(tables, facts, plan, argv, load)
    elif write_docs:
        print(f"{DOCS.relative_to(REPO)} not written: the run has problems", file=sys.stderr)
    return 1 if problems else 0


def _write_docs(
    tables: list[Table], facts: Machine, plan: Plan, argv: Sequence[str] | None, load: str
) -> None:
    words = list(sys.argv[1:] if argv is None else argv)
    if "--go-receiver" in words:  # a local path outside the repository: say what it is instead
        at = words.index("--go-receiver") + 1
        words[at : at + 1] = ["<a build of the upstream receiver>"]
    words = [
        "--go-receiver <a build of the upstream receiver>" if w.startswith("--go-receiver=") else w
        for w in words
    ]
    command = " ".join(["python -m benchmarks", *words]) if words else "python -m benchmarks run"
    preamble = [
        "Figures of `python -m benchmarks run` (see `benchmarks/`). Targets steer the code and",
        "are never asserted. Absolute figures drift about 20 % from run to run on this machine;",
        "compare ratios measured in the same run. `python -m benchmarks --quick` is the",
        "seconds-long smoke CI runs; it prints the same tables from shorter runs and does not",
        "write this page.",
        "",
        f"Plan: {'quick' if plan.quick else 'full'}; every server and peer (rotel, "
        f"redis-server) on 127.0.0.1, started and stopped by the harness; {load}.",
    ]
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text(render_markdown(tables, facts, command=command, preamble=preamble))
    print(f"wrote {DOCS.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
