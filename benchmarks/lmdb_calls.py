"""LMDB calls per payload of the service's receiver: each lets the GIL go, a figure no clock moves.

py-lmdb releases the GIL around every call that reaches LMDB (a transaction's begin and
commit, each get, put, delete and stat, each move of a cursor). In process that costs a few
hundred nanoseconds; under granian, whose threads wait for the GIL to hand the event loop its
requests, each release is a handoff: about 3 µs of CPU a call on this machine (20 more calls a
payload added 50 to 60 µs of the event loop's CPU per request, measured on 2026-12-03). So the
number of calls a payload makes is what the LMDB store costs a worker, and unlike the µs it is
exact: this counts them with ``sys.setprofile`` while the receiver the service builds handles
the benchmark's mix (the session log off; the first 1,000 payloads unmeasured), for one worker
with the LMDB store, and for one worker of several (the same store, and the workers' shared
table of series, where each payload's counts go before it is answered).
"""

from __future__ import annotations

import collections
import os
import sys
import tempfile
from collections.abc import Sequence
from types import FrameType
from typing import Any, Final

import lmdb

from benchmarks.plan import Plan
from benchmarks.report import Table
from otel_panel_receiver import Settings, build_telemetry, create_app

__all__ = ["count_calls", "run"]

#: Calls that do not reach LMDB (they read what the cursor holds, or make a cursor object).
_HELD: Final = frozenset({"key", "value", "item", "cursor", "__enter__"})
_TYPES: Final = (lmdb.Environment, lmdb.Transaction, lmdb.Cursor)
WARM: Final = 1_000


def count_calls(settings: Settings, bodies: Sequence[bytes]) -> tuple[float, float]:
    """Return the LMDB calls and the write transactions per payload of the service's receiver
    for ``settings``, on ``bodies`` after the first :data:`WARM`."""
    calls: collections.Counter[str] = collections.Counter()

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        owner = getattr(arg, "__self__", None) if event == "c_call" else None
        if isinstance(owner, _TYPES) and arg.__name__ not in _HELD:
            calls[arg.__name__] += 1

    with open(os.devnull, "w", encoding="utf-8") as devnull:
        telemetry = build_telemetry(settings, stream=devnull)
        app = create_app(settings, telemetry=telemetry)
        try:
            receiver = app.receiver
            for body in bodies[:WARM]:
                receiver.handle(body)
            sys.setprofile(profile)
            try:
                for body in bodies[WARM:]:
                    receiver.handle(body)
            finally:
                sys.setprofile(None)
        finally:
            telemetry.shutdown()  # its last collection reads the store: before the store closes
            app.close()
    n = len(bodies) - WARM
    return sum(calls.values()) / n, calls["begin"] / n


def run(plan: Plan, bodies: Sequence[bytes]) -> Table:
    """Count the LMDB calls per payload of one worker, and of one worker among several."""
    table = Table(
        "In-process pipeline: LMDB calls per payload (each lets the GIL go)",
        ("receiver", "LMDB calls/payload", "of which transactions"),
    )
    bodies = bodies[: WARM + plan.store_payloads]
    with tempfile.TemporaryDirectory(prefix="otel-panel-receiver-calls-") as tmp:
        for name, shared in (
            ("the service's, LMDB store", ""),
            ("one worker of several: LMDB store, shared table of series", "metrics"),
        ):
            directory = os.path.join(tmp, name[:3])
            metrics = os.path.join(directory, shared) if shared else ""
            if metrics:
                os.makedirs(metrics)
            settings = Settings(
                session_store=f"lmdb://{directory}/sessions",
                prometheus_multiproc_dir=metrics,
                multiproc_export_interval=3600.0,  # the second's collection is no payload's
                disable_session_log=True,
            )
            per, transactions = count_calls(settings, bodies)
            table.add(name, f"{per:.2f}", f"{transactions:.2f}")
            table.figures[f"LMDB calls per payload: {name}"] = per
    table.notes.append(
        f"{len(bodies) - WARM:,} payloads of the same mix after {WARM:,} unmeasured, the "
        "session log off; counted with sys.setprofile: every call of py-lmdb that reaches "
        "LMDB (begin, commit, get, put, delete, pop, stat, the cursor's moves, puts and "
        "deletes), each of which releases the GIL; under granian each release hands the GIL to "
        "the server's threads, about 3 µs of CPU on this machine. Exact: the same code gives "
        "the same figure on any machine. At commit a0dd4cb, before the stores were changed to "
        "make fewer calls, the same count gave 10.50 and 16.57."
    )
    return table
