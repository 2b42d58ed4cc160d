#!/usr/bin/env python3
"""Load benchmark for `lopa serve` on loopback: C concurrent clients, each with its own soft
prompt, send N completion requests in total to a server started with --max-batch B and to one
started with --max-batch 1 (one at a time). Prints requests/s and p50/p99 latency for both, and
fails if any request errors or goes missing. Bounded in requests and time; loopback only.

    python3 scripts/load-bench.py --lopa BIN [--model GGUF] [--clients 16] [--requests 64] [--max-tokens 8]
"""
import argparse, base64, http.client, json, random, socket, statistics, struct, subprocess, sys, threading, time

p = argparse.ArgumentParser()
p.add_argument("--lopa", required=True)
p.add_argument("--model", default=None)
p.add_argument("--clients", type=int, default=16)
p.add_argument("--requests", type=int, default=64)
p.add_argument("--max-tokens", type=int, default=8)
p.add_argument("--rows", type=int, default=10)
p.add_argument("--batch", type=int, default=16)
p.add_argument("--timeout", type=float, default=600)
p.add_argument("--out", default=None, help="also write the JSON here (docs/perf/load-bench.json for docs/RESULTS.md)")
a = p.parse_args()


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close(); return port


def start(max_batch):
    port = free_port()
    cmd = [a.lopa, "serve", "--backend", "cpu", "--addr", f"127.0.0.1:{port}", "--max-batch", str(max_batch),
           "--batch-window-ms", "20", "--queue", str(4 * a.clients)]
    if a.model:
        cmd += ["--model", a.model]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2); c.request("GET", "/v1/models")
            width = json.loads(c.getresponse().read())["data"][0]["hidden_size"]
            return proc, port, width
        except OSError:
            time.sleep(0.5)
    proc.kill(); sys.exit("server did not start")


def run(max_batch):
    proc, port, width = start(max_batch)
    rng = random.Random(0)
    prompts = ["The movie was", "Review: a gripping, funny film. Sentiment:", "def add(a, b):", "The capital of France is"]
    bodies = []
    for i in range(a.requests):
        z = [rng.gauss(0, 0.05) for _ in range(a.rows * width)]
        sp = {"shape": [a.rows, width], "dtype": "f16", "data": base64.b64encode(struct.pack(f"<{len(z)}e", *z)).decode()}
        bodies.append(json.dumps({"prompt": prompts[i % len(prompts)], "max_tokens": a.max_tokens, "temperature": 0, "soft_prompt": sp}))
    lat, errors, lock = [], [], threading.Lock()
    todo = list(range(a.requests))

    def client():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=a.timeout)
        while True:
            with lock:
                if not todo: return
                i = todo.pop()
            t = time.perf_counter()
            try:
                c.request("POST", "/v1/completions", bodies[i], {"Content-Type": "application/json"})
                r = c.getresponse(); body = r.read()
                ok = r.status == 200 and len(json.loads(body)["choices"]) == 1
            except Exception as e:  # noqa: BLE001 - every failure is counted
                ok, body = False, str(e).encode()
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=a.timeout)
            with lock:
                (lat if ok else errors).append(time.perf_counter() - t if ok else body[:200])

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(a.clients)]
    [t.start() for t in threads]; [t.join() for t in threads]
    wall = time.perf_counter() - t0
    proc.terminate(); proc.wait(timeout=30)
    lat.sort()
    q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))]
    return {"max_batch": max_batch, "clients": a.clients, "requests": a.requests, "completed": len(lat), "errors": len(errors),
            "requests_per_sec": len(lat) / wall, "p50_s": q(0.5), "p99_s": q(0.99), "wall_s": wall, "max_tokens": a.max_tokens,
            "soft_prompt_rows": a.rows}


res = [run(a.batch), run(1)]
for r, mode in zip(res, [f"batched (--max-batch {a.batch})", "one at a time (--max-batch 1)"]):
    r["mode"] = mode
print(json.dumps(res, indent=1))
if a.out:
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
print(f"batched / one-at-a-time throughput: {res[0]['requests_per_sec'] / res[1]['requests_per_sec']:.2f}x")
if any(r["errors"] or r["completed"] != a.requests for r in res):
    sys.exit("errors or lost requests")
