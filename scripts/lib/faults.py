#!/usr/bin/env python3
"""Faults: `lopa serve --upstream vllm=…` (release build) under load in front of a real vLLM that
is killed mid-run (SIGKILL to its process group) and started again. Clients send completions,
streamed completions and scores without pause the whole time; /health is polled every half
second. Every request must get an answer within its deadline: 200, or 503/504 with an error code
(a stream: [DONE], or an error event). None may hang or be lost; /health must go to 503 after the
kill and back to 200 after the restart; the same gateway process must answer 200 again. Writes
results/perf/faults.json and the generated section of docs/PERFORMANCE.md between
<!-- faults:begin/end -->.

    scripts/benchmark.sh faults [--clients 8]
"""
import argparse, http.client, json, os, random, socket, subprocess, sys, threading, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docsection import write_section  # noqa: E402
from soak import free_port, soft_prompt, PROMPTS  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
p = argparse.ArgumentParser()
p.add_argument("--lopa", required=True)
p.add_argument("--hf", required=True, help="the default model as `lopa export-hf` wrote it (vLLM serves it)")
p.add_argument("--clients", type=int, default=8)
p.add_argument("--before", type=float, default=30, help="seconds of load before the kill")
p.add_argument("--down", type=float, default=15, help="seconds of load with vLLM dead before it is started again")
p.add_argument("--after", type=float, default=45, help="seconds of load after vLLM is back")
p.add_argument("--timeout", type=int, default=60, help="the gateway's --timeout-s; a request's deadline is this + 15 s")
p.add_argument("--out", default=str(ROOT / "results" / "perf" / "faults.json"))
a = p.parse_args(sys.argv[1:])


def start_vllm(port):
    return int(subprocess.run([str(ROOT / "scripts" / "vllm.sh"), "serve", a.hf, str(port), "lopa-faults"], check=True, capture_output=True, text=True).stdout.strip())


def health(port):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/health", headers={"Host": "localhost"})
        return c.getresponse().status
    except OSError:
        return "down"


def one(port, rng, deadline):
    """(kind, status, error code) of one request."""
    kind = rng.choice(["completion", "stream", "score"])
    prompt = rng.choice(PROMPTS)
    body = {"prompt": prompt, "soft_prompt": soft_prompt(rng)}
    path = "/v1/score" if kind == "score" else "/v1/completions"
    if kind == "score":
        body["candidates"] = [" great", " terrible"]
    else:
        body.update({"max_tokens": 8, "temperature": 0, "stream": kind == "stream"})
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=deadline)
    try:
        c.request("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json", "Host": "localhost"})
        r = c.getresponse()
        raw = r.read()
        if r.status != 200:
            try:
                return kind, r.status, json.loads(raw)["error"]["code"]
            except Exception:  # noqa: BLE001 - an unreadable error body is itself a finding
                return kind, r.status, "unreadable"
        if kind == "stream":
            events = [line[6:] for line in raw.decode().splitlines() if line.startswith("data: ")]
            errors = [json.loads(e)["error"]["code"] for e in events if e.startswith('{"error"')]
            if errors:
                return kind, "stream_error", errors[0]
            if not events or events[-1] != "[DONE]":
                return kind, "lost", "stream ended without [DONE]"
        return kind, 200, None
    except socket.timeout:
        return kind, "hung", None
    except (OSError, http.client.HTTPException) as e:
        return kind, "lost", type(e).__name__
    finally:
        c.close()


def main():
    vport, gport = free_port(), free_port()
    vpid = start_vllm(vport)
    gateway = subprocess.Popen([a.lopa, "serve", "--upstream", f"vllm=http://127.0.0.1:{vport}", "--addr", f"127.0.0.1:{gport}", "--timeout-s", str(a.timeout)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    events, results, polls, lock, stop = {}, [], [], threading.Lock(), threading.Event()
    try:
        for _ in range(600):
            if health(gport) == 200:
                break
            if gateway.poll() is not None:
                sys.exit("the gateway exited during start")
            time.sleep(0.5)
        t0 = time.time()

        def client(seed):
            rng = random.Random(seed)
            while not stop.is_set():
                t = time.time() - t0
                kind, status, code = one(gport, rng, a.timeout + 15)
                with lock:
                    results.append({"kind": kind, "t": t, "seconds": time.time() - t0 - t, "status": status, "code": code})

        def poller():
            while not stop.is_set():
                polls.append({"t": time.time() - t0, "status": health(gport)})
                if "restart_begun" in events and "vllm_healthy" not in events and health(vport) == 200:
                    events["vllm_healthy"] = time.time() - t0
                time.sleep(0.5)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(a.clients)] + [threading.Thread(target=poller)]
        [t.start() for t in threads]
        time.sleep(a.before)
        os.killpg(vpid, 9)
        events["killed"] = time.time() - t0
        time.sleep(a.down)
        events["restart_begun"] = time.time() - t0
        vpid = start_vllm(vport)
        events["restarted"] = time.time() - t0
        time.sleep(a.after)
        stop.set()
        [t.join() for t in threads]
        gateway_alive = gateway.poll() is None
    finally:
        stop.set()
        gateway.terminate()
        try:
            os.killpg(vpid, 15)
        except ProcessLookupError:
            pass

    def phase(r):
        if r["t"] + r["seconds"] < events["killed"]:
            return "answered before the kill"
        if r["t"] < events["killed"]:
            return "in flight at the kill"
        return "sent while vLLM was down or starting" if r["t"] < events["restarted"] else "sent after vLLM was back"

    answered = lambda r: r["status"] == 200 or r["status"] in (503, 504) or r["status"] == "stream_error"  # noqa: E731
    table = {}
    for r in results:
        k = table.setdefault(phase(r), {"sent": 0, "200": 0, "503/504": 0, "in-stream error": 0, "other": 0, "hung": 0, "lost": 0})
        k["sent"] += 1
        key = "200" if r["status"] == 200 else "503/504" if r["status"] in (503, 504) else "in-stream error" if r["status"] == "stream_error" else r["status"] if r["status"] in ("hung", "lost") else "other"
        k[key] += 1
    down_at = next((q["t"] for q in polls if q["t"] > events["killed"] and q["status"] == 503), None)
    up_at = next((q["t"] for q in polls if q["t"] > events["restart_begun"] and q["status"] == 200), None)
    # When vLLM itself answered /health again (its start-up script returns only after a warm-up request).
    vllm_up = events.get("vllm_healthy")
    codes = sorted({f"{r['status']} {r['code']}" for r in results if r["status"] != 200})
    summary = {
        "command": "scripts/benchmark.sh faults", "clients": a.clients, "gateway_timeout_s": a.timeout, "events_s": events,
        "health_503_after_kill_s": None if down_at is None else down_at - events["killed"],
        "health_200_after_restart_began_s": None if up_at is None else up_at - events["restart_begun"],
        "vllm_healthy_after_restart_began_s": None if vllm_up is None else vllm_up - events["restart_begun"],
        "gateway_alive": gateway_alive, "phases": table, "error_codes": codes,
        "sent": len(results), "answered": sum(answered(r) for r in results),
        "hung": sum(r["status"] == "hung" for r in results), "lost": sum(r["status"] == "lost" for r in results),
        "slowest_s": max((r["seconds"] for r in results), default=0),
    }
    Path(a.out).write_text(json.dumps(summary, indent=1))
    L = [f"`lopa serve --upstream vllm=…` (release build, `--timeout-s {a.timeout}`) in front of a real vLLM, {a.clients} clients "
         "sending completions, streamed completions and scores without pause. After "
         f"{a.before:g} s vLLM's process group is killed (SIGKILL); {a.down:g} s later it is started again (`scripts/vllm.sh serve`, "
         f"which returns once it answered a warm-up request: {events['restarted'] - events['restart_begun']:.0f} s here); the load goes "
         f"on for {a.after:g} s more. Generated by `scripts/benchmark.sh faults` into results/perf/faults.json.", "",
         "| phase | sent | 200 | 503 / 504 | error event in a stream | hung | lost |", "|---|---|---|---|---|---|---|"]
    for name in ["answered before the kill", "in flight at the kill", "sent while vLLM was down or starting", "sent after vLLM was back"]:
        k = table.get(name, {"sent": 0, "200": 0, "503/504": 0, "in-stream error": 0, "hung": 0, "lost": 0})
        L.append(f"| {name} | {k['sent']} | {k['200']} | {k['503/504']} | {k['in-stream error']} | {k['hung']} | {k['lost']} |")
    fmt = lambda x: "never" if x is None else f"{x:.1f} s"  # noqa: E731
    L += ["", f"Every request answered: {summary['answered']} of {summary['sent']} (slowest {summary['slowest_s']:.1f} s); "
          f"refusals seen: {', '.join(codes) or 'none'}. `/health` answered 503 {fmt(summary['health_503_after_kill_s'])} after the kill "
          f"and 200 again {fmt(summary['health_200_after_restart_began_s'])} after the restart began (vLLM's own /health: "
          f"{fmt(summary['vllm_healthy_after_restart_began_s'])}); the gateway was "
          f"{'the same process throughout' if gateway_alive else 'dead at the end'}."]
    section = "\n".join(L) + "\n"
    write_section(ROOT / "docs" / "PERFORMANCE.md", "faults", section, "## The gateway when vLLM dies and comes back")
    print(section)
    after = table.get("sent after vLLM was back", {}).get("200", 0)
    if summary["answered"] != summary["sent"] or summary["hung"] or summary["lost"] or not gateway_alive or down_at is None or up_at is None or after == 0:
        sys.exit("faults: not every request was answered, /health did not follow vLLM, or the gateway did not serve again")


if __name__ == "__main__":
    main()
