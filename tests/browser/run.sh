#!/usr/bin/env bash
# The dashboard's browser test: real headless Chromium (Debian's `chromium`) driven by npm's
# playwright-core, against a real `satchel serve`. Installs what is missing: chromium through
# apt, playwright-core (the version pinned here) under ~/.cache/satchel-browser/<version>.
#
#   tests/browser/run.sh PATH_TO_SATCHEL_BINARY [SCREENSHOT_PATH]
set -euo pipefail
PLAYWRIGHT_VERSION=1.65.2

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BIN="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
SCREENSHOT="${2:-${CARGO_TARGET_DIR:-target}/dashboard.png}"
CACHE="${SATCHEL_BROWSER_CACHE:-$HOME/.cache/satchel-browser}/playwright-core-$PLAYWRIGHT_VERSION"

CHROMIUM="${SATCHEL_CHROMIUM:-$(command -v chromium || true)}"
if [[ -z "$CHROMIUM" ]]; then
    echo "browser: installing chromium (Debian)"
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
    CHROMIUM="$(command -v chromium)"
fi
if [[ ! -f "$CACHE/node_modules/playwright-core/package.json" ]]; then
    echo "browser: installing playwright-core $PLAYWRIGHT_VERSION into $CACHE"
    mkdir -p "$CACHE"
    npm install --prefix "$CACHE" --no-audit --no-fund --silent "playwright-core@$PLAYWRIGHT_VERSION"
fi
PLAYWRIGHT_CORE="$CACHE/node_modules/playwright-core" CHROMIUM="$CHROMIUM" \
    timeout 300 node "$HERE/dashboard.mjs" "$BIN" "$SCREENSHOT"
