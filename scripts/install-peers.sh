#!/usr/bin/env bash
# Install the real programs the tests and benchmarks talk to, if missing:
#   * Debian bookworm packages: prometheus, wrk, redis-server, chromium(-driver), influxdb(-client),
#     nginx;
#   * newer peers from later Debian releases, each unpacked into $OTEL_PANEL_RECEIVER_PEERS_DIR
#     (default /opt/otel-panel-receiver-peers) without touching /etc or the system's apt state,
#     where the tests find them (tests/support/peers.py):
#     - VictoriaMetrics >= 1.112 (the first Debian build with OTLP ingest) from trixie;
#     - Prometheus >= 3 (created-timestamp ingestion of OpenMetrics text) from forky, else sid.
# Idempotent and quiet: does nothing, in milliseconds, when everything is there. Needs root for
# apt-get install (the downloads need only a writable peers dir).
set -euo pipefail

PEERS_DIR=${OTEL_PANEL_RECEIVER_PEERS_DIR:-/opt/otel-panel-receiver-peers}

# --- Debian packages (bookworm) -------------------------------------------------------------
need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v wrk >/dev/null || need+=(wrk)
command -v redis-server >/dev/null || need+=(redis-server)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v influxd >/dev/null || need+=(influxdb)
command -v influx >/dev/null || need+=(influxdb-client)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)

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

# --- Newer peers from later Debian releases (unpacked, never installed) ---------------------
version_ok() { # version_ok MIN "1.112.0+ds1-1": is the second at least the first?
  [ "$(printf '%s\n%s\n' "$1" "${2%%[+~-]*}" | sort -V | head -n1)" = "$1" ]
}

mirror=""
if [ -r /etc/apt/sources.list.d/debian.sources ]; then
  mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
fi
mirror=${mirror:-http://deb.debian.org/debian}

# unpack PACKAGE BINARY MIN DIST...: put PACKAGE (version >= MIN) from the first DIST that has
# it into $PEERS_DIR/PACKAGE, unless a good one is there; BINARY must run here.
unpack() {
  local package=$1 binary=$2 min=$3 dest=$PEERS_DIR/$1 dist work version deb
  shift 3
  if [ -x "$dest/$binary" ] && version_ok "$min" "$(cat "$dest/VERSION" 2>/dev/null || echo 0)"; then
    return 0
  fi
  if ! mkdir -p "$PEERS_DIR" 2>/dev/null || [ ! -w "$PEERS_DIR" ]; then
    echo "install-peers: cannot write $PEERS_DIR; run as root or set OTEL_PANEL_RECEIVER_PEERS_DIR" >&2
    return 1
  fi
  for dist in "$@"; do
    echo "install-peers: $package >= $min from Debian $dist into $dest" >&2
    work=$(mktemp -d "$PEERS_DIR/.install.XXXXXX")
    chmod 755 "$work" # apt's download sandbox (user _apt) writes in here
    mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/etc/parts" "$work/root"
    touch "$work/status"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $dist main" \
      >"$work/etc/sources.list"
    local apt_opts=(
      -o "Dir::Etc::SourceList=$work/etc/sources.list" -o "Dir::Etc::SourceParts=$work/etc/parts"
      -o "Dir::Etc::PreferencesParts=$work/etc/parts" -o "Dir::State::Lists=$work/lists"
      -o "Dir::Cache=$work/cache" -o "Dir::State::status=$work/status" -o Debug::NoLocking=1
      -o Acquire::Languages=none -o APT::Architectures="$(dpkg --print-architecture)"
    )
    if { apt-get "${apt_opts[@]}" -qq update &&
      (cd "$work" && apt-get "${apt_opts[@]}" -qq download "$package"); } >"$work/log" 2>&1; then
      deb=$(ls "$work/${package}"_*.deb)
      version=$(dpkg-deb -f "$deb" Version)
      if version_ok "$min" "$version"; then
        dpkg-deb -x "$deb" "$work/root"
        echo "$version" >"$work/root/VERSION"
        "$work/root/$binary" --version >/dev/null 2>&1 || "$work/root/$binary" -version >/dev/null
        # Swap the finished tree in whole: an interrupted run never leaves half a binary.
        rm -rf "$dest"
        mv "$work/root" "$dest"
        rm -rf "$work"
        echo "install-peers: $package $version at $dest/$binary" >&2
        return 0
      fi
      echo "install-peers: $dist has $package $version, older than $min" >&2
    else
      cat "$work/log" >&2
    fi
    rm -rf "$work"
  done
  return 1
}

unpack victoria-metrics usr/bin/victoria-metrics 1.112 trixie
unpack prometheus usr/bin/prometheus 3.0 forky sid
