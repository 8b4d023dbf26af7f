#!/usr/bin/env bash
# Webhooks verified by the official Python SDK (`client.beta.webhooks.unwrap`) and by the
# `standardwebhooks` library, in a receiver process, against the real server: a batch that
# ends arrives; 500/429 answers are retried with one webhook-id; a loopback target is
# refused when not allowed; an event survives kill -9 before its delivery. The venv (pinned
# versions) is cached under ~/.cache/satchel-webhooks/<versions>.
#
#   tests/webhooks/run.sh PATH_TO_SATCHEL_BINARY
set -euo pipefail
ANTHROPIC_VERSION=2.14.0
STANDARDWEBHOOKS_VERSION=1.3.0

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BIN="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
VENV="${SATCHEL_WEBHOOKS_CACHE:-$HOME/.cache/satchel-webhooks}/anthropic-$ANTHROPIC_VERSION-standardwebhooks-$STANDARDWEBHOOKS_VERSION"
READY="import anthropic, standardwebhooks; assert anthropic.__version__ == '$ANTHROPIC_VERSION'"
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c "$READY" 2>/dev/null; then
    echo "webhooks: installing anthropic $ANTHROPIC_VERSION and standardwebhooks $STANDARDWEBHOOKS_VERSION into $VENV"
    rm -rf "$VENV"
    "${SATCHEL_WEBHOOKS_PYTHON:-python3}" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        "anthropic[webhooks]==$ANTHROPIC_VERSION" "standardwebhooks==$STANDARDWEBHOOKS_VERSION"
    "$VENV/bin/python" -c "$READY"
fi
timeout 600 "$VENV/bin/python" "$HERE/scenario.py" "$BIN"
