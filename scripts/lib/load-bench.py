#!/usr/bin/env python3
"""Load benchmark on loopback, one run, the same requests to each server in turn:

  embedded        `lopa serve` (its own engine, --max-batch B)
  embedded-1      `lopa serve --max-batch 1` (one request at a time)
  gateway+vllm    `lopa serve --upstream vllm=URL` in front of a real vLLM
  vllm            that vLLM alone, sent full `prompt_embeds` ([soft prompt ; embed(prompt)], what a
                  trusted client would build itself)

Each server gets a sequential pass (latency without queueing; the gateway's added latency is the
difference of medians with vLLM alone) and a concurrent pass: C clients, N completion requests,
each with its own soft prompt. Prints and writes requests/s, p50/p99, errors and lost requests.
Fails if any request errors or goes missing. Bounded in requests and time; loopback only.
Run it with the vLLM venv's python (it has torch for torch.save and the tokenizers package):

    $LOPA_CACHE/vllm/bin/python scripts/lib/load-bench.py --lopa BIN --hf DIR [--clients 16] [--requests 64]
"""
import argparse, base64, http.client, io, json, os, random, socket, statistics, struct, subprocess, sys, threading, time

p = argparse.ArgumentParser()
p.add_argument("--lopa", required=True)
p.add_argument("--hf", required=True, help="the default model as `lopa export-hf` wrote it (vLLM serves it)")
p.add_argument("--model", default=None, help="the same model for lopa (default: its cached GGUF)")
p.add_argument("--clients", type=int, default=16)
p.add_argument("--requests", type=int, default=64)
p.add_argument("--sequential", type=int, default=16)
p.add_argument("--max-tokens", type=int, default=8)
p.add_argument("--rows", type=int, default=10)
p.add_argument("--batch", type=int, default=16)
p.add_argument("--timeout", type=float, default=600)
p.add_argument("--out", default=None, help="also write the JSON here (results/perf/load-bench.json)")
a = p.parse_args()
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close(); return port


def wait_up(port, proc, what, seconds=400):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            sys.exit(f"{what} exited during start")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2); c.request("GET", "/health", headers={"Host": "localhost"})
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    sys.exit(f"{what} did not start")


def lopa(*extra):
    port = free_port()
    cmd = [a.lopa, "serve", "--backend", "cpu", "--addr", f"127.0.0.1:{port}", "--batch-window-ms", "20",
           "--queue", str(4 * a.clients), *extra] + (["--model", a.model] if a.model else [])
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    wait_up(port, proc, "lopa serve")
    return proc, port


def torch_b64(t):
    import torch
    buf = io.BytesIO(); torch.save(t.contiguous(), buf); return base64.b64encode(buf.getvalue()).decode()


def requests_for(width):
    """The same prompts and soft prompts for every server, in both wire forms."""
    import torch, tokenizers
    from safetensors import safe_open
    rng = random.Random(0)
    prompts = ["The movie was", "Review: a gripping, funny film. Sentiment:", "def add(a, b):", "The capital of France is"]
    tok = tokenizers.Tokenizer.from_file(os.path.join(a.hf, "tokenizer.json"))
    with safe_open(os.path.join(a.hf, "model.safetensors"), "pt") as f:
        table = f.get_tensor("model.embed_tokens.weight")
    lopa_bodies, vllm_bodies = [], []
    for i in range(a.requests):
        z = [rng.gauss(0, 0.05) for _ in range(a.rows * width)]
        # f16 on the wire for lopa; vLLM gets the same values (rounded to f16) with the prompt's rows.
        zh = torch.tensor(z, dtype=torch.float16).reshape(a.rows, width)
        sp = {"shape": [a.rows, width], "dtype": "f16", "data": base64.b64encode(struct.pack(f"<{len(z)}e", *z)).decode()}
        prompt = prompts[i % len(prompts)]
        lopa_bodies.append(json.dumps({"prompt": prompt, "max_tokens": a.max_tokens, "temperature": 0, "soft_prompt": sp}))
        ids = tok.encode(prompt, add_special_tokens=False).ids
        embeds = torch.cat([zh.float(), table[ids]], 0)
        vllm_bodies.append(json.dumps({"model": "lopa-bench", "prompt_embeds": torch_b64(embeds), "max_tokens": a.max_tokens, "temperature": 0}))
    return lopa_bodies, vllm_bodies


def drive(port, bodies, clients):
    lat, errors, lock = [], [], threading.Lock()
    todo = list(range(len(bodies)))

    def client():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=a.timeout)
        while True:
            with lock:
                if not todo: return
                i = todo.pop()
            t = time.perf_counter()
            try:
                c.request("POST", "/v1/completions", bodies[i], {"Content-Type": "application/json", "Host": "localhost"})
                r = c.getresponse(); body = r.read()
                ok = r.status == 200 and len(json.loads(body)["choices"]) == 1
            except Exception as e:  # noqa: BLE001 - every failure is counted
                ok, body = False, str(e).encode()
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=a.timeout)
            with lock:
                (lat if ok else errors).append(time.perf_counter() - t if ok else body[:200])

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    [t.start() for t in threads]; [t.join() for t in threads]
    wall = time.perf_counter() - t0
    lat.sort()
    q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))] if lat else None
    return {"requests": len(bodies), "completed": len(lat), "errors": len(errors), "lost": len(bodies) - len(lat) - len(errors),
            "requests_per_sec": len(lat) / wall, "p50_s": q(0.5), "p99_s": q(0.99), "wall_s": wall,
            "error_samples": [e.decode("utf-8", "replace") if isinstance(e, bytes) else str(e) for e in errors[:3]]}


def measure(name, port, bodies):
    seq = drive(port, bodies[:a.sequential], 1)
    conc = drive(port, bodies, a.clients)
    r = {"server": name, "clients": a.clients, "max_tokens": a.max_tokens, "soft_prompt_rows": a.rows,
         "sequential_p50_s": seq["p50_s"], "sequential_errors": seq["errors"], **conc}
    print(json.dumps(r), flush=True)
    return r


res = []
for name, extra in [("embedded", ["--max-batch", str(a.batch)]), ("embedded-1", ["--max-batch", "1"])]:
    proc, port = lopa(*extra)
    c = http.client.HTTPConnection("127.0.0.1", port); c.request("GET", "/v1/models", headers={"Host": "localhost"})
    width = json.loads(c.getresponse().read())["data"][0]["hidden_size"]
    if not res:
        lopa_bodies, vllm_bodies = requests_for(width)
    res.append(measure(name, port, lopa_bodies))
    proc.terminate(); proc.wait(timeout=30)

vport = free_port()
vpid = subprocess.run([os.path.join(ROOT, "scripts/vllm.sh"), "serve", a.hf, str(vport), "lopa-bench"], check=True, capture_output=True, text=True).stdout.strip()
try:
    proc, port = lopa("--upstream", f"vllm=http://127.0.0.1:{vport}")
    res.append(measure("gateway+vllm", port, lopa_bodies))
    proc.terminate(); proc.wait(timeout=30)
    res.append(measure("vllm", vport, vllm_bodies))
finally:
    subprocess.run(["kill", "--", f"-{vpid}"], check=False)
    subprocess.run(["kill", vpid], check=False)

by = {r["server"]: r for r in res}
summary = {
    "gateway_added_p50_s": by["gateway+vllm"]["sequential_p50_s"] - by["vllm"]["sequential_p50_s"],
    "gateway_added_p50_under_load_s": by["gateway+vllm"]["p50_s"] - by["vllm"]["p50_s"],
    "batched_over_one_at_a_time": by["embedded"]["requests_per_sec"] / by["embedded-1"]["requests_per_sec"],
    "machine": f"{os.cpu_count()} cores",
}
# Which build of lopa ran (the scripts pass the release build; an older run was the dev profile's).
build = "release build" if f"{os.sep}release{os.sep}" in os.path.abspath(a.lopa) else "dev-profile build"
out = {"runs": res, "summary": summary, "build": build}
print(json.dumps(summary, indent=1))
if a.out:
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
if any(r["errors"] or r["lost"] or r["sequential_errors"] for r in res):
    sys.exit("errors or lost requests")
