#!/usr/bin/env bash
# `pocketmoe chat` (and `run -cnv`): a multi-turn conversation that keeps the KV cache between
# turns (a turn evaluates only its own tokens), /reset forgets it (the same question then gets the
# same greedy answer as at the start), /stats and /exit work, Ctrl-C stops an answer but not the
# chat, Ctrl-C at the prompt ends it. Also `run -p -` (stdin) and `run -f FILE`.
# Usage: chat.sh POCKETMOE FIXTURES_DIR FAULT_PLUGIN_DIR
set -euo pipefail
PM="$1"; FIX="$2"; FAULT="$3"
W="$(mktemp -d)"; trap 'rm -rf "$W"' EXIT
MODEL="$FIX/models/st-a-q4_0.gguf"

printf 'Hello there\n/stats\nHow are you?\n/stats\n/reset\nHello there\n/nonsense\n/exit\nnever read\n' |
  "$PM" chat -m "$MODEL" --temp 0 -n 12 --system "Be brief." > "$W/out.txt" 2> "$W/err.txt"
python3 - "$W/out.txt" <<'PY'
import re, sys
lines = open(sys.argv[1], errors="surrogateescape").read().split("\n")
stats = [l for l in lines if l.startswith("[context ")]
assert len(stats) == 2, lines
ctx = [int(re.search(r"\[context (\d+) /", s).group(1)) for s in stats]
prompt = [int(re.search(r"last turn: prompt (\d+) tokens", s).group(1)) for s in stats]
answer = [int(re.search(r"answer (\d+) tokens", s).group(1)) for s in stats]
# turn 1: system + user + header, then 12 tokens; turn 2 evaluates only its own tokens
assert ctx[0] == prompt[0] + answer[0], stats
assert ctx[1] == ctx[0] + prompt[1] + answer[1], stats
assert prompt[1] < ctx[0], ("turn 2 re-read the history", stats)
i = lines.index(stats[0]); j = lines.index("[the conversation is forgotten]")
first = "\n".join(lines[:i])
after_reset = "\n".join(lines[j + 1:lines.index("[unknown command /nonsense: /exit, /reset, /stats]")])
assert first == after_reset, (first, after_reset)
PY

# run -cnv is the chat, with -p as the system message (llama-cli's conversation mode)
printf 'Hello there\n/exit\n' | "$PM" run -m "$MODEL" -cnv -p "Be brief." --temp 0 -n 12 > "$W/cnv.txt" 2>/dev/null
head -c "$(wc -c < "$W/cnv.txt")" "$W/out.txt" | cmp - "$W/cnv.txt"

# Ctrl-C stops the answer, the chat goes on; Ctrl-C at the prompt ends it (exit 130)
cat > "$W/slow.yaml" <<Y
plugin_paths: ["$FAULT"]
storage: { plugin: fault-storage, fault: slow, delay_ms: 5 }
cache: { policy: lru, budget: 48KiB }
Y
mkfifo "$W/in"
"$PM" chat -m "$MODEL" -c "$W/slow.yaml" --temp 0 < "$W/in" > "$W/slow.txt" 2> "$W/slow.err" &
pid=$!
exec 3> "$W/in"
echo "Tell me a long story" >&3
for _ in $(seq 100); do [ -s "$W/slow.txt" ] && break; sleep 0.1; done
sleep 0.5
kill -INT "$pid"
for _ in $(seq 100); do grep -q '^\[stopped\]' "$W/slow.txt" && break; sleep 0.1; done
grep -q '^\[stopped\]' "$W/slow.txt" || { echo "Ctrl-C did not stop the answer"; cat "$W/slow.err"; exit 1; }
echo "/stats" >&3
for _ in $(seq 100); do grep -q '^\[context ' "$W/slow.txt" && break; sleep 0.1; done
kill -0 "$pid"  # still chatting
kill -INT "$pid"
rc=0; wait "$pid" || rc=$?
exec 3>&-
test "$rc" = 130 || { echo "chat: exit $rc after Ctrl-C at the prompt, wanted 130"; cat "$W/slow.err"; exit 1; }
grep -q "1 turns" "$W/slow.txt"

# run -p - reads the prompt from stdin, -f from a file: the same text as -p
"$PM" run -m "$MODEL" -p "Once upon a time" -n 8 -s 3 > "$W/p.txt" 2>/dev/null
printf 'Once upon a time' | "$PM" run -m "$MODEL" -p - -n 8 -s 3 > "$W/stdin.txt" 2>/dev/null
printf 'Once upon a time' > "$W/prompt.txt"
"$PM" run -m "$MODEL" -f "$W/prompt.txt" -n 8 -s 3 > "$W/file.txt" 2>/dev/null
cmp "$W/p.txt" "$W/stdin.txt" && cmp "$W/p.txt" "$W/file.txt"
rc=0; "$PM" run -m "$MODEL" -n 8 > /dev/null 2> "$W/err.txt" || rc=$?
test "$rc" = 2 && grep -q -- "-p TEXT, -p - (stdin) or -f FILE" "$W/err.txt"
echo "chat: ok"
