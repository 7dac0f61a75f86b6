"""The child ``instructions.py`` counts under callgrind: one tree's pipeline on the benchmark mix.

Run as a script, not as a module of ``benchmarks``: ``python benchmarks/instructions_child.py
ROOT SILENT N``. ``ROOT`` is the tree whose ``otel_panel_receiver`` is imported, this
repository's or an older commit's extracted elsewhere, so the package must not be imported
before ``ROOT`` is first on ``sys.path`` (the benchmark modules import it; this file does not).
The payloads are this repository's mix whatever the tree, so both trees handle the same bodies:
the first ``N`` of them, through the pipeline of the targets, the receiver around the recorder
the service builds and a fresh memory store, the session log off when ``SILENT`` is ``1``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path


def _mix(count: int) -> list[bytes]:
    """Return the first ``count`` bodies of this repository's benchmark mix."""
    spec = importlib.util.spec_from_file_location("_mix", Path(__file__).with_name("payloads.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["_mix"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return list(module.build_mix().bodies(count))


def main(root: str, silent: bool, count: int) -> None:
    bodies = _mix(count)
    sys.path.insert(0, root)
    import otel_panel_receiver as package  # only now: ROOT's
    from otel_panel_receiver import (
        MemorySessionStore,
        Receiver,
        Settings,
        build_telemetry,
        create_app,
    )

    if not str(package.__file__).startswith(os.path.realpath(root)):
        raise SystemExit(f"imported {package.__file__}, not the tree of {root}")
    try:  # the table's collection put off: under callgrind a second is a few hundred payloads
        settings = Settings(disable_session_log=silent, multiproc_export_interval=3600.0)
    except TypeError:  # a tree from before the setting, which had no such collection
        settings = Settings(disable_session_log=silent)
    with open(os.devnull, "w", encoding="utf-8") as devnull:
        app = create_app(settings, telemetry=build_telemetry(settings, stream=devnull))
        store = MemorySessionStore(max_size=settings.max_cache_size, idle_ttl=settings.session_ttl)
        receiver = Receiver(store, app.receiver.recorder)
        refused = 0
        for body in bodies:
            try:
                receiver.handle(body)
            except Exception:  # counted: the parent refuses a count with any
                refused += 1
        if refused:
            raise SystemExit(f"{refused} of {count} payloads refused by the tree of {root}")


if __name__ == "__main__":
    main(os.path.realpath(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3]))
