#!/usr/bin/env bash
# Runs the A1111 client compatibility test: builds `diffuse8`, installs webuiapi and sd-parsers from PyPI in a
# virtual environment, starts `diffuse8 serve` on a free port with two models, waits until it answers
# /internal/ping, runs a1111_client_test.py (and, with chromium installed, tools/web_ui_check.py), stops the
# server. Exits non-zero when any step fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
WORK=$(mktemp -d)
SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID"; wait "$SERVER_PID" || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

VENV=${A1111_TEST_VENV:-$ROOT/.build/a1111-venv}
if [[ ! -x "$VENV/bin/python" ]]; then python3 -m venv "$VENV"; fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check webuiapi sd-parsers

swift build --product diffuse8
BIN=$(swift build --show-bin-path)/diffuse8

mkdir -p "$WORK/models"
ln -s "$ROOT/models/default" "$WORK/models/default"
ln -s "$ROOT/Tests/Fixtures/tiny-sd15" "$WORK/models/tiny-sd15"

"$BIN" serve --models-dir "$WORK/models" --model "$WORK/models/default" --port 0 --api-auth tester:secret \
    > "$WORK/server.out" 2> "$WORK/server.log" &
SERVER_PID=$!

# Wait for the "listening on" line, then for /internal/ping, each with a bounded number of tries.
URL=""
for _ in $(seq 1 600); do
    URL=$(sed -n 's/^listening on //p' "$WORK/server.out")
    [[ -n "$URL" ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log"; echo "server exited before listening"; exit 1; }
    sleep 0.1
done
[[ -n "$URL" ]] || { cat "$WORK/server.log"; echo "server did not start listening"; exit 1; }
curl --silent --fail --retry 50 --retry-delay 0 --retry-connrefused --max-time 5 "$URL/internal/ping" > /dev/null

status=0
"$VENV/bin/python" Tests/Integration/a1111_client_test.py "$URL" tester secret || status=$?

# The web page in headless Chromium, where Debian's chromium package is installed.
if command -v chromium > /dev/null; then
    "$VENV/bin/pip" install --quiet --disable-pip-version-check websocket-client
    "$VENV/bin/python" tools/web_ui_check.py "$URL" "$WORK/web-ui.png" --steps 20 --user tester --password secret || status=$?
else
    echo "web page check skipped: chromium is not installed (Debian: apt-get install chromium)"
fi

# Graceful shutdown on SIGTERM must end the process with status 0.
kill -TERM "$SERVER_PID"
wait "$SERVER_PID" || { echo "server exited with status $? after SIGTERM"; status=1; }
SERVER_PID=""
[[ $status -eq 0 ]] || tail -n 40 "$WORK/server.log"
exit $status
