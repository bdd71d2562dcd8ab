#!/usr/bin/env bash
# `pocketmoe bench-storage`: every storage plugin reads a fixture model's expert matrices (and
# a plain file's random ranges) at two queue depths, buffered and direct; JSON checked; bad
# input fails before any read.
# Usage: bench_storage.sh POCKETMOE FIXTURES_DIR
set -euo pipefail
PM="$1"; FIX="$2"
W="$(mktemp -d)"; trap 'rm -rf "$W"' EXIT
MODEL="$FIX/models/st-a-q4_0.gguf"
"$PM" bench-storage "$MODEL" --qd 1,4 --seconds 0.05 --json "$W/out.json" | tee "$W/table.txt"
grep -q "expert-matrix random reads" "$W/table.txt"
python3 - "$W/out.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["expert_ranges"] is True and d["read_bytes"] > 0
ok = [r for r in d["results"] if "error" not in r]
plugins = {r["storage"] for r in ok}
assert "storage-posix" in plugins, plugins          # always works; storage-uring where io_uring does
for r in ok:
    assert r["queue_depth"] in (1, 4) and r["reads"] > 0 and r["errors"] == 0, r
    assert r["bytes"] >= r["reads"] * d["read_bytes"] * 0.5 and r["gb_per_s"] > 0, r
    assert r["p50_us"] <= r["p95_us"] <= r["p99_us"], r
assert {(r["direct"], r["queue_depth"]) for r in ok if r["storage"] == "storage-posix"} >= {(False, 1), (False, 4)}
PY
# a file that is not a model: plain random ranges of --read-size
head -c 3000000 /dev/urandom > "$W/plain.bin"
"$PM" bench-storage "$W/plain.bin" --qd 2 --seconds 0.05 --io buffered --read-size 65536 > "$W/plain.txt"
grep -q "storage-posix *buffered *2" "$W/plain.txt"
# errors name what is wrong, before any read
if "$PM" bench-storage "$MODEL" --qd 1,x 2> "$W/err.txt"; then exit 1; fi
grep -q "'x' is not a queue depth" "$W/err.txt"
if "$PM" bench-storage "$W/missing.gguf" 2> "$W/err.txt"; then exit 1; fi
grep -q "missing.gguf: not a regular file" "$W/err.txt"
echo "bench-storage: ok"
