#!/usr/bin/env bash
# `pocketmoe serve`, with experts streaming through the expert cache, answers the official
# `openai` npm client (tests/server/openai_client.cjs): streaming and whole chat, completions,
# models, errors. The client is installed once into NPM_DIR (npm's registry is needed then).
# Usage: serve_openai.sh POCKETMOE FIXTURES_DIR NPM_DIR
set -euo pipefail
PM="$1"; FIX="$2"; NPM_DIR="$3"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OPENAI_VERSION=5.23.2  # the last major that supports Node 18 (Debian 12's)
command -v node > /dev/null || { echo "node is missing (scripts/setup.sh installs nodejs)"; exit 1; }
installed() { node -p "try { JSON.parse(require('fs').readFileSync('$NPM_DIR/node_modules/openai/package.json')).version } catch { '' }"; }
if [ "$(installed)" != "$OPENAI_VERSION" ]; then
  mkdir -p "$NPM_DIR"
  npm install --prefix "$NPM_DIR" --no-audit --no-fund --loglevel=error "openai@$OPENAI_VERSION" ||
    { echo "npm install openai@$OPENAI_VERSION failed: this test needs npm's registry once"; exit 1; }
fi
W="$(mktemp -d)"
SERVER_PID=""
cleanup() { if [ -n "$SERVER_PID" ]; then kill -9 "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null || true; fi; rm -rf "$W"; }
trap cleanup EXIT
cat > "$W/streamed.yaml" <<Y
storage: { plugin: storage-posix }
cache: { policy: lru, budget: 256KiB }
prefetch: { lookahead: 2 }
Y
"$PM" serve -m "$FIX/models/st-a-q4_0.gguf" -c "$W/streamed.yaml" --port 0 --api-key k3y 2> "$W/server.err" &
SERVER_PID=$!
for _ in $(seq 100); do grep -q "model loaded" "$W/server.err" && break; kill -0 "$SERVER_PID" || break; sleep 0.1; done
PORT="$(sed -n 's/^listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$W/server.err")"
grep -q "model loaded" "$W/server.err" || { echo "the server did not start:"; cat "$W/server.err"; exit 1; }
echo "openai npm client $(installed), node $(node --version)"
NODE_PATH="$NPM_DIR/node_modules" node "$HERE/openai_client.cjs" "http://127.0.0.1:$PORT" k3y
