"""Measure the in-process pipeline: CPU per payload of each step and of ``Receiver.handle``."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import IO, Any

from benchmarks import targets
from benchmarks.payloads import build_mix
from benchmarks.plan import Plan
from benchmarks.report import Table
from otel_panel_receiver import (
    MemorySessionStore,
    PanelEvent,
    Receiver,
    Recorder,
    SessionUpdate,
    Settings,
    build_telemetry,
    create_app,
    decode,
)

__all__ = ["run"]


class _NoRecorder:
    """Stand in for the recorder, so that a timing covers the session update alone."""

    def record(self, event: PanelEvent, update: SessionUpdate, *rest: object) -> None:
        """Record nothing (whatever else the receiver passes, such as the session key)."""


Work = Callable[[], None]


def _cpu_us(prepare: Callable[[], Work], count: int, repeats: int) -> float:
    """Return the median CPU µs per item of ``prepare()()`` over ``repeats`` fresh runs."""
    samples = []
    for _ in range(repeats):
        work = prepare()  # untimed: a fresh session store where the step needs one
        start = time.process_time_ns()
        work()
        samples.append((time.process_time_ns() - start) / count / 1_000)
    return statistics.median(samples)


def _fresh_receiver(recorder: Any) -> Receiver:
    """Return a receiver with an empty store configured as the service's, around ``recorder``."""
    settings = Settings()
    store = MemorySessionStore(max_size=settings.max_cache_size, idle_ttl=settings.session_ttl)
    return Receiver(store, recorder)


def _decoding(bodies: Sequence[bytes], now: int) -> Callable[[], Work]:
    def work() -> None:
        for body in bodies:
            decode(body, now=now)

    return lambda: work


def _updating(events: Sequence[PanelEvent]) -> Callable[[], Work]:
    def prepare() -> Work:
        receiver = _fresh_receiver(_NoRecorder())

        def work() -> None:
            for event in events:
                receiver.handle_event(event)

        return work

    return prepare


def _recording(
    recorder: Recorder, pairs: Sequence[tuple[PanelEvent, SessionUpdate]]
) -> Callable[[], Work]:
    def work() -> None:
        for event, update in pairs:
            recorder.record(event, update)

    return lambda: work


def _handling(settings: Settings, bodies: Sequence[bytes], devnull: IO[str]) -> Callable[[], Work]:
    recorder = create_app(
        settings, telemetry=build_telemetry(settings, stream=devnull)
    ).receiver.recorder

    def prepare() -> Work:
        receiver = _fresh_receiver(recorder)

        def work() -> None:
            for body in bodies:
                receiver.handle(body)

        return work

    return prepare


def _measure(bodies: Sequence[bytes], repeats: int, devnull: IO[str]) -> dict[str, float]:
    now = int(time.time())
    events = [decode(b, now=now) for b in bodies]
    updater = _fresh_receiver(_NoRecorder())
    pairs = [(e, updater.handle_event(e)) for e in events]
    silent = Settings(disable_session_log=True)
    counting = Recorder(build_telemetry(silent).meter_provider, None, session_log=False)
    telemetry = build_telemetry(Settings(), stream=devnull)
    counting_logging = Recorder(telemetry.meter_provider, telemetry.logger_provider)
    steps = {
        "decode": _decoding(bodies, now),
        "session": _updating(events),
        "counters": _recording(counting, pairs),
        "counters+log": _recording(counting_logging, pairs),
        "whole, logged": _handling(Settings(), bodies, devnull),
        "whole, silent": _handling(silent, bodies, devnull),
    }
    return {name: _cpu_us(prepare, len(bodies), repeats) for name, prepare in steps.items()}


def run(plan: Plan) -> list[Table]:
    """Time each step on the same rotating mix the HTTP benchmark posts."""
    mix = build_mix()
    bodies = mix.bodies(plan.pipeline_payloads)
    with open(os.devnull, "w", encoding="utf-8") as devnull:
        us = _measure(bodies, plan.pipeline_repeats, devnull)
    log = us["counters+log"] - us["counters"]
    target = targets.PIPELINE_US
    table = Table(
        "In-process pipeline: CPU per payload",
        ("step", "session log", "CPU µs/payload", "target", "met"),
    )
    table.add("decode (payload.decode)", "", f"{us['decode']:.1f}", "", "")
    table.add("session update (key, rules, memory store)", "", f"{us['session']:.1f}", "", "")
    table.add("counters (attributes, 2 counters)", "", f"{us['counters']:.1f}", "", "")
    table.add("log record (render logfmt, write)", "logfmt → /dev/null", f"{log:.1f}", "", "")
    parts = us["decode"] + us["session"] + us["counters+log"]
    table.add("sum of the steps", "logfmt → /dev/null", f"{parts:.1f}", "", "")
    for key, where in (("whole, logged", "logfmt → /dev/null"), ("whole, silent", "disabled")):
        shown = f"{us[key]:.1f}"
        verdict = table.check(f"pipeline µs/payload, session log {where}", shown, target, us[key])
        table.add("whole: Receiver.handle(body)", where, shown, target, verdict)
    starts, beats, ends = (mix.count(k) for k in ("start", "heartbeat", "end"))
    flat = sum(b"options.flatten" in b for b in bodies) / len(bodies)
    table.notes.extend(
        [
            f"{len(bodies):,} payloads of the rotating mix ({starts} starts, {beats} heartbeats, "
            f"{ends} ends per round of {len(mix.templates):,}; {flat:.0%} flattened; mean body "
            f"{sum(map(len, bodies)) / len(bodies):,.0f} bytes), median of "
            f"{plan.pipeline_repeats} runs of process CPU time, each with a fresh session store.",
            "log record = (counters + log record) - counters, measured with the same Recorder API; "
            "the stdout exporter writes and flushes one line per payload into /dev/null.",
        ]
    )
    return [table]
