"""Tune OTLP export: p99 and throughput of ``POST /write`` per batch setting, collector up.

The question: with OTLP on, p99 goes from about 4 to about 40 ms. The hypothesis is the GIL:
the batch processors' threads encode big batches in Python, and meanwhile the request thread
gets the GIL back only once per switch interval (5 ms). So the receiver is loaded (gunicorn sync,
one worker, as in the collector section) with the SDK's standard variables set to other
values: the log batch processor's ``OTEL_BLRP_MAX_EXPORT_BATCH_SIZE`` and
``OTEL_BLRP_SCHEDULE_DELAY``, the span processor's ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``, the metric
interval, and each signal alone. The variants run in turn, ``plan.otlp_repeats`` rounds, so that
drift hits them alike. Beside it, ``otlp_batch`` times one log batch in process.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from benchmarks import otlp_batch
from benchmarks.loadrun import Measurement, measure
from benchmarks.payloads import build_mix
from benchmarks.peers import ROTEL_HINT, rotel_agent, running_collector
from benchmarks.plan import Plan
from benchmarks.receivers import RECEIVER
from benchmarks.report import Table
from benchmarks.servers import ServerSpec, describe
from benchmarks.wrk import INSTALL_HINT, find_wrk

__all__ = ["VARIANTS", "Variant", "run"]

SERVER: Final = ServerSpec("gunicorn-sync")
_LOG_BATCH: Final = "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE"
_LOG_DELAY: Final = "OTEL_BLRP_SCHEDULE_DELAY"
_SPAN_BATCH: Final = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"
_LOGS_ONLY: Final = {"OTEL_METRICS_EXPORTER": "none", "OTEL_TRACES_EXPORTER": "none"}
_SPANS_ONLY: Final = {"OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"}
_QUICK: Final = "not run (--quick)"


@dataclass(frozen=True, slots=True)
class Variant:
    """One setting under load: its name and the variables added to OTLP's; ``None``: OTLP off."""

    name: str
    env: Mapping[str, str] | None


VARIANTS: Final = (
    Variant("OTLP off", None),
    Variant("all signals, SDK defaults (log batch 512, delay 1 s)", {}),
    Variant("all signals, log batch 64", {_LOG_BATCH: "64"}),
    Variant("all signals, log delay 100 ms", {_LOG_DELAY: "100"}),
    Variant("all signals, log and span batch 64", {_LOG_BATCH: "64", _SPAN_BATCH: "64"}),
    Variant(
        "all signals, log and span batch 64, metrics every 60 s (SDK default)",
        {_LOG_BATCH: "64", _SPAN_BATCH: "64", "OTEL_METRIC_EXPORT_INTERVAL": "60000"},
    ),
    Variant("logs only, batch 512", _LOGS_ONLY),
    Variant("logs only, batch 64", {**_LOGS_ONLY, _LOG_BATCH: "64"}),
    Variant("spans only, batch 512", _SPANS_ONLY),
    Variant("spans only, batch 64", {**_SPANS_ONLY, _SPAN_BATCH: "64"}),
)


def _environment(endpoint: str, variant: Variant) -> dict[str, str] | None:
    if variant.env is None:
        return None
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        **variant.env,
    }


def _load_table() -> Table:
    return Table(
        "OTLP tuning: POST /write with the collector up, per batch setting",
        (
            "variant",
            "variables (besides the endpoint)",
            "req/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99 ms of each run",
            "max ms",
            "server CPU µs/req",
            "req/s ÷ OTLP off",
        ),
    )


def _variables(variant: Variant) -> str:
    if variant.env is None:
        return "(no endpoint)"
    return " ".join(f"{k}={v}" for k, v in variant.env.items()) or "(none)"


def _add_variant(table: Table, variant: Variant, runs: Sequence[Measurement], off: float) -> None:
    def median(values: Sequence[float]) -> float:
        return statistics.median(values)

    rate = median([m.wrk.rate for m in runs])
    p99 = median([m.wrk.p99_ms for m in runs])
    table.add(
        variant.name,
        _variables(variant),
        f"{rate:,.0f}",
        f"{median([m.wrk.p50_ms for m in runs]):.2f}",
        f"{median([m.wrk.p90_ms for m in runs]):.2f}",
        f"{p99:.2f}",
        " / ".join(f"{m.wrk.p99_ms:.1f}" for m in runs),
        f"{max(m.wrk.max_ms for m in runs):.1f}",
        f"{median([m.cpu_us for m in runs]):.0f}",
        f"{rate / off:.2f}" if off else "",
    )
    table.figures[f"{variant.name}: p99"] = p99
    table.figures[f"{variant.name}: req/s"] = rate
    for m in runs:
        if m.wrk.non201 or m.wrk.socket_errors:
            table.problems.append(f"OTLP tuning, {variant.name}: answers other than 201 or errors")


def _load_runs(plan: Plan, wrk: str, endpoint: str) -> dict[str, list[Measurement]]:
    """Return each variant's runs, by name."""
    runs: dict[str, list[Measurement]] = {v.name: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="otel-panel-bench-") as tmp:
        round_file = Path(tmp, "round.tsv")
        build_mix().write_wrk_data(round_file)
        for _ in range(plan.otlp_repeats):  # in turn: drift hits every variant alike
            for variant in VARIANTS:
                env = _environment(endpoint, variant)
                runs[variant.name].append(measure(SERVER, RECEIVER, plan, wrk, round_file, env=env))
    return runs


def run(plan: Plan) -> list[Table]:
    """Load the receiver with each variant in turn, then time one log batch in process."""
    load = _load_table()
    wrk, agent = find_wrk(), rotel_agent()
    why = "" if wrk else f"n/a (wrk not installed; {INSTALL_HINT})"
    why = why or ("" if agent else f"n/a (rotel not installed; {ROTEL_HINT})")
    if why:
        load.add(VARIANTS[1].name, "", why, *[""] * 7)
        return [load]
    assert wrk is not None and agent is not None
    with running_collector(agent) as endpoint:
        runs = _load_runs(plan, wrk, endpoint) if plan.otlp_repeats else {}
        exports = otlp_batch.run(plan, endpoint)
    if not runs:
        load.add(VARIANTS[1].name, _variables(VARIANTS[1]), _QUICK, *[""] * 7)
        return [load, exports]
    off = statistics.median(m.wrk.rate for m in runs[VARIANTS[0].name])
    for variant in VARIANTS:
        _add_variant(load, variant, runs[variant.name], off)
    load.notes.extend(_notes(plan, runs, load))
    return [load, exports]


def _reading(table: Table) -> str:
    """Return the comparison the variants were made for, in words, from this run's figures."""

    def p99(index: int) -> str:
        return f"{table.figures[f'{VARIANTS[index].name}: p99']:.1f} ms"

    return (
        f"p99 with OTLP off {p99(0)}; logs alone {p99(6)} at batch 512 and {p99(7)} at 64; "
        f"spans alone {p99(8)} at 512 and {p99(9)} at 64; every signal on: {p99(1)} with the "
        f"SDK defaults, {p99(2)} with a log batch of 64 alone, {p99(4)} with log and span "
        f"batches of 64, {p99(5)} with metrics at the SDK's 60 s besides; a log delay of 100 ms: "
        f"{p99(3)}."
    )


def _notes(plan: Plan, runs: Mapping[str, list[Measurement]], table: Table) -> list[str]:
    some = runs[VARIANTS[1].name][0]
    return [
        _reading(table),
        f"{SERVER.label} x{SERVER.workers}, the receiver with the memory store, wrk as in the "
        f"HTTP ingest section; {plan.otlp_repeats} rounds, each variant once per round in the "
        "order shown; the figures are medians over the rounds (max: the largest of all). OTLP "
        "on: metrics, logs and session spans pushed over http/protobuf to a rotel collector "
        "that drops them, metrics every 1 s (OTEL_METRIC_EXPORT_INTERVAL=1000) unless the row "
        "says otherwise; the SDK's defaults are a log batch of 512 every 1 s (BLRP), a span batch "
        "of 512 every 5 s (BSP). A batch leaves when it is full or when the delay has passed, "
        "whichever comes first: at this rate the log batch fills in well under 1 s.",
        f"command: `{describe(some.argv)}`, with the variables of the row and "
        "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:PORT, "
        "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf.",
    ]
