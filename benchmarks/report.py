"""Tables of figures with their targets: printed as text, written as Markdown."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Final

__all__ = [
    "NA",
    "Machine",
    "Table",
    "Target",
    "machine",
    "render_markdown",
    "render_text",
    "summary",
]

NA: Final = "n/a"

#: Packages whose versions are written beside the figures.
_PACKAGES: Final = (
    "otel-panel-receiver",
    "falcon",
    "msgspec",
    "opentelemetry-sdk",
    "opentelemetry-exporter-prometheus",
    "prometheus-client",
    "gunicorn",
    "granian",
    "redis",
    "rotel",
)


@dataclass(frozen=True, slots=True)
class Target:
    """A figure's target, reported beside it and never asserted."""

    limit: float
    unit: str
    at_least: bool = False

    def __str__(self) -> str:
        return f"{'≥' if self.at_least else '≤'} {self.limit:g}{self.unit}"

    def verdict(self, value: float | None) -> str:
        """Return ``met``, ``MISSED``, or ``n/a`` when there is no figure."""
        if value is None:
            return NA
        ok = value >= self.limit if self.at_least else value <= self.limit
        return "met" if ok else "MISSED"


@dataclass(slots=True)
class Table:
    """One section's figures, built row by row: a title, column names, text cells, and notes.

    ``problems`` are what makes the run invalid (wrong answers, a missing peer); they are
    printed and turn the exit status to 1, unlike a missed target.
    """

    title: str
    columns: tuple[str, ...]
    rows: list[tuple[str, ...]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    checks: list[tuple[str, str, str, str]] = field(default_factory=list)
    #: Named figures other tables quote (the history of changes), never shown by themselves.
    figures: dict[str, float] = field(default_factory=dict)

    def add(self, *cells: object) -> None:
        """Append a row; every cell is shown as text."""
        if len(cells) != len(self.columns):
            raise ValueError(
                f"row has {len(cells)} cells, table {self.title!r} has {len(self.columns)}"
            )
        self.rows.append(tuple(str(c) for c in cells))

    def check(self, what: str, shown: str, target: Target, value: float | None) -> str:
        """Return the verdict of ``value`` against ``target`` and keep it for the summary."""
        verdict = target.verdict(value)
        self.checks.append((what, shown, str(target), verdict))
        return verdict

    @property
    def missed(self) -> int:
        """Return how many checked figures missed their target."""
        return sum(verdict == "MISSED" for *_, verdict in self.checks)


def summary(tables: Sequence[Table]) -> Table:
    """Return one table of every checked figure, its target and verdict."""
    result = Table("Targets", ("figure", "measured", "target", "met"))
    for table in tables:
        for row in table.checks:
            result.add(*row)
    return result


@dataclass(frozen=True, slots=True)
class Machine:
    """Where and with what the figures were measured."""

    cores: int
    cpu: str
    python: str
    system: str
    packages: dict[str, str]
    tools: dict[str, str]
    source: str
    when: str

    def lines(self) -> list[str]:
        """Return one ``key: value`` line per fact."""
        versions = ", ".join(f"{name} {v}" for name, v in {**self.packages, **self.tools}.items())
        return [
            f"cores: {self.cores}",
            f"CPU: {self.cpu}",
            f"Python: {self.python}",
            f"system: {self.system}",
            f"versions: {versions}",
            f"source: {self.source}",
            f"measured: {self.when}",
        ]


def machine(tools: dict[str, str] | None = None) -> Machine:
    """Return the facts of this machine and of the installed packages."""
    packages = {}
    for name in _PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = "not installed"
    return Machine(
        cores=os.cpu_count() or 0,
        cpu=_cpu_model(),
        python=f"{platform.python_implementation()} {platform.python_version()}",
        system=platform.platform(),
        packages=packages,
        tools=dict(tools or {}),
        source=_source(),
        when=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _source() -> str:
    """Return the repository's commit, and whether the package had uncommitted changes."""
    repo = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        out = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10, check=False
        )
        return out.stdout.strip() if out.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown (not a git checkout)"
    dirty = git("status", "--porcelain", "--", "otel_panel_receiver")
    return f"commit {commit}" + (
        " with uncommitted changes to otel_panel_receiver/" if dirty else ""
    )


def render_text(tables: Sequence[Table]) -> str:
    """Return the tables as aligned plain text."""
    out: list[str] = []
    for table in tables:
        widths = [len(c) for c in table.columns]
        for row in table.rows:
            widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
        out.append(f"== {table.title}")
        out.append(
            "  ".join(c.ljust(w) for c, w in zip(table.columns, widths, strict=True)).rstrip()
        )
        out.append("  ".join("-" * w for w in widths))
        out += [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in table.rows
        ]
        out += [f"   * {note}" for note in table.notes]
        out.append("")
    return "\n".join(out)


def render_markdown(
    tables: Sequence[Table], facts: Machine, *, command: str, preamble: Sequence[str] = ()
) -> str:
    """Return ``docs/benchmarks.md``: how it was made, the machine, then one table per section."""
    out = [
        "# Benchmarks",
        "",
        f"<!-- Written by `{command}`; run it again to refresh. Do not edit by hand. -->",
        "",
        *preamble,
        "",
        "## Machine",
        "",
        *[f"* {line}" for line in facts.lines()],
        "",
    ]
    for table in tables:
        out += [f"## {table.title}", ""]
        out.append("| " + " | ".join(table.columns) + " |")
        out.append("|" + "|".join(" --- " for _ in table.columns) + "|")
        out += ["| " + " | ".join(_md(cell) for cell in row) + " |" for row in table.rows]
        if table.notes:
            out.append("")
            out += [f"* {note}" for note in table.notes]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _md(cell: str) -> str:
    return cell.replace("|", "\\|") or " "
