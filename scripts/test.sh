#!/usr/bin/env bash
# The whole check, from a fresh clone: venv, Python packages, real peers, lint, types, tests,
# and a benchmark smoke. This is the test command of README.md; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
bash scripts/install-peers.sh

echo "== ruff"; .venv/bin/ruff check .
echo "== ruff format"; .venv/bin/ruff format --check .
echo "== mypy"; .venv/bin/mypy
echo "== docs/configuration.md is generated from the settings table"
bash scripts/gen-config-docs.sh --check
echo "== pytest"; .venv/bin/python -m pytest "$@"
if [ -f benchmarks/__main__.py ]; then
  echo "== benchmark smoke (figures are printed, not asserted)"
  .venv/bin/python -m benchmarks --quick
fi
