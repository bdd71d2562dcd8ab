#!/usr/bin/env python3
"""Load for an OpenAI-compatible server: C clients, each sending R streamed chat requests one after
another (every prompt starts with its own number, so no server can reuse another's prefix). Prints
one JSON line: requests/s over the wall time, and the time to first token (first content chunk) and
decode tok/s per request (medians). Used by bench/server.sh for pocketmoe serve and llama-server.
Usage: server_load.py PORT CLIENTS REQUESTS_PER_CLIENT MAX_TOKENS"""
import http.client, json, statistics, sys, threading, time

port, clients, per_client, max_tokens = (int(a) for a in sys.argv[1:5])
TEXT = ("Summarize the following notes about the expedition in a few sentences: the team left at dawn, "
        "crossed the river by noon, camped near the old mill, and counted birds until dark. ")

def one(i):
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": f"{i}. {TEXT}"}],
                       "max_tokens": max_tokens, "temperature": 0.7, "seed": i, "stream": True})
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    c.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    assert r.status == 200, (r.status, r.read())
    ttft, chunks, buf = None, 0, b""
    while True:
        line = r.readline()
        if not line: break
        line = line.strip()
        if not line.startswith(b"data: ") or line == b"data: [DONE]": continue
        d = json.loads(line[6:])
        if d.get("choices") and d["choices"][0].get("delta", {}).get("content"):
            chunks += 1
            if ttft is None: ttft = time.perf_counter() - t0
    total = time.perf_counter() - t0
    c.close()
    return ttft if ttft is not None else total, total, chunks

results, lock = [], threading.Lock()
def client(k):
    for j in range(per_client):
        res = one(1000 * k + j)
        with lock: results.append(res)

t0 = time.perf_counter()
threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
for t in threads: t.start()
for t in threads: t.join()
wall = time.perf_counter() - t0
print(json.dumps({"requests_per_second": len(results) / wall,
                  "ttft_s": statistics.median(r[0] for r in results),
                  "decode_tok_s": statistics.median(r[2] / max(r[1] - r[0], 1e-9) for r in results),
                  "tokens_per_request": statistics.median(r[2] for r in results)}))
