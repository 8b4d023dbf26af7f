#!/usr/bin/env bash
# /metrics through the Prometheus project's Python parser (prometheus_client, the version
# pinned here, in a venv cached under ~/.cache/satchel-metrics/<version>), during a run.
#
#   tests/metrics/run.sh PATH_TO_SATCHEL_BINARY
set -euo pipefail
PROMETHEUS_CLIENT_VERSION=0.26.0

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BIN="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
VENV="${SATCHEL_METRICS_CACHE:-$HOME/.cache/satchel-metrics}/prometheus_client-$PROMETHEUS_CLIENT_VERSION"
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import prometheus_client' 2>/dev/null; then
    echo "metrics: installing prometheus_client $PROMETHEUS_CLIENT_VERSION into $VENV"
    rm -rf "$VENV"
    "${SATCHEL_METRICS_PYTHON:-python3}" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "prometheus_client==$PROMETHEUS_CLIENT_VERSION"
fi
timeout 300 "$VENV/bin/python" "$HERE/scrape.py" "$BIN"
