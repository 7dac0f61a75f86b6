#!/usr/bin/env bash
# Write constraints.txt: the exact versions the service, CI and the benchmarks install.
# Resolves pyproject.toml's ranges (the package, its [test] extra, which includes redis and
# granian) afresh in a scratch venv and freezes the result. Run it to take newer releases; then
# run scripts/test.sh and commit constraints.txt with the change.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$PYTHON" -m venv "$scratch/venv"
"$scratch/venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$scratch/venv/bin/python" -m pip install -q --disable-pip-version-check '.[test]'
{
  echo "# The exact versions installed by scripts/run.sh and scripts/test.sh (pip -c)."
  echo "# Written by scripts/lock.sh from pyproject.toml's ranges; do not edit by hand."
  "$scratch/venv/bin/python" -m pip freeze --exclude otel-panel-receiver --exclude pip
} >constraints.txt
echo "lock: $(grep -vc '^#' constraints.txt) packages pinned in constraints.txt" >&2
