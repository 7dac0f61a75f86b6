"""Time one OTLP log batch in process: encoding it, exporting it, and the GIL waits it causes.

The receiver's own log records are encoded and posted to the collector in batches of each size
of :data:`BATCH_SIZES`; meanwhile a second thread, standing in for a request thread, records how
long it waits for the GIL.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Final

from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    LogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)

from benchmarks.payloads import build_mix
from benchmarks.plan import Plan
from benchmarks.report import Table
from otel_panel_receiver import MemorySessionStore, Receiver, Recorder, Settings, build_telemetry

__all__ = ["BATCH_SIZES", "run"]

BATCH_SIZES: Final = (512, 64, 16)
_OK: Final = LogRecordExportResult.SUCCESS


class _Keep(LogRecordExporter):
    """Keep every exported record (to build realistic batches)."""

    def __init__(self) -> None:
        self.records: list[ReadableLogRecord] = []

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        """Keep the records."""
        self.records.extend(batch)
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release."""

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Nothing is buffered."""
        return True


def _log_records(count: int) -> list[ReadableLogRecord]:
    """Return the SDK log records the receiver emits for the first ``count`` payloads."""
    keep = _Keep()
    provider = LoggerProvider(shutdown_on_exit=False)
    provider.add_log_record_processor(SimpleLogRecordProcessor(keep))
    telemetry = build_telemetry(Settings(disable_session_log=True))
    receiver = Receiver(MemorySessionStore(), Recorder(telemetry.meter_provider, provider))
    for body in build_mix().bodies(count):
        receiver.handle(body)
    telemetry.shutdown()  # its threads would take CPU from what is measured next
    return keep.records


class _Ticker:
    """A thread that sleeps 0.2 ms in a loop and records how late it wakes: its GIL waits."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.perf_counter()
            time.sleep(0.0002)
            self.waits.append((time.perf_counter() - began - 0.0002) * 1e3)

    def __enter__(self) -> _Ticker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run(plan: Plan, endpoint: str) -> Table:
    """Encode and export batches of each size to the collector at ``endpoint``."""
    table = Table(
        "OTLP tuning: one log batch in process (encode and export to the collector)",
        (
            "batch size",
            "encode CPU ms",
            "export() wall ms",
            "export() CPU µs/record",
            "other thread: waits > 1 ms per export",
            "longest wait ms",
        ),
    )
    records = _log_records(max(BATCH_SIZES))
    exporter = OTLPLogExporter(endpoint=f"{endpoint}/v1/logs", timeout=5)
    try:
        for size in BATCH_SIZES:
            batch = records[:size]
            count = plan.otlp_export_batches
            began = time.process_time()
            for _ in range(count):
                encode_logs(batch).SerializeToString()
            encode = (time.process_time() - began) / count * 1e3
            cpu, wall = time.process_time(), time.perf_counter()
            failed = sum(exporter.export(batch) is not _OK for _ in range(count))
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            with _Ticker() as ticker:
                failed += sum(exporter.export(batch) is not _OK for _ in range(count))
            if failed:
                table.problems.append(f"OTLP tuning: {failed} exports of {size} records failed")
            waits = ticker.waits or [0.0]
            table.add(
                size,
                f"{encode:.1f}",
                f"{wall / count * 1e3:.1f}",
                f"{cpu / count / size * 1e6:.0f}",
                f"{sum(w > 1 for w in waits) / count:.1f}",
                f"{max(waits):.1f}",
            )
            table.figures[f"encode ms at {size}"] = encode
    finally:
        exporter.shutdown()  # type: ignore[no-untyped-call]  # untyped in the SDK
    table.notes.append(
        f"the receiver's own log records (the SDK's, as the batch processor holds them), "
        f"{plan.otlp_export_batches} batches of each size: encode = encode_logs() and "
        "SerializeToString() alone; export() = the SDK's OTLP/HTTP exporter posting to the rotel "
        "collector (encode included). Then the same exports again while a second thread sleeps "
        "0.2 ms in a loop: a wait is how much later than asked it woke, i.e. how long it "
        "waited for the GIL, which a thread running Python hands over only every switch "
        "interval (5 ms); a request thread waits like this at each of its I/O calls."
    )
    return table
