#!/usr/bin/env bash
# `run` as users hit it (hardening): SIGINT stops it at a token boundary with its text and stats
# written (exit 130); SIGTERM leaves no partial file from `synth`; output paths are checked before
# any work; a full context ends generation with a visible note; the stats do not mislead (real
# decode numbers in RAM, demand hits apart from prefetch hits, read throughput over wall time, a
# warning when the budget is below one token's experts); numbers out of range, llama-cli habits,
# FIFOs and device nodes are refused up front with what to do instead; -s -1 (the default) picks
# a random seed and prints it; help shows defaults as typed.
# Usage: run_hardening.sh POCKETMOE FIXTURES_DIR FAULT_PLUGIN_DIR
set -euo pipefail
PM="$1"; FIX="$2"; FAULT="$3"
W="$(mktemp -d)"; trap 'rm -rf "$W"' EXIT
MODEL="$FIX/models/st-a-f32.gguf"
# every expert read takes 20 ms, so generation is still running when the signal comes
cat > "$W/slow.yaml" <<Y
plugin_paths: ["$FAULT"]
compute: { plugin: cpu-onednn, threads: 2 }
storage: { plugin: fault-storage, fault: slow, delay_ms: 20 }
cache: { policy: lru, budget: 1MiB }
Y
"$PM" run -m "$MODEL" -c "$W/slow.yaml" -p "Hello" -n 1000 --stats-json "$W/stats.json" > "$W/out.txt" 2> "$W/err.txt" &
pid=$!
sleep 3
kill -INT "$pid"
rc=0; wait "$pid" || rc=$?
test "$rc" = 130 || { echo "exit $rc, wanted 130"; cat "$W/err.txt"; exit 1; }
grep -q "^Hello" "$W/out.txt"                  # what was printed is flushed to the file
grep -q "interrupted" "$W/err.txt"
grep -q "generated: " "$W/err.txt"             # the stats line
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["interrupted"] and 0 < d["generated_tokens"] < 1000, d' "$W/stats.json"
test -z "$(ls "$W" | grep '\.tmp$' || true)"

"$PM" synth --shape 4b-a0.6b -o "$W/big.gguf" > /dev/null 2>&1 &
pid=$!
sleep 1.5
kill -TERM "$pid"
rc=0; wait "$pid" || rc=$?
test "$rc" = 130 || { echo "synth: exit $rc, wanted 130"; exit 1; }
test ! -e "$W/big.gguf" && test ! -e "$W/big.gguf.tmp"

# output paths are checked before the work
for cmd in "run -m $MODEL -p Hi --stats-json $W/no/dir/s.json" "logits -m $MODEL --tokens 1,2 --out $W/no/dir/l.bin" \
           "synth -o $W/no/dir/m.gguf"; do
  rc=0; $PM $cmd > /dev/null 2> "$W/err.txt" || rc=$?
  test "$rc" = 2 && grep -q "no directory $W/no/dir" "$W/err.txt" || { echo "$cmd: exit $rc"; cat "$W/err.txt"; exit 1; }
done

# a full context ends generation with a note
"$PM" run -m "$MODEL" -p "Hello" -n 100 --ctx-size 12 --temp 0 > /dev/null 2> "$W/err.txt"
grep -q "the context is full (12 tokens)" "$W/err.txt"
# stats: in RAM the decode object counts the expert uses (all hits); streamed, demand hits and
# prefetch hits add up to the hits, and read throughput is over wall time
"$PM" run -m "$MODEL" -p "Hello" -n 8 --stats-json "$W/ram.json" > /dev/null 2>&1
cat > "$W/tiny-budget.yaml" <<Y
storage: { plugin: storage-posix }
cache: { policy: lru, budget: 256KiB }
Y
"$PM" run -m "$MODEL" -c "$W/tiny-budget.yaml" -p "Hello" -n 8 --stats-json "$W/stream.json" > /dev/null 2> "$W/err.txt"
grep -q "warning: cache.budget (256.0 KiB) is below one token's experts" "$W/err.txt"
python3 - "$W/ram.json" "$W/stream.json" <<'PY'
import json, sys
ram, st = (json.load(open(p)) for p in sys.argv[1:])
d = ram["decode"]
assert d["uses"] > 0 and d["hits"] == d["uses"] and d["demand_hits"] == d["uses"] and d["bytes_read"] == 0, d
for j in (st, st["decode"]):
    assert j["hits"] == j["demand_hits"] + j["prefetch_hits"], j
wall = st["prompt_seconds"] + st["decode_seconds"]
assert abs(st["read_bytes_per_second"] - st["bytes_read"] / wall) <= 1e-6 * st["read_bytes_per_second"], st
PY
# same bits, same text: with default settings, RAM and streamed runs chunk prefill alike (shown in
# the stats), so greedy text and logits agree bit for bit, also for prompts that leave a chunk of
# one token (f32 sums a one-token batch in another order than a larger one)
"$PM" run -m "$MODEL" -p "one two three four five six seven eight nine ten eleven" -n 24 --temp 0 --stats-json "$W/r1.json" > "$W/ram.txt" 2> "$W/err.txt"
grep -q "chunks of 256" "$W/err.txt"
"$PM" run -m "$MODEL" -c "$W/tiny-budget.yaml" -p "one two three four five six seven eight nine ten eleven" -n 24 --temp 0 --stats-json "$W/r2.json" > "$W/stream.txt" 2>/dev/null
cmp "$W/ram.txt" "$W/stream.txt"
for n in 9 17 33; do
  toks="$(seq -s, 1 "$n")"
  "$PM" logits -m "$MODEL" --tokens "$toks" --out "$W/ram.bin" 2>/dev/null
  "$PM" logits -m "$MODEL" -c "$W/tiny-budget.yaml" --tokens "$toks" --out "$W/stream.bin" 2>/dev/null
  cmp "$W/ram.bin" "$W/stream.bin" || { echo "$n tokens: streamed logits differ from RAM ones"; exit 1; }
done
# the command line as users type it: exit 2 with a message naming the option
expect_usage() {  # grep-pattern args...
  local want="$1"; shift
  rc=0; "$PM" "$@" > /dev/null 2> "$W/err.txt" || rc=$?
  test "$rc" = 2 && grep -q -- "$want" "$W/err.txt" || { echo "pocketmoe $*: exit $rc, wanted 2 and '$want':"; cat "$W/err.txt"; exit 1; }
}
expect_usage "use --ctx-size 2048" run -m "$MODEL" -p Hi -c 2048
expect_usage "interactive chat is .pocketmoe chat" logits -m "$MODEL" --tokens 1 -o x.bin -cnv
expect_usage "does not split layers" run -m "$MODEL" -p Hi -ngl 99
expect_usage "colored output" run -m "$MODEL" -p Hi -co
expect_usage "--ctx-size -1 is out of range" run -m "$MODEL" -p Hi --ctx-size -1
expect_usage "--ubatch 0 is out of range" run -m "$MODEL" -p Hi --ubatch 0
expect_usage "--threads 5000 is out of range" run -m "$MODEL" -p Hi -t 5000
expect_usage "--temp nan is out of range" run -m "$MODEL" -p Hi --temp nan
expect_usage "--top-p 1.5 is out of range" run -m "$MODEL" -p Hi --top-p 1.5
expect_usage "--min-p -0.1 is out of range" run -m "$MODEL" -p Hi --min-p -0.1
expect_usage "--repeat-penalty 0 is out of range" run -m "$MODEL" -p Hi --repeat-penalty 0
expect_usage "-n -5 is out of range" run -m "$MODEL" -p Hi -n -5
expect_usage "--ctx-size -1 is out of range" logits -m "$MODEL" --tokens 1,2 -o "$W/l.bin" --ctx-size -1
"$PM" run --help > "$W/help.txt"
grep -q -- "--temp arg (=0.8)" "$W/help.txt" && grep -q -- "--top-p arg (=0.95)" "$W/help.txt"
"$PM" run -m "$MODEL" -p Hi -n 2 > /dev/null 2> "$W/err.txt"
seed="$(sed -n 's/^seed: \([0-9]*\) .*/\1/p' "$W/err.txt")"
test -n "$seed"
"$PM" run -m "$MODEL" -p Hi -n 6 -s "$seed" > "$W/a.txt" 2>/dev/null
"$PM" run -m "$MODEL" -p Hi -n 6 -s "$seed" > "$W/b.txt" 2>/dev/null
cmp -s "$W/a.txt" "$W/b.txt"   # the printed seed repeats the run

# a FIFO or device node is refused at once, never waited on
mkfifo "$W/fifo.gguf" "$W/fifo.yaml"
for args in "-m $W/fifo.gguf" "-m /dev/zero" "-m $MODEL -c $W/fifo.yaml"; do
  rc=0; timeout 20 "$PM" run $args -p Hi > /dev/null 2> "$W/err.txt" || rc=$?
  test "$rc" = 1 && grep -q "not a regular file" "$W/err.txt" || { echo "run $args: exit $rc"; cat "$W/err.txt"; exit 1; }
done
echo "run hardening: ok"
