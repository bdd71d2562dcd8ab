#!/usr/bin/env bash
# `pocketmoe serve` driven with curl (docs/server.md): an SSE stream parsed chunk by chunk equals
# the non-streamed answer; concurrent clients with different seeds get what the same requests get
# one at a time; a client that hangs up mid-stream frees its slot; malformed JSON, wrong types, an
# oversized body, an unknown route, a wrong key and random bytes get the right status and the
# server stays up; /metrics parses as Prometheus text; SIGTERM stops it. Experts stream through a
# small expert cache, with slow reads, so generations take long enough to interrupt.
# Usage: serve_curl.sh POCKETMOE FIXTURES_DIR FAULT_PLUGIN_DIR
set -euo pipefail
PM="$1"; FIX="$2"; FAULT="$3"
W="$(mktemp -d)"
SERVER_PID=""
cleanup() { if [ -n "$SERVER_PID" ]; then kill -9 "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null || true; fi; rm -rf "$W"; }
trap cleanup EXIT
MODEL="$FIX/models/st-a-q4_0.gguf"
cat > "$W/slow.yaml" <<Y
plugin_paths: ["$FAULT"]
compute: { plugin: cpu-onednn, threads: 1 }
storage: { plugin: fault-storage, fault: slow, delay_ms: 2 }
cache: { policy: lru, budget: 48KiB }   # below one token's experts: every token reads
Y
KEY=sesame
"$PM" serve -m "$MODEL" -c "$W/slow.yaml" --port 0 --parallel 2 --queue 2 --ctx-size 2048 --max-body 64KiB \
  --api-key "$KEY" > "$W/server.out" 2> "$W/server.err" &
SERVER_PID=$!
for _ in $(seq 100); do grep -q "listening on" "$W/server.err" && break; sleep 0.1; done
PORT="$(sed -n 's/^listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$W/server.err")"
test -n "$PORT" || { echo "no port"; cat "$W/server.err"; exit 1; }
URL="http://127.0.0.1:$PORT"
for _ in $(seq 300); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/health")" = 200 ] && break
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "the server exited:"; cat "$W/server.err"; exit 1; }
  sleep 0.1
done
AUTH=(-H "Authorization: Bearer $KEY")

# status CODE METHOD PATH [curl args...]: the status code, the body in $W/body
status() {
  local want="$1" method="$2" path="$3"; shift 3
  local got
  got="$(curl -s -o "$W/body" -w '%{http_code}' -X "$method" "$URL$path" "$@")"
  [ "$got" = "$want" ] || { echo "$method $path: status $got, wanted $want: $(head -c 400 "$W/body")"; exit 1; }
}
# the OpenAI error body names the field
error_names() {
  python3 - "$W/body" "$1" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))["error"]
assert e["param"] == sys.argv[2] and e["message"] and e["type"], e
PY
}

status 200 GET /health
status 200 GET /v1/models "${AUTH[@]}"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["data"][0]["id"]=="st-a-q4_0.gguf" and d["data"][0]["meta"]["streaming_experts"]' "$W/body"

chat() {  # seed max_tokens stream
  printf '{"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Tell me about seed %s"}],"max_tokens":%s,"seed":%s,"temperature":0.9,"stream":%s,"stream_options":{"include_usage":true}}' "$1" "$2" "$1" "$3"
}

# 1. SSE, chunk by chunk: role first, deltas, one finish_reason, usage, [DONE]; the same text as
# the non-streamed answer with the same seed
chat 7 24 false > "$W/req.json"
status 200 POST /v1/chat/completions "${AUTH[@]}" -H "Content-Type: application/json" --data-binary @"$W/req.json"
cp "$W/body" "$W/whole.json"
chat 7 24 true > "$W/req.json"
curl -sN "${AUTH[@]}" "$URL/v1/chat/completions" --data-binary @"$W/req.json" > "$W/sse.txt"
python3 - "$W/sse.txt" "$W/whole.json" <<'PY'
import json, sys
raw = open(sys.argv[1], "rb").read().decode()
whole = json.load(open(sys.argv[2]))
events = [e for e in raw.split("\n\n") if e]
assert events[-1] == "data: [DONE]", events[-1]
text, reasons, usage, first = "", [], None, True
for e in events[:-1]:
    assert e.startswith("data: ") and "\n" not in e, repr(e)
    c = json.loads(e[6:])
    assert c["object"] == "chat.completion.chunk" and c["id"] == json.loads(events[0][6:])["id"], c
    if not c["choices"]:
        usage = c["usage"]; continue
    ch = c["choices"][0]
    if first: assert ch["delta"].get("role") == "assistant", c
    first = False
    text += ch["delta"].get("content", "")
    if ch["finish_reason"]: reasons.append(ch["finish_reason"])
msg = whole["choices"][0]["message"]["content"]
assert text == msg, (text, msg)
assert reasons == [whole["choices"][0]["finish_reason"]], reasons
assert usage == whole["usage"] and usage["completion_tokens"] == 24, (usage, whole["usage"])
t = whole["timings"]
assert t["prompt_n"] == usage["prompt_tokens"] and t["predicted_per_second"] > 0 and t["expert_bytes_read"] > 0, t
assert 0 <= t["expert_cache_hit_rate"] <= 1, t
PY

# 2. concurrent clients with different seeds == the same requests one at a time (2 slots, 2 queued)
for s in 1 2 3 4; do chat "$s" 16 false > "$W/c$s.json"; done
pids=()
for s in 1 2 3 4; do curl -s "${AUTH[@]}" "$URL/v1/chat/completions" --data-binary @"$W/c$s.json" > "$W/par$s.out" & pids+=($!); done
wait "${pids[@]}"
for s in 1 2 3 4; do curl -s "${AUTH[@]}" "$URL/v1/chat/completions" --data-binary @"$W/c$s.json" > "$W/seq$s.out"; done
python3 - "$W" <<'PY'
import json, sys
texts = []
for s in range(1, 5):
    par, seq = (json.load(open(f"{sys.argv[1]}/{k}{s}.out")) for k in ("par", "seq"))
    a, b = par["choices"][0]["message"]["content"], seq["choices"][0]["message"]["content"]
    assert a == b, (s, a, b)
    texts.append(a)
assert len(set(texts)) > 1, texts  # different seeds, different answers: no request saw another's
PY

# 3. a client that hangs up mid-stream cancels its generation; the slot is free again
chat 9 1500 true > "$W/long.json"
curl -sN --max-time 1 "${AUTH[@]}" "$URL/v1/chat/completions" --data-binary @"$W/long.json" > "$W/cut.txt" || true
grep -q '"delta"' "$W/cut.txt"  # it was streaming when the client left
metric() { curl -s "${AUTH[@]}" "$URL/metrics" | sed -n "s/^$1 //p"; }
for _ in $(seq 50); do [ "$(metric pocketmoe_slots_busy)" = 0 ] && break; sleep 0.1; done
test "$(metric pocketmoe_slots_busy)" = 0 || { echo "the slot is still busy after the client left"; exit 1; }
gen="$(metric pocketmoe_generated_tokens_total)"
python3 -c "import sys; assert float(sys.argv[1]) < 900, sys.argv[1]" "$gen"  # stopped long before 1500

# 3b. beyond the 2 slots and the queue of 2, a request gets 503; the others are cancelled when
# their clients leave, and the slots are free again
cpids=()
for s in 1 2 3 4; do
  curl -sN --max-time 4 "${AUTH[@]}" "$URL/v1/chat/completions" --data-binary @"$W/long.json" > /dev/null & cpids+=($!)
done
for _ in $(seq 50); do [ "$(metric pocketmoe_queue_length)" = 2 ] && break; sleep 0.1; done
status 503 POST /v1/chat/completions "${AUTH[@]}" --data-binary @"$W/long.json"
python3 -c 'import json,sys; e=json.load(open(sys.argv[1]))["error"]; assert e["type"] == "unavailable_error" and "retry later" in e["message"], e' "$W/body"
wait "${cpids[@]}" || true
for _ in $(seq 50); do [ "$(metric pocketmoe_slots_busy)" = 0 ] && [ "$(metric pocketmoe_queue_length)" = 0 ] && break; sleep 0.1; done
test "$(metric pocketmoe_slots_busy)" = 0 && test "$(metric pocketmoe_queue_length)" = 0

# 4. bad requests: the right status, the field named, and the server stays up
status 400 POST /v1/chat/completions "${AUTH[@]}" --data-binary '{"messages": [ {"role": "user", '
status 400 POST /v1/chat/completions "${AUTH[@]}" --data-binary '{"messages":[{"role":"user","content":"hi"}],"max_tokens":"ten"}'
error_names max_tokens
status 400 POST /v1/chat/completions "${AUTH[@]}" --data-binary '{"messages":[{"role":"user","content":"hi"}],"temperature":-1}'
error_names temperature
status 400 POST /v1/chat/completions "${AUTH[@]}" --data-binary '{"messages":"hi"}'
error_names messages
status 400 POST /v1/chat/completions "${AUTH[@]}" --data-binary '{"messages":[{"role":"user","content":7}]}'
error_names "messages[0].content"
status 400 POST /v1/completions "${AUTH[@]}" --data-binary '{"prompt":["a","b"]}'
error_names prompt
status 400 POST /v1/completions "${AUTH[@]}" --data-binary '[1,2,3]'
status 400 POST /v1/completions "${AUTH[@]}" --data-binary "$(python3 -c 'print("["*60000)')"
python3 -c 'print("{\"prompt\": \"" + "x" * 70000 + "\"}")' > "$W/big.json"
status 413 POST /v1/completions "${AUTH[@]}" --data-binary @"$W/big.json"
status 404 GET /v1/nothing "${AUTH[@]}"
status 405 GET /v1/chat/completions "${AUTH[@]}"
status 401 GET /v1/models -H "Authorization: Bearer wrong"
status 401 POST /v1/chat/completions --data-binary @"$W/c1.json"
python3 - "$PORT" "$KEY" <<'PY'
# random bytes as bodies and as whole requests: every answer is an HTTP status, never a crash
import random, socket, sys, http.client
port, key = int(sys.argv[1]), sys.argv[2]
rng = random.Random(5)
for i in range(300):
    path = rng.choice(["/v1/chat/completions", "/v1/completions", "/tokenize", "/detokenize"])
    body = bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
    if i % 3 == 0:  # JSON-like garbage
        body = rng.choice([b'{"messages":[{"role":"user","content":', b'{"prompt":', b'{"tokens":[', b'{"content":']) + body
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("POST", path, body=body, headers={"Authorization": "Bearer " + key})
    r = c.getresponse()
    assert r.status in (200, 400), (path, body, r.status, r.read())
    r.read(); c.close()
for i in range(50):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))) + b"\r\n\r\n")
    s.shutdown(socket.SHUT_WR)
    s.recv(65536)  # an answer (400) or a closed connection
    s.close()
PY
status 200 GET /health

# 5. tokenize / detokenize round trip; completions
status 200 POST /tokenize "${AUTH[@]}" --data-binary '{"content":"Hello world"}'
toks="$(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["tokens"]))' "$W/body")"
status 200 POST /detokenize "${AUTH[@]}" --data-binary "{\"tokens\":$toks}"
python3 -c 'import json,sys; assert json.load(open(sys.argv[1]))["content"] == "Hello world"' "$W/body"
status 400 POST /detokenize "${AUTH[@]}" --data-binary '{"tokens":[1, 999999]}'
error_names tokens
status 200 POST /v1/completions "${AUTH[@]}" --data-binary '{"prompt":"Once upon a time","max_tokens":6,"seed":3,"stop":["\n"]}'
python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["choices"][0]; assert "\n" not in c["text"] and c["finish_reason"] in ("stop","length")' "$W/body"

# 6. /metrics: Prometheus text format, with the counts of what happened above
curl -s "${AUTH[@]}" "$URL/metrics" > "$W/metrics.txt"
python3 - "$W/metrics.txt" <<'PY'
import re, sys
line_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*)?\})? (-?[0-9.eE+-]+|NaN|[+-]Inf)$')
typed, samples = {}, {}
for line in open(sys.argv[1]).read().splitlines():
    if line.startswith("# TYPE "):
        _, _, name, t = line.split(" ")
        assert t in ("counter", "gauge"), line
        typed[name] = t
    elif line.startswith("# HELP ") or not line:
        continue
    else:
        m = line_re.match(line)
        assert m, "not Prometheus text: " + line
        assert m.group(1) in typed, "no TYPE before " + line
        samples[line.rsplit(" ", 1)[0]] = float(m.group(5))
need = ["pocketmoe_prompt_tokens_total", "pocketmoe_generated_tokens_total", "pocketmoe_queue_length",
        "pocketmoe_expert_cache_hits_total", "pocketmoe_expert_cache_misses_total",
        "pocketmoe_expert_cache_bytes_read_total", "pocketmoe_expert_cache_stall_seconds_total",
        "pocketmoe_decode_tokens_per_second", "pocketmoe_slots_busy"]
for n in need: assert n in samples, n
assert samples['pocketmoe_requests_total{route="/v1/chat/completions",code="200"}'] >= 10, samples
assert samples['pocketmoe_requests_total{route="other",code="413"}'] == 1, samples
assert samples["pocketmoe_expert_cache_bytes_read_total"] > 0 and samples["pocketmoe_generated_tokens_total"] > 0
PY

# 7. SIGTERM stops it
kill -TERM "$SERVER_PID"
rc=0; wait "$SERVER_PID" || rc=$?
SERVER_PID=""
test "$rc" = 130 || { echo "serve exited $rc after SIGTERM"; cat "$W/server.err"; exit 1; }
echo "serve (curl): ok"
