#!/usr/bin/env bash
# `pocketmoe bench` end to end on a fixture model: two configs (in RAM, and streamed through a
# small expert cache), two rounds. Checks the JSON (every run, rotation, sane figures, identical
# tokens, verdicts), the self-contained HTML report, and errors before any run for bad input.
# A storage plugin that silently delivers zeros makes a config generate other tokens: bench must
# say so and fail.
# Usage: bench.sh POCKETMOE FIXTURES_DIR FAULT_PLUGIN_DIR
set -euo pipefail
PM="$1"; FIX="$2"; FAULT="$3"
W="$(mktemp -d)"; trap 'rm -rf "$W"' EXIT
MODEL="$FIX/models/st-a-f32.gguf"
printf 'compute: { plugin: cpu-onednn, threads: 2 }\n' > "$W/ram.yaml"
cat > "$W/stream.yaml" <<'Y'
compute: { plugin: cpu-onednn, threads: 2 }
storage: { plugin: storage-posix, direct_io: true }
cache: { policy: lru, budget: 2MiB }
prefetch: { lookahead: 2, prefill_chunk: 8 }
Y
"$PM" bench -m "$MODEL" -c "$W/ram.yaml" -c "$W/stream.yaml" --rounds 2 -n 12 --prompt-tokens 20 \
  --json "$W/out.json" --report "$W/report.html" > "$W/table.txt" 2> "$W/progress.txt"
cat "$W/table.txt"
grep -q "^ram " "$W/table.txt"
grep -q "^stream " "$W/table.txt"
grep -Eq "stream decodes|no difference this test can see \(stream/ram" "$W/table.txt"
# not a terminal: one plain line per run
test "$(grep -c '^round ' "$W/progress.txt")" -eq 4
python3 - "$W/out.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
runs = d["runs"]
assert len(runs) == 4, len(runs)
order = [(r["round"], r["config"]) for r in runs]
assert order == [(1, "ram"), (1, "stream"), (2, "stream"), (2, "ram")], order   # rotates per round
assert d["identical_tokens"] is True and d["differing_configs"] == []
assert d["settings"]["prompt_tokens"] == 20, d["settings"]
for r in runs:
    m = r["metrics"]
    assert r["generated_tokens"] >= 1 and r["prompt_tokens"] == 20
    assert m["decode_tps"] > 0 and m["prefill_tps"] > 0 and m["ttft_s"] > 0
    assert m["latency_p50_s"] <= m["latency_p95_s"] <= m["latency_p99_s"]
    assert 0 <= m["hit_rate"] <= 1 and 0 <= m["stall_share"] < 1 and m["peak_rss_bytes"] > 0
    streamed = r["config"] == "stream"
    assert (m["read_bytes_per_second"] > 0) == streamed, r
    assert (len(r["layers"]) > 0) == streamed
    assert len(r["token_seconds"]) == r["generated_tokens"] == len(r["token_stall_seconds"])
ram = [r for r in runs if r["config"] == "ram"][0]["metrics"]
assert ram["hit_rate"] == 1 and ram["read_bytes_per_token"] == 0
c = d["comparisons"]
assert [x["metric"] for x in c] == ["decode_tps", "prefill_tps"] and all(x["baseline"] == "ram" for x in c)
assert all(x["ci95"][0] <= x["ratio"] <= x["ci95"][1] for x in c)
assert d["machine"]["cores"] >= 1 and d["machine"]["ram_total_bytes"] > 0 and d["machine"]["disk"]["filesystem"]
PY
grep -q "<svg" "$W/report.html"
grep -q "Every run of every config generated the same tokens as the others on its compute device" "$W/report.html"
! grep -Eq "src=|href=|url\(|<script|@import" "$W/report.html"
# bad input fails before any run, naming what is wrong
if "$PM" bench -m "$MODEL" -c "$W/ram.yaml" --json "$W/no/such/dir/out.json" 2> "$W/err.txt"; then exit 1; fi
grep -q "no directory" "$W/err.txt"
printf 'compute: { plugin: cpu-onednn, thread: 2 }\n' > "$W/bad.yaml"
if "$PM" bench -m "$MODEL" -c "$W/ram.yaml" -c "$W/bad.yaml" 2> "$W/err.txt"; then exit 1; fi
grep -q "bad.yaml:1" "$W/err.txt"
# a config whose output differs (corrupt reads) is refused, loudly
cat > "$W/corrupt.yaml" <<Y
plugin_paths: ["$FAULT"]
compute: { plugin: cpu-onednn, threads: 2 }
storage: { plugin: fault-storage, fault: zeros }
cache: { policy: lru, budget: 2MiB }
Y
if "$PM" bench -m "$MODEL" -c "$W/ram.yaml" -c "$W/corrupt.yaml" --rounds 1 -n 12 --json "$W/bad.json" \
     --report "$W/bad.html" > /dev/null 2> "$W/err.txt"; then
  echo "bench accepted a config that generates other tokens"; exit 1
fi
grep -q "OUTPUT DIFFERS: corrupt" "$W/err.txt"
grep -q "OUTPUT DIFFERS" "$W/bad.html"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["identical_tokens"] is False and d["differing_configs"] == ["corrupt"], d["differing_configs"]' "$W/bad.json"
echo "bench: ok"
