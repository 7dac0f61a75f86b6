"""``python -m benchmarks [run] [--quick]``: see ``benchmarks/cli.py``."""

from __future__ import annotations

import sys

from benchmarks.cli import main

if __name__ == "__main__":
    sys.exit(main())
