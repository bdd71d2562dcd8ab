#!/usr/bin/env bash
# Experts from flash vs everything in RAM (issue: experts from flash, DESIGN.md §8).
# Synthesizes a 4B-A0.6B Q4_0 model with realistic routing skew (reused when present), then runs
# `pocketmoe run` (prompt ~100 / generate 128, $THREADS threads) per configuration:
#   in-RAM; budgets 1 GiB, 512 MiB and 256 MiB with O_DIRECT reads, with pre-attention prefetch
#   (+ lookahead $LOOKAHEAD) and without (experts read only when the FFN needs them).
# A thin wrapper over `pocketmoe bench` (docs/bench.md): every run a fresh, cold process, rounds
# in rotating order, medians, and ratios to in-RAM with 95% bootstrap intervals; the JSON and an
# HTML report land in $WORK.
# Tokens are sampled (temperature 1, fixed seed): greedy decoding of a random-weight model falls
# into a loop that keeps re-using the same experts, which would flatter the cache. Offloading
# never changes a bit, so every configuration generates the same tokens.
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
      echo "prefetch: { pre_attention: $3, lookahead: $4 }"
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
"$PM" bench -m "$MODEL" $(for n in "${NAMES[@]}"; do echo "-c $WORK/$n.yaml"; done) --rounds "$ROUNDS" \
  -p "$PROMPT" -n 128 --seed 7 --json "$WORK/offload.json" --report "$WORK/offload.html"
echo "storage $STORAGE ${STORAGE_OPTS:+($STORAGE_OPTS) }, $THREADS threads, lookahead $LOOKAHEAD; report: $WORK/offload.html"
