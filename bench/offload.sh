#!/usr/bin/env bash
# Experts from flash vs everything in RAM (issue: experts from flash, DESIGN.md §8).
# Synthesizes a 4B-A0.6B Q4_0 model with realistic routing skew (reused when present), then runs
# `pocketmoe run` (prompt ~100 / generate 128, $THREADS threads) per configuration:
#   in-RAM; budgets 1 GiB, 512 MiB and 256 MiB with O_DIRECT reads, with pre-attention prefetch
#   (+ lookahead $LOOKAHEAD) and without (experts read only when the FFN needs them).
# Runs go in rounds, one run of every configuration per round, so a slow spell of a shared
# machine hits all of them alike; "vs" columns are medians of per-round ratios.
# Tokens are sampled (temperature 1, fixed seed): greedy decoding of a random-weight model falls
# into a loop that keeps re-using the same experts, which would flatter the cache. Offloading
# never changes a bit, so every configuration generates the same tokens.
# Prints medians: decode tok/s, ratio to in-RAM and to the same budget without prefetch, and the
# decode phase's hit rate, stall fraction and bytes read per token.
# Usage: bench/offload.sh [BUILD_DIR] [ROUNDS]; MODEL=path to use another model;
# STORAGE=storage-uring; THREADS=compute threads (default 2); LOOKAHEAD (default 4);
# BUDGETS="1GiB 512MiB" to run fewer budgets.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${1:-$ROOT/build}"
ROUNDS="${2:-5}"
PM="$BUILD/bin/pocketmoe"
STORAGE="${STORAGE:-storage-posix}"
THREADS="${THREADS:-2}"
LOOKAHEAD="${LOOKAHEAD:-4}"
BUDGETS="${BUDGETS:-1GiB 512MiB 256MiB}"
WORK="$BUILD/bench-offload-t$THREADS"
mkdir -p "$WORK"
MODEL="${MODEL:-$BUILD/bench-models/synth-4b-a0.6b-q4_0-skew.gguf}"
if [ ! -f "$MODEL" ]; then
  mkdir -p "$(dirname "$MODEL")"
  "$PM" synth --shape 4b-a0.6b --type q4_0 --routing-skew -o "$MODEL"
fi
PROMPT="$(python3 -c 'print(" ".join(["the small thinker reads experts from flash while attention runs"] * 6))')"
# Three speculative reads in flight at most, one entry kept for demand reads: a deeper queue lets
# prefetches for later layers delay the reads the next layer waits for (docs/expert-cache.md).
case "$STORAGE" in
  storage-uring) STORAGE_OPTS="queue_depth: 4" ;;
  storage-posix) STORAGE_OPTS="workers: 4" ;;
  *) STORAGE_OPTS="" ;;
esac

config() {  # name budget pre_attention lookahead
  local f="$WORK/$1.yaml"
  {
    echo "compute: { plugin: cpu-onednn, threads: $THREADS }"
    if [ "$2" != "0" ]; then
      echo "storage: { plugin: $STORAGE, direct_io: true${STORAGE_OPTS:+, $STORAGE_OPTS} }"
      echo "cache: { policy: lru, budget: $2 }"
      echo "prefetch: { pre_attention: $3, lookahead: $4, prefill_chunk: 8 }"
    fi
  } > "$f"
}

NAMES=(in-ram)
config in-ram 0 true 0
for budget in $BUDGETS; do
  b="b$(echo "$budget" | tr 'A-Z' 'a-z' | sed 's/ib$//')"  # b1g, b512m, b256m
  config "$b-prefetch" "$budget" true 0
  config "$b-lookahead" "$budget" true "$LOOKAHEAD"
  config "$b-late" "$budget" false 0
  NAMES+=("$b-prefetch" "$b-lookahead" "$b-late")
done
rm -f "$WORK"/*.json
run() {  # config stats.json
  "$PM" run -m "$MODEL" -c "$WORK/$1.yaml" -p "$PROMPT" -n 128 --temp 1.0 --seed 7 --ctx-size 512 \
    --stats-json "$2" > /dev/null 2>&1
}
for i in $(seq 1 "$ROUNDS"); do
  for n in "${NAMES[@]}"; do
    run "$n" "$WORK/$n.$i.json"
    # The first O_DIRECT run after the in-RAM one (which maps the file through the page cache)
    # reads up to 2x slower here, whatever its settings: a throwaway run takes that hit.
    [ "$n" = in-ram ] && [ "${#NAMES[@]}" -gt 1 ] && run "${NAMES[1]}" /dev/null
  done
done

echo "storage $STORAGE ${STORAGE_OPTS:+($STORAGE_OPTS) }, $THREADS threads, lookahead $LOOKAHEAD, $ROUNDS rounds"
python3 - "$WORK" "$ROUNDS" "${NAMES[@]}" <<'PY'
import json, statistics, sys
work, rounds, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
runs = {n: [json.load(open(f"{work}/{n}.{i}.json")) for i in range(1, rounds + 1)] for n in names}
med = lambda js, f: statistics.median(f(j) for j in js)
def paired(a, b, key):  # median over rounds of a/b
    return statistics.median(x[key] / y[key] for x, y in zip(runs[a], runs[b]))
print(f"{'config':18} {'decode tok/s':>12} {'vs in-RAM':>9} {'vs late':>7} {'hit rate':>8} {'stall':>6} {'read MiB/tok':>12} {'prefill tok/s':>13} {'vs late':>7} {'prefill stall':>13} {'prefill read MiB/s':>18} {'peak RSS MiB':>12}")
print("(hit rate, stall as a share of decode time, and bytes read are of the decode phase alone;")
print(" compare prefill read MiB/s with the disk: build/bin/storage_bench --direct --gguf --qd=4)")
for n in names:
    js = runs[n]
    late = n.rsplit("-", 1)[0] + "-late"
    has_late = late in runs and n != "in-ram"
    d = lambda j: j.get("decode", {"hits": 1, "uses": 1, "stall_fraction": 0, "bytes_read": 0})
    tps = med(js, lambda j: j["decode_tokens_per_second"])
    hit = med(js, lambda j: d(j)["hits"] / d(j)["uses"] if d(j)["uses"] else 1)
    stall = med(js, lambda j: d(j)["stall_fraction"])
    mib = med(js, lambda j: d(j)["bytes_read"] / j["generated_tokens"]) / 2**20
    rss = med(js, lambda j: j["peak_rss_bytes"]) / 2**20
    vs_ram = paired(n, "in-ram", "decode_tokens_per_second")
    vs_late = f"{paired(n, late, 'decode_tokens_per_second'):7.2f}" if has_late else f"{'':7}"
    pre = med(js, lambda j: j["prompt_tokens_per_second"])
    pre_vs_late = f"{paired(n, late, 'prompt_tokens_per_second'):7.2f}" if has_late else f"{'':7}"
    pre_stall = med(js, lambda j: (j["stall_seconds"] - d(j)["stall_seconds"]) / j["prompt_seconds"])
    pre_read = med(js, lambda j: (j["bytes_read"] - d(j)["bytes_read"]) / j["prompt_seconds"]) / 2**20
    print(f"{n:18} {tps:12.2f} {vs_ram:9.2f} {vs_late} {hit:8.1%} {stall:6.1%} {mib:12.1f} {pre:13.2f} {pre_vs_late} {pre_stall:13.1%} {pre_read:18.0f} {rss:12.0f}")
PY
