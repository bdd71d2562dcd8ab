#!/usr/bin/env bash
# `pocketmoe probe`: measures without a model (disk under --dir) and with a fixture model, where it
# writes a config that `pocketmoe run` then uses; bad input fails before measuring.
# Usage: probe.sh POCKETMOE FIXTURES_DIR
set -euo pipefail
PM="$1"; FIX="$2"
W="$(mktemp -d "$PWD/probe-test.XXXXXX")"; trap 'rm -rf "$W"' EXIT
MODEL="$FIX/models/st-a-q4_0.gguf"
"$PM" probe --dir "$W" --seconds 0.05 --json "$W/machine.json" | tee "$W/out.txt"
grep -q "^memory *read .* GB/s" "$W/out.txt"
test -z "$(ls -A "$W" | grep pocketmoe-probe || true)"   # its disk test file is gone
"$PM" probe -m "$MODEL" --seconds 0.05 --write-config "$W/rec.yaml" --json "$W/rec.json" > "$W/rec.txt"
cat "$W/rec.txt"
grep -q "^recommended for" "$W/rec.txt"
python3 - "$W/machine.json" "$W/rec.json" <<'PY'
import json, sys
m, r = (json.load(open(p)) for p in sys.argv[1:])
for d in (m, r):
    assert d["memory_read_gb_per_s"]["all_threads"] > 0 and d["machine"]["ram_available_bytes"] > 0
    assert any(s["plugin"] == "storage-posix" and s["works"] for s in d["storage"])
    assert all(p["gb_per_s"] > 0 for p in d["disk"]) and d["disk"]
assert "recommendation" not in m
rec = r["recommendation"]
assert rec["compute"] in ("cpu-onednn", "vulkan") and rec["streamed"] is False   # a 1 MiB model fits
cpu = [c for c in r["compute"] if c["label"] == "cpu-onednn"][0]
assert cpu["decode_tps"] > 0, cpu                       # measured, not looked up
PY
grep -q "^compute:" "$W/rec.yaml"
"$PM" run -m "$MODEL" -c "$W/rec.yaml" -p "Hello" -n 4 > /dev/null 2>&1
# errors before any measurement
if "$PM" probe --write-config "$W/x.yaml" 2> "$W/err.txt"; then exit 1; fi
grep -q "needs a model" "$W/err.txt"
if "$PM" probe -m "$W/missing.gguf" 2> "$W/err.txt"; then exit 1; fi
grep -q "missing.gguf: not a regular file" "$W/err.txt"
echo "probe: ok"
