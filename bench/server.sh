#!/usr/bin/env bash
# pocketmoe serve against llama.cpp's llama-server on the same GGUF, threads and context per slot:
# requests/s and time to first token with 1, 2 and 4 concurrent clients (as many slots), streamed
# chat requests of MAX_TOKENS tokens (bench/server_load.py), in interleaved rounds (A B, B A, ...:
# this VM drifts between minutes). Each measurement starts a fresh server and warms it with one
# request. Prints medians and the median of per-round ratios pocketmoe/llama.cpp.
# Usage: bench/server.sh [BUILD_DIR] [ROUNDS] [MODEL.gguf]; THREADS (2), CTX (1024 per slot),
# CLIENTS ("1 2 4"), REQUESTS (requests per client, 4), MAX_TOKENS (32), CONFIG (pocketmoe -c).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${1:-$ROOT/build}"
ROUNDS="${2:-3}"
MODEL="${3:-$BUILD/bench-models/st4b-qwen2vocab-skew-Q4_0.gguf}"
THREADS="${THREADS:-2}" CTX="${CTX:-1024}" CLIENTS="${CLIENTS:-1 2 4}" REQUESTS="${REQUESTS:-4}" MAX_TOKENS="${MAX_TOKENS:-32}"
[ -f "$MODEL" ] || { echo "no $MODEL: bench/vs-llama.sh makes it (TYPES=Q4_0)"; exit 1; }
LLAMA="$ROOT/../shared/llama.cpp/llama-server"
OUT="$(mktemp -d)"
PID=""
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$OUT"' EXIT
PORT=18431

start() {  # impl clients
  if [ "$1" = pocketmoe ]; then
    "$BUILD/bin/pocketmoe" serve -m "$MODEL" ${CONFIG:+-c "$CONFIG"} -t "$THREADS" --ctx-size "$CTX" --parallel "$2" \
      --port "$PORT" > "$OUT/server.log" 2>&1 &
  else
    "$LLAMA" -m "$MODEL" -t "$THREADS" -c $((CTX * $2)) -np "$2" --port "$PORT" --host 127.0.0.1 > "$OUT/server.log" 2>&1 &
  fi
  PID=$!
  for _ in $(seq 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/health")" = 200 ] && return 0
    kill -0 "$PID" 2>/dev/null || { cat "$OUT/server.log"; exit 1; }
    sleep 0.1
  done
  echo "$1 did not start"; exit 1
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""; }

for r in $(seq 1 "$ROUNDS"); do
  for c in $CLIENTS; do
    order="pocketmoe llama"; [ $((r % 2)) = 0 ] && order="llama pocketmoe"
    for impl in $order; do
      echo "round $r/$ROUNDS, $c client(s): $impl" >&2
      start "$impl" "$c"
      python3 "$ROOT/bench/server_load.py" "$PORT" 1 1 8 > /dev/null  # warm up
      python3 "$ROOT/bench/server_load.py" "$PORT" "$c" "$REQUESTS" "$MAX_TOKENS" > "$OUT/$impl.$c.$r.json"
      stop
    done
  done
done
python3 - "$OUT" "$THREADS" "$CTX" "$MAX_TOKENS" "$REQUESTS" <<'PY'
import glob, json, os, statistics, sys
out, threads, ctx, max_tokens, reqs = sys.argv[1:]
data = {}
for p in glob.glob(os.path.join(out, "*.json")):
    impl, c, r, _ = os.path.basename(p).split(".")
    data.setdefault((impl, int(c)), {})[int(r)] = json.load(open(p))
med = statistics.median
print(f"{threads} threads, context {ctx} per slot, {reqs} streamed chat requests of {max_tokens} tokens per client; "
      f"medians of {max(len(v) for v in data.values())} interleaved rounds; ratio = median of per-round pocketmoe/llama.cpp")
print("| clients | llama-server req/s | pocketmoe req/s | ratio | llama-server TTFT ms | pocketmoe TTFT ms | TTFT ratio |")
print("|---|---|---|---|---|---|---|")
for c in sorted({k[1] for k in data}):
    L, P = data[("llama", c)], data[("pocketmoe", c)]
    rs = [P[r]["requests_per_second"] / L[r]["requests_per_second"] for r in P if r in L]
    ts = [P[r]["ttft_s"] / L[r]["ttft_s"] for r in P if r in L]
    print(f"| {c} | {med(v['requests_per_second'] for v in L.values()):.3f} | {med(v['requests_per_second'] for v in P.values()):.3f} "
          f"| {med(rs):.2f} | {1e3 * med(v['ttft_s'] for v in L.values()):.0f} | {1e3 * med(v['ttft_s'] for v in P.values()):.0f} | {med(ts):.2f} |")
PY
