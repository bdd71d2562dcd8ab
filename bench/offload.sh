#!/usr/bin/env bash
# Experts from flash vs everything in RAM (issue: experts from flash, DESIGN.md §8).
# Synthesizes a 4B-A0.6B Q4_0 model with realistic routing skew (reused when present), then runs
# `pocketmoe run` (prompt 64 / generate 128, greedy, 2 threads) several times per configuration:
#   in-RAM; budget 1 GiB and 512 MiB with O_DIRECT reads, with pre-attention prefetch (+ lookahead 1)
#   and without (experts read only when the FFN needs them).
# Prints medians: decode tok/s, ratio to in-RAM, hit rate, stall fraction of decode time.
# Usage: bench/offload.sh [BUILD_DIR] [RUNS]; MODEL=path to use another model; STORAGE=storage-uring.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${1:-$ROOT/build}"
RUNS="${2:-3}"
PM="$BUILD/bin/pocketmoe"
STORAGE="${STORAGE:-storage-posix}"
WORK="$BUILD/bench-offload"
mkdir -p "$WORK"
MODEL="${MODEL:-$BUILD/bench-models/synth-4b-a0.6b-q4_0-skew.gguf}"
if [ ! -f "$MODEL" ]; then
  mkdir -p "$(dirname "$MODEL")"
  "$PM" synth --shape 4b-a0.6b --type q4_0 --routing-skew -o "$MODEL"
fi
PROMPT="$(python3 -c 'print(" ".join(["the small thinker reads experts from flash while attention runs"] * 6))')"

config() {  # name budget pre_attention lookahead
  local f="$WORK/$1.yaml"
  {
    echo "compute: { plugin: cpu-onednn, threads: 2 }"
    if [ "$2" != "0" ]; then
      echo "storage: { plugin: $STORAGE, direct_io: true }"
      echo "cache: { policy: lru, budget: $2 }"
      echo "prefetch: { pre_attention: $3, lookahead: $4, prefill_chunk: 8 }"
    fi
  } > "$f"
  echo "$f"
}

run_cfg() {  # name yaml -> prints JSON stats paths
  for i in $(seq 1 "$RUNS"); do
    "$PM" run -m "$MODEL" -c "$2" -p "$PROMPT" -n 128 --temp 0 --ctx-size 512 \
      --stats-json "$WORK/$1.$i.json" > /dev/null 2>&1
  done
}

NAMES=(in-ram b1g-prefetch b1g-lookahead b1g-late b512m-prefetch b512m-lookahead b512m-late)
run_cfg in-ram "$(config in-ram 0 true 0)"
run_cfg b1g-prefetch "$(config b1g-prefetch 1GiB true 0)"
run_cfg b1g-lookahead "$(config b1g-lookahead 1GiB true 1)"
run_cfg b1g-late "$(config b1g-late 1GiB false 0)"
run_cfg b512m-prefetch "$(config b512m-prefetch 512MiB true 0)"
run_cfg b512m-lookahead "$(config b512m-lookahead 512MiB true 1)"
run_cfg b512m-late "$(config b512m-late 512MiB false 0)"

python3 - "$WORK" "$RUNS" "${NAMES[@]}" <<'PY'
import json, statistics, sys
work, runs, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def load(n): return [json.load(open(f"{work}/{n}.{i}.json")) for i in range(1, runs + 1)]
base = statistics.median(j["decode_tokens_per_second"] for j in load("in-ram"))
print(f"{'config':18} {'decode tok/s':>12} {'vs in-RAM':>9} {'hit rate':>8} {'stall/decode':>12} {'read MiB':>9} {'peak RSS MiB':>12}")
for n in names:
    js = load(n)
    tps = statistics.median(j["decode_tokens_per_second"] for j in js)
    hit = statistics.median(j["hits"] / j["uses"] if j["uses"] else 1 for j in js)
    stall = statistics.median(j["stall_seconds"] / (j["decode_seconds"] + j["prompt_seconds"]) for j in js)
    mib = statistics.median(j["bytes_read"] for j in js) / 2**20
    rss = statistics.median(j["peak_rss_bytes"] for j in js) / 2**20
    print(f"{n:18} {tps:12.2f} {tps / base:9.2f} {hit:8.1%} {stall:12.1%} {mib:9.0f} {rss:12.0f}")
PY
