# Sourced by run.sh and test.sh: make .venv hold the package (with the extras in $1) at the
# versions of constraints.txt, and install again whenever constraints.txt or pyproject.toml
# changed since the last install (a stamp in .venv remembers their checksum).
ensure_venv() {
  local extras=$1 python=${PYTHON:-python3} stamp want
  if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
  fi
  stamp=.venv/.otel-panel-receiver-installed${extras:+-$extras}
  want=$(cat constraints.txt pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "installing the package${extras:+ with [$extras]} at the versions of constraints.txt" >&2
    .venv/bin/python -m pip install -q --disable-pip-version-check \
      -c constraints.txt -e ".${extras:+[$extras]}"
    echo "$want" >"$stamp"
  fi
}
