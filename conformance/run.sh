#!/usr/bin/env bash
# SDK conformance suite: runs the official Anthropic SDKs, unchanged, against a Satchel binary.
#
#   conformance/run.sh PATH_TO_SATCHEL_BINARY
#
# Starts `satchel serve` on a free 127.0.0.1 port with two workspaces (keys sk-conf-a / sk-conf-b),
# then runs conformance/python/scenario.py with anthropic 2.14.0 and 0.125.0 and
# conformance/ts/scenario.mjs with @anthropic-ai/sdk 1.14.0 (the version pinned in ts/package.json).
# Ends with "N passed, M failed" counting SDK runs; exits non-zero if any run failed.
#
# Environment:
#   SATCHEL_CONFORMANCE_CACHE   where the Python venvs live (default ~/.cache/satchel-conformance)
#   SATCHEL_CONFORMANCE_PYTHON  the interpreter that makes the venvs (default python3)
#   SATCHEL_CONFORMANCE_ONLY    run only the SDK runs whose name contains this (e.g. "0.125", "ts")
set -euo pipefail
shopt -s inherit_errexit

PY_SDK_VERSIONS=(2.14.0 0.125.0)
SCENARIO_TIMEOUT=600

if [[ $# -ne 1 ]]; then
    echo "usage: $0 PATH_TO_SATCHEL_BINARY" >&2
    exit 2
fi
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BIN="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
if [[ ! -x "$BIN" ]]; then
    echo "conformance: $1 is not an executable file" >&2
    exit 2
fi
CACHE="${SATCHEL_CONFORMANCE_CACHE:-$HOME/.cache/satchel-conformance}"
PYTHON="${SATCHEL_CONFORMANCE_PYTHON:-python3}"
ONLY="${SATCHEL_CONFORMANCE_ONLY:-}"
mkdir -p "$CACHE"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/satchel-conformance.XXXXXX")"
SERVER_PID=""

on_exit() {
    local rc=$?
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ $rc -ne 0 ]]; then
        if [[ -s "$TMP/server.log" ]]; then
            echo "======== server log ($TMP/server.log, last 400 lines) ========"
            tail -n 400 "$TMP/server.log"
            echo "======== end of server log ========"
        fi
        echo "conformance: FAILED (exit $rc); kept $TMP" >&2
    else
        rm -rf "$TMP"
    fi
}
trap on_exit EXIT

log() { echo "conformance: $*"; }

# ---- config and server --------------------------------------------------------------------------
cat >"$TMP/satchel.toml" <<'EOF'
[[api_keys]]
key = "sk-conf-a"
workspace = "team-a"
[[api_keys]]
key = "sk-conf-b"
workspace = "team-b"
EOF

PORT="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
BASE_URL="http://127.0.0.1:$PORT"

log "starting $BIN on $BASE_URL"
"$BIN" serve --listen "127.0.0.1:$PORT" --db "$TMP/conformance.db" --config "$TMP/satchel.toml" \
    --emulator-latency 1s --expiry 24h </dev/null >"$TMP/server.log" 2>&1 &
SERVER_PID=$!

for ((i = 0; ; i++)); do
    if curl -s -o /dev/null --max-time 2 "$BASE_URL/v1/messages/batches"; then
        break
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        log "FAILED: the server exited before answering"
        exit 1
    fi
    if ((i >= 60)); then
        log "FAILED: the server did not answer on $BASE_URL within 30 s"
        exit 1
    fi
    sleep 0.5
done
log "server is up (pid $SERVER_PID)"

# ---- SDK installs (cached) ----------------------------------------------------------------------
python_venv() { # VERSION -> prints the venv's python, installing anthropic==VERSION if needed
    local version=$1 venv="$CACHE/py-anthropic-$1"
    local ready="import sys, anthropic, jsonschema; sys.exit(anthropic.__version__ != '$version')"
    if ! "$venv/bin/python" -c "$ready" 2>/dev/null; then
        log "creating $venv with anthropic==$version and jsonschema" >&2
        "$PYTHON" -m venv --clear "$venv" >&2
        "$venv/bin/pip" install --disable-pip-version-check -q "anthropic==$version" "jsonschema==4.25.1" >&2
        "$venv/bin/python" -c "$ready"
    fi
    echo "$venv/bin/python"
}

ts_install() {
    local pinned installed
    pinned="$(node -p 'require(process.argv[1]).dependencies["@anthropic-ai/sdk"]' "$HERE/ts/package.json")"
    installed="$(node -p 'try { require(process.argv[1]).version } catch { "" }' \
        "$HERE/ts/node_modules/@anthropic-ai/sdk/package.json")"
    if [[ "$installed" != "$pinned" ]]; then
        log "npm install @anthropic-ai/sdk@$pinned into $HERE/ts/node_modules" >&2
        (cd "$HERE/ts" && npm install --no-audit --no-fund --no-package-lock --loglevel=error >&2)
    fi
    echo "$pinned"
}

# ---- runs ---------------------------------------------------------------------------------------
PASSED=0
FAILED=0
FAILURES=()

run_sdk() { # NAME COMMAND...
    local name=$1
    shift
    if [[ -n "$ONLY" && "$name" != *"$ONLY"* ]]; then
        return 0
    fi
    log "==== $name ===="
    local out="$TMP/run-${name//[^a-zA-Z0-9.]/_}.log" rc=0
    SATCHEL_BASE_URL="$BASE_URL" timeout "$SCENARIO_TIMEOUT" "$@" 2>&1 | tee "$out" || rc=$?
    if [[ $rc -eq 0 ]]; then
        PASSED=$((PASSED + 1))
    else
        FAILED=$((FAILED + 1))
        local why
        why="$(grep -E '^FAIL ' "$out" | tail -n 1 || true)"
        [[ $rc -eq 124 ]] && why="timed out after ${SCENARIO_TIMEOUT}s"
        FAILURES+=("$name: ${why:-exit $rc}")
        log "!!!! $name FAILED: ${why:-exit $rc}"
    fi
}

for v in "${PY_SDK_VERSIONS[@]}"; do
    if [[ -n "$ONLY" && "python anthropic==$v" != *"$ONLY"* ]]; then continue; fi
    py="$(python_venv "$v")"
    run_sdk "python anthropic==$v" "$py" "$HERE/python/scenario.py"
done

if [[ -z "$ONLY" || "ts @anthropic-ai/sdk" == *"$ONLY"* ]]; then
    ts_version="$(ts_install)"
    run_sdk "ts @anthropic-ai/sdk@$ts_version" node "$HERE/ts/scenario.mjs"
fi

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    log "!!!! the server died during the runs"
    FAILED=$((FAILED + 1))
    FAILURES+=("server: exited during the runs")
fi

echo
for f in ${FAILURES[@]+"${FAILURES[@]}"}; do
    echo "FAILED: $f"
done
echo "$PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 ]]
