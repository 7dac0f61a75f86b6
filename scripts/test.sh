#!/usr/bin/env bash
# The whole check, from a fresh clone: venv and Python packages (constraints.txt), the real
# peers, lint, types, the import layering, tests, and a benchmark smoke. This is the test
# command of README.md; .ci/run calls it. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
ensure_venv test
bash scripts/install-peers.sh

echo "== ruff"; .venv/bin/ruff check .
echo "== ruff format"; .venv/bin/ruff format --check .
echo "== mypy"; .venv/bin/mypy
echo "== import layering (lint-imports)"; .venv/bin/lint-imports --no-cache
echo "== docs/configuration.md is generated from the settings table"
bash scripts/gen-config-docs.sh --check
echo "== pytest"; .venv/bin/python -m pytest "$@"
echo "== benchmark smoke (figures are printed, not asserted)"
.venv/bin/python -m benchmarks --quick
