#!/usr/bin/env bash
# Experts from flash vs everything in RAM (issue: experts from flash, DESIGN.md §8).
# Synthesizes a 4B-A0.6B Q4_0 model with realistic routing skew (reused when present), then runs
# `pocketmoe run` (prompt ~100 / generate 128, $THREADS threads) several times per configuration:
#   in-RAM; budgets 1 GiB, 512 MiB and 256 MiB with O_DIRECT reads, with pre-attention prefetch (+ lookahead 2)
#   and without (experts read only when the FFN needs them).
# Tokens are sampled (temperature 1, fixed seed): greedy decoding of a random-weight model falls
# into a loop that keeps re-using the same experts, which would flatter the cache. Offloading
# never changes a bit, so every configuration generates the same tokens.
# Prints medians: decode tok/s, ratio to in-RAM and to the same budget without prefetch, and the
# decode phase's hit rate, stall fraction and bytes read per token.
# Usage: bench/offload.sh [BUILD_DIR] [RUNS]; MODEL=path to use another model; STORAGE=storage-uring;
# THREADS=compute threads (default 2; on a 2-core machine THREADS=1 leaves a core to the reads).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${1:-$ROOT/build}"
RUNS="${2:-3}"
PM="$BUILD/bin/pocketmoe"
STORAGE="${STORAGE:-storage-posix}"
THREADS="${THREADS:-2}"
WORK="$BUILD/bench-offload-t$THREADS"
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
    echo "compute: { plugin: cpu-onednn, threads: $THREADS }"
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
    "$PM" run -m "$MODEL" -c "$2" -p "$PROMPT" -n 128 --temp 1.0 --seed 7 --ctx-size 512 \
      --stats-json "$WORK/$1.$i.json" > /dev/null 2>&1
  done
}

NAMES=(in-ram)
run_cfg in-ram "$(config in-ram 0 true 0)"
for budget in 1GiB 512MiB 256MiB; do
  b="b$(echo "$budget" | tr 'A-Z' 'a-z' | sed 's/ib$//')"  # b1g, b512m, b256m
  run_cfg "$b-prefetch" "$(config "$b-prefetch" "$budget" true 0)"
  run_cfg "$b-lookahead" "$(config "$b-lookahead" "$budget" true 2)"
  run_cfg "$b-late" "$(config "$b-late" "$budget" false 0)"
  NAMES+=("$b-prefetch" "$b-lookahead" "$b-late")
done

python3 - "$WORK" "$RUNS" "${NAMES[@]}" <<'PY'
import json, statistics, sys
work, runs, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def load(n): return [json.load(open(f"{work}/{n}.{i}.json")) for i in range(1, runs + 1)]
base = statistics.median(j["decode_tokens_per_second"] for j in load("in-ram"))
print(f"{'config':18} {'decode tok/s':>12} {'vs in-RAM':>9} {'vs late':>7} {'hit rate':>8} {'stall':>6} {'read MiB/tok':>12} {'prefill tok/s':>13} {'vs late':>7} {'prefill stall':>13} {'prefill read MiB/s':>18} {'peak RSS MiB':>12}")
print("(hit rate, stall as a share of decode time, and bytes read are of the decode phase alone;")
print(" compare prefill read MiB/s with the disk: build/bin/storage_bench --direct --gguf --qd=4)")
med = lambda js, f: statistics.median(f(j) for j in js)
tps_of = {n: med(load(n), lambda j: j["decode_tokens_per_second"]) for n in names}
pre_of = {n: med(load(n), lambda j: j["prompt_tokens_per_second"]) for n in names}
for n in names:
    js = load(n)
    tps = tps_of[n]
    late_name = n.rsplit("-", 1)[0] + "-late"
    late = tps_of.get(late_name)
    d = lambda j: j.get("decode", {"hits": 1, "uses": 1, "stall_fraction": 0, "bytes_read": 0})
    hit = med(js, lambda j: d(j)["hits"] / d(j)["uses"] if d(j)["uses"] else 1)
    stall = med(js, lambda j: d(j)["stall_fraction"])
    mib = med(js, lambda j: d(j)["bytes_read"] / j["generated_tokens"]) / 2**20
    rss = med(js, lambda j: j["peak_rss_bytes"]) / 2**20
    vs_late = f"{tps / late:7.2f}" if late and n != "in-ram" else f"{'':7}"
    pre = pre_of[n]
    pre_vs_late = f"{pre / pre_of[late_name]:7.2f}" if late and n != "in-ram" else f"{'':7}"
    pre_stall = med(js, lambda j: (j["stall_seconds"] - d(j)["stall_seconds"]) / j["prompt_seconds"])
    pre_read = med(js, lambda j: (j["bytes_read"] - d(j)["bytes_read"]) / j["prompt_seconds"]) / 2**20
    print(f"{n:18} {tps:12.2f} {tps / base:9.2f} {vs_late} {hit:8.1%} {stall:6.1%} {mib:12.1f} {pre:13.2f} {pre_vs_late} {pre_stall:13.1%} {pre_read:18.0f} {rss:12.0f}")
PY
