#!/usr/bin/env bash
# Install into .venv if needed and run the receiver with the embedded defaults
# (memory session store, Prometheus pull at /metrics, logs to stdout). Flags pass through.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/otel-panel-receiver ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -e .
fi
exec .venv/bin/otel-panel-receiver "$@"
