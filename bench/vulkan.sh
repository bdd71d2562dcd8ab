#!/usr/bin/env bash
# Vulkan against cpu-onednn on the same model and budget (issue 10, item 8), resident and
# streamed, through `pocketmoe bench`: cold runs in rotating order, medians, per-round paired
# ratios with 95% bootstrap intervals, and an HTML report per comparison.
# Each run also reports the engine's time in compute submission and waiting (stats JSON).
# On lavapipe (software Vulkan, what CI and GPU-less machines have) the figures show overhead
# and correctness only; on a real GPU pass a real model and budget:
#   MODEL=st4b-q4_0.gguf BUDGET=1GiB bench/vulkan.sh build 5
# Usage: bench/vulkan.sh [BUILD_DIR] [ROUNDS]; MODEL (default: the st-a-q4_0 fixture), BUDGET
# (default 2MiB, a third of that model's experts), N tokens to generate (default 32), DEVICE
# (Vulkan device: auto, an index or a name substring), THREADS for the CPU (default 2).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${1:-$ROOT/build}"
ROUNDS="${2:-5}"
PM="$BUILD/bin/pocketmoe"
MODEL="${MODEL:-$ROOT/../shared/fixtures/models/st-a-q4_0.gguf}"
BUDGET="${BUDGET:-2MiB}"
N="${N:-32}"
DEVICE="${DEVICE:-auto}"
THREADS="${THREADS:-2}"
WORK="$BUILD/bench-vulkan"
mkdir -p "$WORK"

config() {  # name compute-section budget
  {
    echo "compute: $2"
    if [ "$3" != 0 ]; then
      echo "storage: { plugin: storage-posix, direct_io: true, workers: 4 }"
      echo "cache: { policy: lru, budget: $3 }"
      echo "prefetch: { lookahead: 4 }"
    fi
  } > "$WORK/$1.yaml"
}
CPU="{ plugin: cpu-onednn, threads: $THREADS }"
VK="{ plugin: vulkan, device: \"$DEVICE\" }"
config cpu-resident "$CPU" 0
config vulkan-resident "$VK" 0
config cpu-streamed "$CPU" "$BUDGET"
config vulkan-streamed "$VK" "$BUDGET"

for mode in resident streamed; do
  echo "== $mode ($(basename "$MODEL")${BUDGET:+, budget $BUDGET for streamed})"
  "$PM" bench -m "$MODEL" -c "$WORK/cpu-$mode.yaml" -c "$WORK/vulkan-$mode.yaml" --rounds "$ROUNDS" -n "$N" \
    --json "$WORK/$mode.json" --report "$WORK/$mode.html"
  python3 - "$WORK/$mode.json" <<'PY'
import json, statistics, sys
d = json.load(open(sys.argv[1]))
for s in d["summary"]:
    runs = [r for r in d["runs"] if r["config"] == s["config"]]
    per = lambda r, k: r[k] / (r["prompt_tokens"] + r["generated_tokens"])
    sub = statistics.median(per(r, "compute_submit_seconds") for r in runs) * 1e3
    wait = statistics.median(per(r, "compute_wait_seconds") for r in runs) * 1e3
    print(f"{s['config']:18} {s['compute_device'][:40]:40} host time per token (prefill and decode): "
          f"in submit {sub:7.3f} ms, in wait {wait:7.3f} ms")
PY
done
echo "reports: $WORK/resident.html $WORK/streamed.html"
