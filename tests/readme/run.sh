#!/usr/bin/env bash
# The README's test-double examples, run as a user would run them: the pytest suite and the
# vitest suite of "Scripted replies (fixtures)" are cut out of README.md as they stand and
# run against the given binary (as `satchel` on PATH), so the documentation cannot rot.
# Installs what is missing under ~/.cache/satchel-readme/<versions>: a venv with anthropic
# and pytest (PyPI), and vitest with the TypeScript SDK (npm), at the versions pinned here.
#
#   tests/readme/run.sh PATH_TO_SATCHEL_BINARY
set -euo pipefail
PY_SDK_VERSION=2.14.0
PYTEST_VERSION=9.2.0
VITEST_VERSION=4.1.12

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BIN_DIR="$(cd "$(dirname "$1")" && pwd)"
[[ -x "$BIN_DIR/satchel" ]] || { echo "readme: $BIN_DIR/satchel is not an executable" >&2; exit 2; }
TS_SDK_VERSION="$(node -p 'require(process.argv[1]).dependencies["@anthropic-ai/sdk"]' "$HERE/../../conformance/ts/package.json")"
CACHE="${SATCHEL_README_CACHE:-$HOME/.cache/satchel-readme}"
VENV="$CACHE/py-anthropic-$PY_SDK_VERSION-pytest-$PYTEST_VERSION"
NODE_DIR="$CACHE/vitest-$VITEST_VERSION-sdk-$TS_SDK_VERSION"

if ! "$VENV/bin/python" -c 'import anthropic, pytest' 2>/dev/null; then
    echo "readme: creating $VENV"
    python3 -m venv --clear "$VENV"
    "$VENV/bin/pip" install --disable-pip-version-check -q "anthropic==$PY_SDK_VERSION" "pytest==$PYTEST_VERSION"
fi
if [[ ! -f "$NODE_DIR/node_modules/vitest/package.json" ]]; then
    echo "readme: installing vitest $VITEST_VERSION and @anthropic-ai/sdk $TS_SDK_VERSION into $NODE_DIR"
    mkdir -p "$NODE_DIR"
    npm install --prefix "$NODE_DIR" --no-audit --no-fund --silent \
        "vitest@$VITEST_VERSION" "@anthropic-ai/sdk@$TS_SDK_VERSION"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/satchel-readme.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
# The examples, cut out of the README: the python block and the two ts blocks that follow
# "In pytest (`conftest.py`)".
python3 - "$HERE/../../README.md" "$WORK" <<'PY'
import pathlib, re, sys
readme, work = pathlib.Path(sys.argv[1]).read_text(), pathlib.Path(sys.argv[2])
start = readme.index("In pytest (`conftest.py`)")
blocks = re.findall(r"```(\w+)\n(.*?)```", readme[start:], re.S)
python = [text for lang, text in blocks if lang == "python"][0]
ts = [text for lang, text in blocks if lang == "ts"][:2]
(work / "test_readme.py").write_text(python)
for text in ts:
    name = text.splitlines()[0].removeprefix("// ").strip()
    assert name in ("satchel.setup.ts", "batches.test.ts"), name
    (work / name).write_text(text)
(work / "vitest.config.ts").write_text(
    'import { defineConfig } from "vitest/config";\n'
    'export default defineConfig({ test: { globalSetup: ["./satchel.setup.ts"] } });\n')
PY
ln -s "$NODE_DIR/node_modules" "$WORK/node_modules"
echo '{"type":"module"}' >"$WORK/package.json"

cd "$WORK"
export PATH="$BIN_DIR:$PATH"
echo "readme: the pytest example"
timeout 300 "$VENV/bin/pytest" -q -p no:cacheprovider test_readme.py
echo "readme: the vitest example"
timeout 300 "$NODE_DIR/node_modules/.bin/vitest" run --reporter=dot
echo "readme: examples pass"
