#!/usr/bin/env bash
# Run the receiver with the embedded defaults (memory session store, Prometheus pull at
# /metrics, logs to stdout); flags pass through. Installs into .venv first when needed, at the
# versions of constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
ensure_venv ""
exec .venv/bin/otel-panel-receiver "$@"
