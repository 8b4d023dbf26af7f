#!/usr/bin/env bash
# The browser tests: real headless Chromium (Debian's `chromium`) driven by npm's
# playwright-core, against a real `satchel serve`: the dashboard (dashboard.mjs), then the
# TypeScript SDK's browser build calling Satchel from another origin (sdk.mjs). Installs what
# is missing: chromium through apt; playwright-core (the version pinned here) under
# ~/.cache/satchel-browser/playwright-core-<version>; the SDK (the version conformance/ts
# pins) bundled for the browser by esbuild (pinned here) under
# ~/.cache/satchel-browser/sdk-<sdk version>-esbuild-<esbuild version>.
#
#   tests/browser/run.sh PATH_TO_SATCHEL_BINARY [SCREENSHOT_PATH]
set -euo pipefail
PLAYWRIGHT_VERSION=1.65.2
ESBUILD_VERSION=0.28.2

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

SDK_VERSION="$(node -p 'require(process.argv[1]).dependencies["@anthropic-ai/sdk"]' "$HERE/../../conformance/ts/package.json")"
SDK_CACHE="$(dirname "$CACHE")/sdk-$SDK_VERSION-esbuild-$ESBUILD_VERSION"
if [[ ! -f "$SDK_CACHE/sdk.mjs" ]]; then
    echo "browser: bundling @anthropic-ai/sdk $SDK_VERSION with esbuild $ESBUILD_VERSION into $SDK_CACHE"
    mkdir -p "$SDK_CACHE"
    npm install --prefix "$SDK_CACHE" --no-audit --no-fund --silent \
        "@anthropic-ai/sdk@$SDK_VERSION" "esbuild@$ESBUILD_VERSION"
    echo "export { default } from '@anthropic-ai/sdk';" >"$SDK_CACHE/entry.mjs"
    # Node-only code paths (the SDK imports them lazily, never in a browser) stay external.
    "$SDK_CACHE/node_modules/.bin/esbuild" "$SDK_CACHE/entry.mjs" --bundle --format=esm \
        --platform=browser --external:'node:*' --log-level=warning --outfile="$SDK_CACHE/sdk.tmp.mjs"
    mv "$SDK_CACHE/sdk.tmp.mjs" "$SDK_CACHE/sdk.mjs"
fi
PLAYWRIGHT_CORE="$CACHE/node_modules/playwright-core" CHROMIUM="$CHROMIUM" \
    timeout 300 node "$HERE/sdk.mjs" "$BIN" "$SDK_CACHE/sdk.mjs"
