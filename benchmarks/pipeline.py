"""Measure the in-process pipeline: CPU per payload of each step and of ``Receiver.handle``."""

from __future__ import annotations

import contextlib
import copy
import os
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO, Any, Final

import msgspec
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    LogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.resources import Resource

from benchmarks import lmdb_calls, store_pipeline, targets
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
    session_key,
)
from otel_panel_receiver.app import ReceiverApp
from otel_panel_receiver.export.logformat import LineRenderer
from otel_panel_receiver.payload import _decode
from otel_panel_receiver.payload._convert import to_event
from otel_panel_receiver.payload._flat import unflatten
from otel_panel_receiver.stores import GuardedStore, SessionStore

__all__ = [
    "GROUPS_COMMIT", "SDK_PATH_COMMIT", "UNFLATTEN_COMMIT", "handling", "run", "service_receiver",
    "two_pass_unflatten",
]  # fmt: skip

#: The commit that moved the stdout-only log line off the SDK's LoggerProvider.
SDK_PATH_COMMIT: Final = "3ae6d59"
#: The commit that made lists of unflattened objects as they are found, without a second walk.
UNFLATTEN_COMMIT: Final = "5d64f56"
#: The commits that decode each distinct group of a payload once (nested, then flattened).
GROUPS_COMMIT: Final = "bae565f, 0cc92d3"


class _NoRecorder:
    """Stand in for the recorder, so that a timing covers the session update alone."""

    def record(
        self, event: PanelEvent, update: SessionUpdate, key: int, *, first_visit: bool = False
    ) -> None:
        """Record nothing (the signature is ``Recorder.record``'s)."""


class _SdkLineExporter(LogRecordExporter):
    """The per-payload line as written before 3ae6d59: the SDK's LoggerProvider and
    SimpleLogRecordProcessor hand each record to this exporter, which renders and writes it."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._renderer = LineRenderer("logfmt")

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        """Render and write the records; one write and flush per batch."""
        text = "".join(
            self._renderer.render(
                r.log_record.severity_text or "info",
                str(r.log_record.body),
                r.log_record.attributes or {},
            )
            for r in batch
        )
        with self._lock:
            self._stream.write(text)
            self._stream.flush()
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release: the stream belongs to the caller."""

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Nothing is buffered."""
        return True


def _sdk_logger_provider(devnull: IO[str]) -> LoggerProvider:
    provider = LoggerProvider(
        resource=Resource.create({"service.name": "otel-panel-receiver"}), shutdown_on_exit=False
    )
    provider.add_log_record_processor(SimpleLogRecordProcessor(_SdkLineExporter(devnull)))
    return provider


Work = Callable[[], None]


def two_pass_unflatten(flat: dict[str, Any]) -> Any:
    """Undo flat.flatten() as the receiver did before UNFLATTEN_COMMIT: build, then walk again.

    Rebuilt here (the receiver no longer has it) to measure the change in the same run.
    """
    root: dict[str, Any] = {}
    for key, value in flat.items():
        node, leaf = root, key
        if "." in key:
            *parents, leaf = key.split(".")
            for part in parents:
                child = node.get(part)
                if type(child) is not dict:
                    child = node[part] = {}
                node = child
        old = node.get(leaf)
        if type(old) is dict and old:
            continue
        node[leaf] = value
    return _listify(root)


def _listify(node: dict[str, Any]) -> Any:
    items = {key: _listify(value) if type(value) is dict else value for key, value in node.items()}
    if items and all(key.isascii() and key.isdigit() for key in items):
        return [items[key] for key in sorted(items, key=int)]
    return items


def _unflattening(docs: Sequence[dict[str, Any]], how: Callable[[Any], Any]) -> Callable[[], Work]:
    def work() -> None:
        for doc in docs:
            how(doc)

    return lambda: work


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


def _decoding(
    bodies: Sequence[bytes], now: int, how: Callable[..., PanelEvent] = decode
) -> Callable[[], Work]:
    def work() -> None:
        for body in bodies:
            how(body, now=now)

    return lambda: work


def typed_decode(body: bytes, *, now: int) -> PanelEvent:
    """Decode as the receiver did before GROUPS_COMMIT: the typed path alone, every group
    decoded and converted each time (the receiver keeps it for what the fast path refuses)."""
    doc = _decode.load(body, _decode._DECODER.decode)
    if _decode._lacks_groups(doc):
        doc = _decode._load(body, _decode._decode_generic)
    return to_event(doc, now)


def _updating(events: Sequence[PanelEvent]) -> Callable[[], Work]:
    def prepare() -> Work:
        receiver = _fresh_receiver(_NoRecorder())

        def work() -> None:
            for event in events:
                receiver.handle_event(event)

        return work

    return prepare


def _recording(
    recorder: Recorder, updates: Sequence[tuple[PanelEvent, SessionUpdate, int]]
) -> Callable[[], Work]:
    def work() -> None:
        for event, update, key in updates:
            recorder.record(event, update, key)

    return lambda: work


def _service_recorder(
    settings: Settings, devnull: IO[str], closing: contextlib.ExitStack
) -> Recorder:
    """Return the recorder the service builds for ``settings``, its log lines to ``devnull``.

    Its app and telemetry are closed with ``closing``: left open, their threads (the table's
    collection every second) would go on taking CPU from the sections measured after this one.
    """
    telemetry = build_telemetry(settings, stream=devnull)
    app = create_app(settings, telemetry=telemetry)
    closing.callback(telemetry.shutdown)
    closing.callback(app.close)
    return app.receiver.recorder


def _sdk_meter_provider(settings: Settings, closing: contextlib.ExitStack) -> Any:
    telemetry = build_telemetry(settings)
    closing.callback(telemetry.shutdown)
    return telemetry.meter_provider


def service_receiver(app: ReceiverApp, store: SessionStore, recorder: Any = None) -> Receiver:
    """Return the app's receiver around ``store`` (guarded as the app guards its own).

    Everything else is the app's: its recorder (unless ``recorder`` is given), outcomes,
    viewer marks, usage ledger and telemetry hook, so that a timing is the service's whole.
    """
    receiver = copy.copy(app.receiver)
    receiver.store = GuardedStore(store)
    if recorder is not None:
        receiver.recorder = recorder
    return receiver


def handling(
    settings: Settings,
    bodies: Sequence[bytes],
    devnull: IO[str],
    closing: contextlib.ExitStack,
    recorder: Any = None,
    *,
    alone: bool = False,
) -> Callable[[], Work]:
    """Time the service's receiver for ``settings`` (its recorder, or ``recorder``).

    ``alone``: its recorder and a store, nothing else (the pipeline as the targets were set).
    """
    telemetry = build_telemetry(settings, stream=devnull)
    app = create_app(settings, telemetry=telemetry)
    closing.callback(telemetry.shutdown)
    closing.callback(app.close)

    def prepare() -> Work:
        store = MemorySessionStore(max_size=settings.max_cache_size, idle_ttl=settings.session_ttl)
        if alone:
            receiver = Receiver(store, app.receiver.recorder)
        else:
            receiver = service_receiver(app, store, recorder)

        def work() -> None:
            for body in bodies:
                receiver.handle(body)

        return work

    return prepare


def _measure(
    bodies: Sequence[bytes], repeats: int, devnull: IO[str], closing: contextlib.ExitStack
) -> dict[str, float]:
    now = int(time.time())
    events = [decode(b, now=now) for b in bodies]
    updater = _fresh_receiver(_NoRecorder())
    # Each event with its update and session key (the tracer's trace id), computed untimed.
    updates = [(e, updater.handle_event(e), session_key(e)) for e in events]
    silent = Settings(disable_session_log=True)
    # The SDK's counters, with and without the log through the SDK: the path before 3ae6d59.
    sdk_counting = Recorder(_sdk_meter_provider(silent, closing), None, session_log=False)
    sdk = _sdk_logger_provider(devnull)
    closing.callback(sdk.shutdown)
    counting_sdk = Recorder(_sdk_meter_provider(silent, closing), sdk)
    whole_sdk = Recorder(_sdk_meter_provider(silent, closing), sdk)
    flat = [msgspec.json.decode(b) for b in bodies if b"options.flatten" in b]
    steps = {
        "unflatten": _unflattening(flat, unflatten),
        "unflatten, two passes": _unflattening(flat, two_pass_unflatten),
        "decode": _decoding(bodies, now),
        "decode, typed path": _decoding(bodies, now, typed_decode),
        "session": _updating(events),
        "counters": _recording(_service_recorder(silent, devnull, closing), updates),
        "counters+log": _recording(_service_recorder(Settings(), devnull, closing), updates),
        "sdk counters": _recording(sdk_counting, updates),
        "sdk counters+sdk log": _recording(counting_sdk, updates),
        "whole, logged": handling(Settings(), bodies, devnull, closing),
        "whole, silent": handling(silent, bodies, devnull, closing),
        "whole, sdk log": handling(silent, bodies, devnull, closing, whole_sdk),
        "core, logged": handling(Settings(), bodies, devnull, closing, alone=True),
        "core, silent": handling(silent, bodies, devnull, closing, alone=True),
    }
    counts = {"unflatten": len(flat), "unflatten, two passes": len(flat)}
    return {
        name: _cpu_us(prepare, counts.get(name, len(bodies)) or 1, repeats)
        for name, prepare in steps.items()
    }


def run(plan: Plan) -> list[Table]:
    """Time each step on the same rotating mix the HTTP benchmark posts."""
    mix = build_mix()
    bodies = mix.bodies(plan.pipeline_payloads)
    with open(os.devnull, "w", encoding="utf-8") as devnull, contextlib.ExitStack() as closing:
        us = _measure(bodies, plan.pipeline_repeats, devnull, closing)
        stores = store_pipeline.run(plan, bodies, devnull)
    calls = lmdb_calls.run(plan, bodies)
    log = us["counters+log"] - us["counters"]
    sdk_log = us["sdk counters+sdk log"] - us["sdk counters"]
    table = Table(
        "In-process pipeline: CPU per payload",
        ("step", "session log", "CPU µs/payload", "target", "met"),
    )
    table.add("decode (payload.decode)", "", f"{us['decode']:.1f}", "", "")
    typed = f"decode, the typed path alone (before {GROUPS_COMMIT})"
    table.add(typed, "", f"{us['decode, typed path']:.1f}", "", "")
    table.add("of which: unflatten, per flattened payload", "", f"{us['unflatten']:.1f}", "", "")
    table.add("session update (key, rules, memory store)", "", f"{us['session']:.1f}", "", "")
    counters = f"{us['counters']:.1f}"
    table.add("counters (label set L, into the table of series)", "", counters, "", "")
    table.add("log record (render logfmt, write)", "logfmt → /dev/null", f"{log:.1f}", "", "")
    parts = us["decode"] + us["session"] + us["counters+log"]
    table.add("sum of the steps", "logfmt → /dev/null", f"{parts:.1f}", "", "")
    for key, where, target in (
        ("logged", "logfmt → /dev/null", targets.PIPELINE_LOGGED_US),
        ("silent", "disabled", targets.PIPELINE_SILENT_US),
    ):
        core, whole = us[f"core, {key}"], us[f"whole, {key}"]
        shown = f"{core:.1f}"
        verdict = table.check(f"pipeline µs/payload, session log {where}", shown, target, core)
        table.add("pipeline: Receiver.handle(body), recorder and store", where, shown, target,
                  verdict)  # fmt: skip
        table.add("whole: the service's Receiver.handle(body)", where, f"{whole:.1f}", "", "")
    before, sdk_whole = f"(before {SDK_PATH_COMMIT})", f"{us['whole, sdk log']:.1f}"
    line = "logfmt → /dev/null"
    table.add(f"log record through the SDK {before}", line, f"{sdk_log:.1f}", "", "")
    table.add(f"whole, log through the SDK {before}", line, sdk_whole, "", "")
    table.figures.update(
        {
            "pipeline: whole, logged": us["whole, logged"],
            "pipeline: whole, sdk log": us["whole, sdk log"],
            "pipeline: unflatten": us["unflatten"],
            "pipeline: unflatten, two passes": us["unflatten, two passes"],
            "pipeline: decode": us["decode"],
            "pipeline: decode, typed path": us["decode, typed path"],
        }
    )
    starts, beats, ends = (mix.count(k) for k in ("start", "heartbeat", "end"))
    flat = sum(b"options.flatten" in b for b in bodies) / len(bodies)
    table.notes.extend(
        [
            f"{len(bodies):,} payloads of the rotating mix ({starts} starts, {beats} heartbeats, "
            f"{ends} ends per round of {len(mix.templates):,}; {flat:.0%} flattened; mean body "
            f"{sum(map(len, bodies)) / len(bodies):,.0f} bytes), median of "
            f"{plan.pipeline_repeats} runs of process CPU time, each with a fresh session store.",
            "pipeline: the receiver around the recorder the service builds and a fresh memory "
            "store, nothing else: what the targets were set on. whole: the receiver the service "
            "builds, with its store guard, outcome counts, viewers' first-visit marks and usage "
            "ledger besides (features that came after the targets).",
            "counters and log record: the recorder the service builds (session log off, then "
            "logfmt); log record = (counters + log record) - counters. The line is queued per "
            "payload for the writer thread, which writes it to /dev/null.",
            f"the typed path alone (before {GROUPS_COMMIT}): every group of every payload "
            "decoded and converted, as the receiver still does for what its fast path refuses.",
            f"through the SDK (before {SDK_PATH_COMMIT}): the same recorder, its log records "
            "through the SDK's LoggerProvider and a SimpleLogRecordProcessor to an exporter "
            f"that renders and writes the same line, as the receiver did until {SDK_PATH_COMMIT} "
            "(rebuilt here: the receiver no longer has that path).",
        ]
    )
    return [table, stores, calls]
