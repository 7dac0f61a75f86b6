"""Small file systems for fault tests: a tmpfs that fills up, or turns read-only, on demand.

Mounting needs root (CI runs as root). Where it cannot be done, the test fails under CI and is
skipped with the reason elsewhere (``procs.missing_peer``); it is never faked.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.support.procs import missing_peer

__all__ = ["fill", "remount", "tmpfs"]


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (``1m``) on ``path`` for the block."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        missing_peer(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def remount(path: Path, mode: str) -> None:
    """Make the tmpfs at ``path`` read-only (``ro``) or writable again (``rw``)."""
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True, capture_output=True)


def fill(path: Path) -> Path:
    """Fill the file system of ``path`` to its last byte; return the file that does it."""
    filler = path / "filler"
    with open(filler, "wb") as out, contextlib.suppress(OSError):  # ENOSPC ends it
        while True:
            out.write(b"\0" * 65_536)
            out.flush()
            os.fsync(out.fileno())
    return filler
