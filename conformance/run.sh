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
#   SATCHEL_CONFORMANCE_ENGINE  sqlite (default) or postgres: two nodes on a throwaway PostgreSQL
#                               cluster (Debian's binaries), the scenarios alternating between them
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
SERVER_PIDS=()
PG_DIR=""
PG_CTL=""
AS_PG=()

on_exit() {
    local rc=$?
    for pid in ${SERVER_PIDS[@]+"${SERVER_PIDS[@]}"}; do
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    if [[ -n "$PG_DIR" ]]; then
        ${AS_PG[@]+"${AS_PG[@]}"} "$PG_CTL" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    fi
    if [[ $rc -ne 0 ]]; then
        for f in "$TMP"/server*.log; do
            [[ -s "$f" ]] || continue
            echo "======== server log ($f, last 400 lines) ========"
            tail -n 400 "$f"
            echo "======== end of server log ========"
        done
        echo "conformance: FAILED (exit $rc); kept $TMP" >&2
    else
        rm -rf "$TMP"
        if [[ -n "$PG_DIR" ]]; then rm -rf "$PG_DIR"; fi
    fi
}
trap on_exit EXIT

log() { echo "conformance: $*"; }
free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# ---- the store: a SQLite file, or a throwaway PostgreSQL cluster ---------------------------------
# SATCHEL_CONFORMANCE_ENGINE=postgres: two nodes on one PostgreSQL database, and the scenarios
# alternate between them call by call (they get the second node in SATCHEL_OTHER_BASE_URL).
ENGINE="${SATCHEL_CONFORMANCE_ENGINE:-sqlite}"
start_postgres() { # sets DB_URL (not in a subshell: on_exit must see PG_DIR)
    local bin port
    bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    if [[ -z "$bin" || ! -x "$bin/initdb" ]]; then
        log "FAILED: PostgreSQL is not installed (apt-get install -y postgresql)"
        exit 1
    fi
    PG_CTL="$bin/pg_ctl"
    PG_DIR="$(mktemp -d /tmp/satchel-conformance-pg.XXXXXX)"
    chmod 755 "$PG_DIR"
    if [[ $EUID -eq 0 ]]; then # initdb refuses to run as root
        chown postgres "$PG_DIR"
        AS_PG=(runuser -u postgres --)
    fi
    port="$(free_port)"
    ${AS_PG[@]+"${AS_PG[@]}"} "$bin/initdb" -D "$PG_DIR/data" -A trust -U satchel >"$TMP/pg-init.log" 2>&1
    ${AS_PG[@]+"${AS_PG[@]}"} "$PG_CTL" -D "$PG_DIR/data" -l "$PG_DIR/pg.log" -w \
        -o "-p $port -k $PG_DIR -c listen_addresses=127.0.0.1" start >/dev/null
    "$bin/createdb" -h 127.0.0.1 -p "$port" -U satchel conformance
    DB_URL="postgres://satchel@127.0.0.1:$port/conformance"
}

# ---- config and servers -------------------------------------------------------------------------
cat >"$TMP/satchel.toml" <<'EOF'
[[api_keys]]
key = "sk-conf-a"
workspace = "team-a"
[[api_keys]]
key = "sk-conf-b"
workspace = "team-b"
EOF

start_server() { # DB LOG: starts a node, sets STARTED_URL, appends its pid to SERVER_PIDS
    local db=$1 logfile=$2 port
    port="$(free_port)"
    STARTED_URL="http://127.0.0.1:$port"
    log "starting $BIN on $STARTED_URL"
    "$BIN" serve --listen "127.0.0.1:$port" --db "$db" --config "$TMP/satchel.toml" \
        --emulator-latency 1s --expiry 24h </dev/null >"$logfile" 2>&1 &
    local pid=$!
    SERVER_PIDS+=("$pid")
    for ((i = 0; ; i++)); do
        if curl -s -o /dev/null --max-time 2 "$STARTED_URL/v1/messages/batches"; then
            break
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            log "FAILED: the server at $STARTED_URL exited before answering"
            exit 1
        fi
        if ((i >= 60)); then
            log "FAILED: the server did not answer on $STARTED_URL within 30 s"
            exit 1
        fi
        sleep 0.5
    done
}

OTHER_BASE_URL=""
if [[ "$ENGINE" == postgres ]]; then
    start_postgres
    start_server "$DB_URL" "$TMP/server.log"
    BASE_URL="$STARTED_URL"
    start_server "$DB_URL" "$TMP/server-2.log"
    OTHER_BASE_URL="$STARTED_URL"
    log "two nodes on one PostgreSQL database: $BASE_URL and $OTHER_BASE_URL"
else
    start_server "$TMP/conformance.db" "$TMP/server.log"
    BASE_URL="$STARTED_URL"
fi
log "servers are up (pids ${SERVER_PIDS[*]})"

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
    SATCHEL_BASE_URL="$BASE_URL" SATCHEL_OTHER_BASE_URL="$OTHER_BASE_URL" timeout "$SCENARIO_TIMEOUT" "$@" 2>&1 | tee "$out" || rc=$?
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

for pid in "${SERVER_PIDS[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
        log "!!!! a server died during the runs"
        FAILED=$((FAILED + 1))
        FAILURES+=("server $pid: exited during the runs")
    fi
done

echo
for f in ${FAILURES[@]+"${FAILURES[@]}"}; do
    echo "FAILED: $f"
done
echo "$PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 ]]
