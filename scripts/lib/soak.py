#!/usr/bin/env python3
"""Soak: `lopa serve --backend cpu` (release build) held at its concurrency limit for a while with
mixed routes — completions, streamed completions, scores, soft-prompt gradients and malformed
bodies — while its resident memory is sampled. Fails if a valid request gets anything but 200,
a malformed one anything but 4xx, any request hangs past its deadline or is lost, or resident
memory after warm-up grows by more than --max-growth-mib. Writes results/perf/soak.json and the
generated section of docs/PERFORMANCE.md between <!-- soak:begin/end -->.

    scripts/benchmark.sh soak [--minutes 10] [--concurrency 8]
"""
import argparse, base64, http.client, json, os, random, re, socket, struct, subprocess, sys, threading, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docsection import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
D, M = 576, 10  # SmolLM2-135M's width; the default adapter's soft-prompt rows


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close(); return port


def soft_prompt(rng, rows=M, dtype="f16", width=D, nan=False):
    z = [rng.gauss(0, 0.05) for _ in range(rows * width)]
    if nan:
        z[rng.randrange(len(z))] = float("nan")
    fmt = "e" if dtype == "f16" else "f"
    return {"shape": [rows, width], "dtype": dtype, "data": base64.b64encode(struct.pack(f"<{len(z)}{fmt}", *z)).decode()}


PROMPTS = ["The movie was", "Review: a gripping, funny film. Sentiment:", "def add(a, b):", "The capital of France is"]


def request(rng, kind):
    """(path, body bytes, stream) for one request of `kind`."""
    prompt = rng.choice(PROMPTS)
    if kind == "completion":
        return "/v1/completions", {"prompt": prompt, "max_tokens": 8, "temperature": 0.7, "seed": rng.randrange(1 << 30), "soft_prompt": soft_prompt(rng)}, False
    if kind == "stream":
        return "/v1/completions", {"prompt": prompt, "max_tokens": 8, "temperature": 0, "stream": True, "stop": ["\n"], "soft_prompt": soft_prompt(rng)}, True
    if kind == "score":
        return "/v1/score", {"prompt": prompt, "candidates": [" great", " terrible", " fine"], "soft_prompt": soft_prompt(rng)}, False
    if kind == "gradient":
        ex = [{"prompt": rng.choice(PROMPTS) + " it was" * rng.randrange(1, 40), "target": " great", "soft_prompt": soft_prompt(rng)} for _ in range(rng.randrange(1, 4))]
        return "/v1/soft_prompt_grad", {"examples": ex}, False
    # Malformed: each must be refused with a 4xx and cost nothing.
    bad = rng.choice(["json", "shape", "nan", "field", "rows", "tokens", "grad_tokens"])
    if bad == "json":
        return "/v1/completions", b'{"prompt": "x", "max_tokens": ', False
    if bad == "shape":
        return "/v1/completions", {"prompt": prompt, "soft_prompt": soft_prompt(rng, width=D - 1)}, False
    if bad == "nan":
        return "/v1/score", {"prompt": prompt, "candidates": [" a"], "soft_prompt": soft_prompt(rng, nan=True)}, False
    if bad == "field":
        return "/v1/completions", {"prompt": prompt, "max_tokens": 4, "best_of": 3}, False
    if bad == "rows":
        return "/v1/completions", {"prompt": prompt, "soft_prompt": soft_prompt(rng, rows=65)}, False
    if bad == "tokens":
        return "/v1/completions", {"prompt": " the" * 5000, "max_tokens": 8}, False
    return "/v1/soft_prompt_grad", {"examples": [{"prompt": " the" * 3000, "target": " end" * 2000, "soft_prompt": soft_prompt(rng)}]}, False


KINDS = [("completion", 30), ("stream", 20), ("score", 25), ("gradient", 10), ("malformed", 15)]


def send(port, path, body, stream, deadline):
    """(status, error code or None); status 'hung' past the deadline, 'lost' when the connection fails."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=deadline)
    try:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        c.request("POST", path, data, {"Content-Type": "application/json", "Host": "localhost"})
        r = c.getresponse()
        raw = r.read()
        if r.status == 200 and stream:
            events = [line[6:] for line in raw.decode().splitlines() if line.startswith("data: ")]
            if not events or events[-1] != "[DONE]":
                errors = [json.loads(e)["error"]["code"] for e in events if e.startswith("{\"error\"")]
                return "stream_error", errors[0] if errors else "no [DONE]"
        code = None
        if r.status != 200:
            try:
                code = json.loads(raw)["error"]["code"]
            except Exception:  # noqa: BLE001 - an unreadable error body is itself a finding
                code = "unreadable"
        return r.status, code
    except socket.timeout:
        return "hung", None
    except (OSError, http.client.HTTPException) as e:
        return "lost", type(e).__name__
    finally:
        c.close()


def rss_mib(pid):
    return int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)) / 1024


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--lopa", required=True)
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--warmup-minutes", type=float, default=2)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--timeout", type=int, default=120, help="the server's --timeout-s; a request's deadline is this + 30 s")
    p.add_argument("--max-growth-mib", type=float, default=64)
    p.add_argument("--out", default=str(ROOT / "results" / "perf" / "soak.json"))
    p.add_argument("--context", default="", help="a sentence on the conditions of the run, printed with its figures")
    return p.parse_args()


def main():
    global a
    a = parse_args()
    port = free_port()
    cmd = [a.lopa, "serve", "--backend", "cpu", "--addr", f"127.0.0.1:{port}", "--max-concurrent", str(a.concurrency), "--timeout-s", str(a.timeout)]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            if server.poll() is not None:
                sys.exit("lopa serve exited during start")
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2); c.request("GET", "/health", headers={"Host": "localhost"})
                if c.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            sys.exit("lopa serve did not start")
        t0, end = time.time(), time.time() + a.minutes * 60
        lock, results, samples = threading.Lock(), [], []
        kinds, weights = zip(*KINDS)

        def client(seed):
            rng = random.Random(seed)
            while time.time() < end:
                kind = rng.choices(kinds, weights)[0]
                path, body, stream = request(rng, kind)
                t = time.time()
                status, code = send(port, path, body, stream, a.timeout + 30)
                with lock:
                    results.append({"kind": kind, "t": t - t0, "seconds": time.time() - t, "status": status, "code": code})

        threads = [threading.Thread(target=client, args=(i,)) for i in range(a.concurrency)]
        [t.start() for t in threads]
        while time.time() < end:
            samples.append({"t": time.time() - t0, "rss_mib": rss_mib(server.pid), "done": len(results)})
            time.sleep(5)
        [t.join() for t in threads]
        samples.append({"t": time.time() - t0, "rss_mib": rss_mib(server.pid), "done": len(results)})
        alive = server.poll() is None
    finally:
        server.terminate()
        server.wait()

    def ok(r):
        if r["kind"] == "malformed":
            return isinstance(r["status"], int) and 400 <= r["status"] < 500
        # At the limit a request may arrive just before the one it follows has released its slot:
        # a 503 `overloaded` is the endpoint's clear refusal, counted apart.
        return r["status"] == 200 or (r["status"] == 503 and r["code"] == "overloaded")

    by_kind = {}
    for r in results:
        k = by_kind.setdefault(r["kind"], {"sent": 0, "ok": 0, "statuses": {}, "worst_s": 0.0})
        k["sent"] += 1
        k["ok"] += ok(r)
        k["statuses"][str(r["status"])] = k["statuses"].get(str(r["status"]), 0) + 1
        k["worst_s"] = max(k["worst_s"], r["seconds"])
    warm = [s for s in samples if s["t"] >= a.warmup_minutes * 60]
    base = warm[0]["rss_mib"] if warm else samples[-1]["rss_mib"]
    growth = max(s["rss_mib"] for s in warm) - base if warm else 0.0
    # Least-squares slope of resident memory after warm-up, MiB per minute.
    n = len(warm)
    if n > 2:
        mt, mr = sum(s["t"] for s in warm) / n, sum(s["rss_mib"] for s in warm) / n
        slope = sum((s["t"] - mt) * (s["rss_mib"] - mr) for s in warm) / sum((s["t"] - mt) ** 2 for s in warm) * 60
    else:
        slope = 0.0
    failures = [r for r in results if not ok(r)]
    summary = {
        "command": "scripts/benchmark.sh soak", "context": a.context, "minutes": a.minutes, "warmup_minutes": a.warmup_minutes, "concurrency": a.concurrency,
        "server": " ".join(["lopa"] + cmd[1:3] + cmd[5:]), "alive_at_end": alive, "requests": len(results),
        "hung": sum(r["status"] == "hung" for r in results), "lost": sum(r["status"] == "lost" for r in results),
        "failures": len(failures), "failure_samples": failures[:5], "by_kind": by_kind,
        "rss_after_warmup_mib": base, "rss_growth_after_warmup_mib": growth, "rss_slope_mib_per_min": slope, "samples": samples,
    }
    Path(a.out).write_text(json.dumps(summary, indent=1))
    L = [f"`lopa serve --backend cpu --max-concurrent {a.concurrency}` (release build) held at its limit for {a.minutes:g} minutes by {a.concurrency} "
         "clients, each sending one request after another, chosen at random: completions (8 tokens, sampled), streamed completions "
         "(with a stop string), scores (3 candidates), soft-prompt gradients (1–3 examples) and malformed bodies (broken JSON, a wrong "
         "width, a NaN, an unknown field, 65 rows, 5,000 prompt tokens, a gradient over its memory budget). Generated by "
         "`scripts/benchmark.sh soak` into results/perf/soak.json." + (f" {a.context}" if a.context else ""), "",
         "| requests | sent | as expected (200, or 503 `overloaded`; 4xx for malformed) | statuses | slowest |", "|---|---|---|---|---|"]
    for kind, _ in KINDS:
        k = by_kind.get(kind)
        if k:
            st = ", ".join(f"{s}: {c}" for s, c in sorted(k["statuses"].items()))
            L.append(f"| {kind} | {k['sent']} | {k['ok']} | {st} | {k['worst_s']:.1f} s |")
    L += ["", f"Hung: {summary['hung']}; lost: {summary['lost']}; the server {'was alive' if alive else 'had died'} at the end. "
          f"Resident memory after {a.warmup_minutes:g} minutes of warm-up: {base:.0f} MiB; the most it grew after that: {growth:+.0f} MiB "
          f"(least-squares slope {slope:+.2f} MiB/min).", "", "| minute | resident memory | requests answered |", "|---|---|---|"]
    for minute in range(int(a.minutes) + 1):
        s = min(samples, key=lambda s: abs(s["t"] - minute * 60))
        L.append(f"| {minute} | {s['rss_mib']:.0f} MiB | {s['done']} |")
    section = "\n".join(L) + "\n"
    write_section(ROOT / "docs" / "PERFORMANCE.md", "soak", section, "## A soak at the concurrency limit")
    print(section)
    bad = []
    if failures or summary["hung"] or summary["lost"] or not alive:
        bad.append(f"{len(failures)} requests not as expected (hung {summary['hung']}, lost {summary['lost']}, alive {alive}): {failures[:3]}")
    if growth > a.max_growth_mib:
        bad.append(f"resident memory grew {growth:.0f} MiB after warm-up (limit {a.max_growth_mib:g})")
    if bad:
        sys.exit("soak: " + "; ".join(bad))


if __name__ == "__main__":
    main()
