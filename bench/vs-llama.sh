#!/usr/bin/env bash
# pocketmoe against llama.cpp on the GGUF files people download (issue: downloaded file types).
# Makes a 4B-A0.6B f16 model with routing skew and the full Qwen2 vocabulary (reused when
# present), turns it into Q4_K_M, Q4_0 and Q8_0 with ../shared/llama.cpp/llama-quantize, then
# runs the same tests on each file with both, in interleaved rounds (A B A B ...: this VM drifts
# by 10-20% between minutes): llama-bench -p 64,512 -n 128 and pmoe_bench_gguf, which measures
# exactly what llama-bench does (pp: one batch into an empty context; tg: tokens one at a time).
# Prints per file and test the median tok/s of both, the median of per-round ratios
# pocketmoe/llama.cpp, and for tg the bandwidth bound (bytes read per token / measured bandwidth).
# Usage: bench/vs-llama.sh [BUILD_DIR] [ROUNDS]; THREADS (default 2); TYPES="Q4_K_M Q4_0 Q8_0";
# MODELS_DIR (default BUILD/bench-models).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${1:-$ROOT/build}"
ROUNDS="${2:-3}"
THREADS="${THREADS:-2}"
TYPES="${TYPES:-Q4_K_M Q4_0 Q8_0}"
LLAMA="$ROOT/../shared/llama.cpp"
DIR="${MODELS_DIR:-$BUILD/bench-models}"
mkdir -p "$DIR"
F16="$DIR/st4b-qwen2vocab-skew-f16.gguf"
if [ ! -f "$F16" ]; then
  "$BUILD/bin/pocketmoe" synth --shape 4b-a0.6b --type f16 --routing-skew \
    --vocab-from "$ROOT/../shared/fixtures/tokenizer/ggml-vocab-qwen2.gguf" -o "$F16"
fi
for t in $TYPES; do
  f="$DIR/st4b-qwen2vocab-skew-$t.gguf"
  [ -f "$f" ] || "$LLAMA/llama-quantize" "$F16" "$f" "$t" "$THREADS" > "$f.log" 2>&1
done

OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
for r in $(seq 1 "$ROUNDS"); do
  for t in $TYPES; do
    f="$DIR/st4b-qwen2vocab-skew-$t.gguf"
    echo "round $r/$ROUNDS $t" >&2
    "$LLAMA/llama-bench" -m "$f" -p 64,512 -n 128 -t "$THREADS" -r 1 -o csv 2>/dev/null > "$OUT/llama.$t.$r.csv"
    "$BUILD/bin/pmoe_bench_gguf" -m "$f" -p 64,512 -n 128 -t "$THREADS" -r 1 2>/dev/null > "$OUT/pmoe.$t.$r.txt"
  done
done
python3 - "$OUT" "$THREADS" <<'EOF'
import csv, glob, os, re, statistics, sys
out, threads = sys.argv[1], sys.argv[2]
llama, pm, bound = {}, {}, {}
for p in glob.glob(os.path.join(out, "llama.*.csv")):
    _, t, r, _ = os.path.basename(p).split(".")
    for row in csv.DictReader(open(p)):
        test = f"tg{row['n_gen']}" if int(row["n_gen"]) else f"pp{row['n_prompt']}"
        llama.setdefault((t, test), {})[int(r)] = float(row["avg_ts"])
for p in glob.glob(os.path.join(out, "pmoe.*.txt")):
    _, t, r, _ = os.path.basename(p).split(".")
    for line in open(p):
        f = line.split()
        pm.setdefault((t, f[1]), {})[int(r)] = float(f[2])
        m = re.search(r"bound ([0-9.]+) tok/s", line)
        if m: bound.setdefault((t, f[1]), []).append(float(m.group(1)))
med = lambda v: statistics.median(v) if v else float("nan")
rounds = max((len(v) for v in pm.values()), default=0)
print(f"{threads} threads, medians of {rounds} interleaved rounds; ratio = median of per-round pocketmoe/llama.cpp")
print("| file | test | llama.cpp tok/s | pocketmoe tok/s | ratio | bandwidth bound tok/s |")
print("|---|---|---|---|---|---|")
order = lambda kv: (kv[0][0], kv[0][1][:2] != "pp", int(kv[0][1][2:]))
for (t, test), runs in sorted(pm.items(), key=order):
    l = llama.get((t, test), {})
    ratios = [runs[r] / l[r] for r in runs if l.get(r)]
    b = f"{med(bound[(t, test)]):.1f}" if (t, test) in bound else ""
    print(f"| {t} | {test} | {med(list(l.values())):.2f} | {med(list(runs.values())):.2f} | {med(ratios):.2f} | {b} |")
EOF
