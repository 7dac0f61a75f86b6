#!/usr/bin/env bash
# Install the real programs the tests and benchmarks talk to, if missing:
#   * Debian bookworm packages: prometheus, wrk, redis-server, chromium(-driver), influxdb(-client);
#   * VictoriaMetrics >= 1.112 (the first Debian build with OTLP ingest) from Debian trixie,
#     unpacked into $OTEL_PANEL_RECEIVER_PEERS_DIR (default /opt/otel-panel-receiver-peers)
#     without touching /etc or the system's apt state; tests find it there (tests/peers.py).
# Idempotent and quiet: does nothing, in milliseconds, when everything is there. Needs root for
# apt-get install (the trixie download needs only a writable peers dir).
set -euo pipefail

PEERS_DIR=${OTEL_PANEL_RECEIVER_PEERS_DIR:-/opt/otel-panel-receiver-peers}
VM_DIR=$PEERS_DIR/victoria-metrics
VM_BIN=$VM_DIR/usr/bin/victoria-metrics
VM_MIN=1.112

# --- Debian packages (bookworm) -------------------------------------------------------------
need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v wrk >/dev/null || need+=(wrk)
command -v redis-server >/dev/null || need+=(redis-server)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v influxd >/dev/null || need+=(influxdb)
command -v influx >/dev/null || need+=(influxdb-client)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-peers: missing ${need[*]}; run as root or: sudo apt-get install ${need[*]}" >&2
    exit 1
  fi
  echo "install-peers: apt-get install ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  log=$(mktemp)
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"; } \
    >"$log" 2>&1; then
    cat "$log" >&2
    exit 1
  fi
  rm -f "$log"
fi

# --- VictoriaMetrics with OTLP ingest (Debian trixie .deb, unpacked) --------------------------
version_ok() { # "1.112.0+ds1-1" >= $VM_MIN ?
  [ "$(printf '%s\n%s\n' "$VM_MIN" "${1%%[+~-]*}" | sort -V | head -n1)" = "$VM_MIN" ]
}

if [ -x "$VM_BIN" ] && version_ok "$(cat "$VM_DIR/VERSION" 2>/dev/null || echo 0)"; then
  exit 0
fi
if ! mkdir -p "$PEERS_DIR" 2>/dev/null || [ ! -w "$PEERS_DIR" ]; then
  echo "install-peers: cannot write $PEERS_DIR; run as root or set OTEL_PANEL_RECEIVER_PEERS_DIR" >&2
  exit 1
fi
echo "install-peers: VictoriaMetrics >= $VM_MIN from Debian trixie into $VM_DIR" >&2

mirror=""
if [ -r /etc/apt/sources.list.d/debian.sources ]; then
  mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
fi
mirror=${mirror:-http://deb.debian.org/debian}

work=$(mktemp -d "$PEERS_DIR/.vm-install.XXXXXX")
trap 'rm -rf "$work"' EXIT
chmod 755 "$work" # apt's download sandbox (user _apt) writes in here
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/etc/parts" "$work/root"
touch "$work/status"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" \
  >"$work/etc/sources.list"
apt_opts=(
  -o "Dir::Etc::SourceList=$work/etc/sources.list" -o "Dir::Etc::SourceParts=$work/etc/parts"
  -o "Dir::Etc::PreferencesParts=$work/etc/parts" -o "Dir::State::Lists=$work/lists"
  -o "Dir::Cache=$work/cache" -o "Dir::State::status=$work/status" -o Debug::NoLocking=1
  -o Acquire::Languages=none -o APT::Architectures="$(dpkg --print-architecture)"
)
if ! { apt-get "${apt_opts[@]}" -qq update &&
  (cd "$work" && apt-get "${apt_opts[@]}" -qq download victoria-metrics); } >"$work/log" 2>&1; then
  cat "$work/log" >&2
  exit 1
fi
deb=$(ls "$work"/victoria-metrics_*.deb)
version=$(dpkg-deb -f "$deb" Version)
if ! version_ok "$version"; then
  echo "install-peers: trixie has victoria-metrics $version, older than $VM_MIN (no OTLP)" >&2
  exit 1
fi
dpkg-deb -x "$deb" "$work/root"
echo "$version" >"$work/root/VERSION"
"$work/root/usr/bin/victoria-metrics" -version >/dev/null # runs here (Debian's has no version)
# Swap the finished tree in whole: an interrupted run never leaves a half-unpacked binary.
rm -rf "$VM_DIR"
mv "$work/root" "$VM_DIR"
echo "install-peers: victoria-metrics $version at $VM_BIN" >&2
