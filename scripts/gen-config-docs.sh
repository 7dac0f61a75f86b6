#!/usr/bin/env bash
# Write docs/configuration.md from the settings table; with --check, only compare.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
generated=$("$PY" -c 'from otel_panel_receiver.config import render_markdown; print(render_markdown(), end="")')
if [ "${1:-}" = "--check" ]; then
  diff -u docs/configuration.md <(printf '%s\n' "$generated")
else
  printf '%s\n' "$generated" > docs/configuration.md
fi
