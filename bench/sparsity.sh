#!/usr/bin/env bash
# ReGLU sparsity (docs/reglu-sparsity.md): decode in RAM with compute.sparse_ffn off, auto and on,
# against llama.cpp's llama-bench, on 4B-A0.6B synth models (routing skew, the full Qwen2
# vocabulary) whose gates are inactive for a fraction S of the neurons: Q4_0 from `pocketmoe
# synth --reglu-sparsity S`, Q4_K_M requantized from it by llama-quantize. Interleaved rounds
# (llama.cpp, off, auto, on per file: this VM drifts by 10-20% between minutes); prints per file the
# measured active fraction, median tok/s, the median of per-round ratios, and bytes read per token
# against the bandwidth bound. Then the streamed case: `run` under a 1 GiB memory limit with
# configs/cpu-1gb.yaml, sparse off and on, MiB read from flash per token.
# Usage: bench/sparsity.sh [BUILD_DIR] [ROUNDS]; THREADS (default 2), SPARSITIES ("0.5 0.6 0.8 0.9"),
# TYPES ("Q4_0 Q4_K_M"), N_GEN (64), MODELS_DIR (default BUILD/bench-models).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${1:-$ROOT/build}"
ROUNDS="${2:-3}"
THREADS="${THREADS:-2}"
SPARSITIES="${SPARSITIES:-0.5 0.6 0.8 0.9}"
TYPES="${TYPES:-Q4_0 Q4_K_M}"
N_GEN="${N_GEN:-64}"
LLAMA="$ROOT/../shared/llama.cpp"
DIR="${MODELS_DIR:-$BUILD/bench-models}"
mkdir -p "$DIR"
for s in $SPARSITIES; do
  q4="$DIR/st4b-sp$s-Q4_0.gguf"
  [ -f "$q4" ] || "$BUILD/bin/pocketmoe" synth --shape 4b-a0.6b --type q4_0 --routing-skew --reglu-sparsity "$s" \
    --vocab-from "$ROOT/../shared/fixtures/tokenizer/ggml-vocab-qwen2.gguf" -o "$q4" | tail -1 >&2
  for t in $TYPES; do
    f="$DIR/st4b-sp$s-$t.gguf"
    [ -f "$f" ] || "$LLAMA/llama-quantize" --allow-requantize "$q4" "$f" "$t" "$THREADS" > "$f.log" 2>&1
  done
done

OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
for mode in off auto on; do printf 'compute: { plugin: cpu-onednn, sparse_ffn: %s }\n' "$mode" > "$OUT/$mode.yaml"; done
for r in $(seq 1 "$ROUNDS"); do
  for s in $SPARSITIES; do
    for t in $TYPES; do
      f="$DIR/st4b-sp$s-$t.gguf"
      echo "round $r/$ROUNDS sparsity $s $t" >&2
      "$LLAMA/llama-bench" -m "$f" -p 0 -n "$N_GEN" -t "$THREADS" -r 1 -o csv 2>/dev/null > "$OUT/llama.$s.$t.$r.csv"
      for mode in off auto on; do
        "$BUILD/bin/pmoe_bench_gguf" -m "$f" -p 1 -n "$N_GEN" -t "$THREADS" -r 1 -c "$OUT/$mode.yaml" 2>/dev/null \
          > "$OUT/pmoe.$s.$t.$mode.$r.txt"
      done
    done
  done
done
python3 - "$OUT" "$THREADS" <<'EOF'
import csv, glob, os, re, statistics, sys
out, threads = sys.argv[1], sys.argv[2]
llama, pm, info = {}, {}, {}
for p in glob.glob(os.path.join(out, "llama.*.csv")):
    name = os.path.basename(p)[len("llama."):-len(".csv")]
    key, r = name.rsplit(".", 1)
    for row in csv.DictReader(open(p)):
        llama.setdefault(key, {})[int(r)] = float(row["avg_ts"])
for p in glob.glob(os.path.join(out, "pmoe.*.txt")):
    name = os.path.basename(p)[len("pmoe."):-len(".txt")]
    key, mode, r = name.rsplit(".", 2)
    for line in open(p):
        if " tg" not in line: continue
        f = line.split()
        pm.setdefault((key, mode), {})[int(r)] = float(f[2])
        m = re.search(r"([0-9.]+) MB/token at ([0-9.]+) GB/s.*active ([0-9.]+)  sparse-skippable ([0-9.]+) MB", line)
        if m: info.setdefault(key, []).append(tuple(float(x) for x in m.groups()))
med = lambda v: statistics.median(v) if v else float("nan")
def ratio(a, b):
    return med([a[r] / b[r] for r in a if b.get(r)])
print(f"{threads} threads, tg, medians of {max(len(v) for v in pm.values())} interleaved rounds; ratios are medians of per-round ratios\n")
print("| file | active | llama.cpp tok/s | off tok/s | auto tok/s | on tok/s | on/off | on/llama.cpp | MB/token dense -> sparse | bound tok/s dense -> sparse |")
print("|---|---|---|---|---|---|---|---|---|---|")
for key in sorted(info):
    mb, gbs, act, skip = (med([x[i] for x in info[key]]) for i in range(4))
    sparse_mb = mb - (1 - act) * skip
    l = llama.get(key, {})
    off, auto, on = (pm.get((key, m), {}) for m in ("off", "auto", "on"))
    print(f"| {key} | {act:.3f} | {med(list(l.values())):.2f} | {med(list(off.values())):.2f} | {med(list(auto.values())):.2f} | "
          f"{med(list(on.values())):.2f} | {ratio(on, off):.2f} | {ratio(on, l):.2f} | {mb:.0f} -> {sparse_mb:.0f} | "
          f"{gbs * 1e3 / mb:.1f} -> {gbs * 1e3 / sparse_mb:.1f} |")
EOF

# Streamed: experts read whole from flash either way (the active neurons are known only after gate,
# which needs the expert), so sparsity changes compute and not the bytes read; shown, not assumed.
s=$(echo "$SPARSITIES" | awk '{print $2 ? $2 : $1}')
f="$DIR/st4b-sp$s-Q4_0.gguf"
if [ -x "$ROOT/../shared/bench/in-cgroup" ]; then
  echo
  echo "streamed, 1 GiB limit, configs/cpu-1gb.yaml, $(basename "$f"), $N_GEN tokens:"
  for mode in off on; do
    sed "s/^  sparse_ffn: .*/  sparse_ffn: $mode/" "$ROOT/configs/cpu-1gb.yaml" > "$OUT/stream-$mode.yaml"
    "$ROOT/../shared/bench/in-cgroup" 1073741824 "$BUILD/bin/pocketmoe" run -m "$f" -c "$OUT/stream-$mode.yaml" \
      -p "The history of" -n "$N_GEN" --temp 0 --stats-json "$OUT/stream-$mode.json" > /dev/null 2>&1
    python3 - "$OUT/stream-$mode.json" "$mode" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
d = j["decode"]
print(f"  sparse_ffn {sys.argv[2]}: decode {j['decode_tokens_per_second']:.2f} tok/s, "
      f"{d['bytes_read'] / max(1, j['generated_tokens']) / 2**20:.1f} MiB read per token, "
      f"active {j['reglu_active_fraction']['overall']:.3f}")
EOF
  done
fi
