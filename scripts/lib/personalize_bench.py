"""Personalisation benchmark: a user whose labels follow a rule the base task does not.

Starting from an SST-2 adapter, the "user" labels sentiment the other way round (their " great"
is SST-2's " terrible"): a rule the base task does not learn. For 8, 16 and 32 of their examples
(SST-2 training sentences, labels flipped) `lopa personalize` trains a copy of the adapter through
a `lopa serve` on this machine, and `lopa eval` scores it on held-out flipped SST-2 dev sentences,
before and after. Raw output: results/personalize.json; the table goes to docs/RESULTS.md between
the personalize markers.

Run through scripts/benchmark.sh personalize.
"""
import argparse, json, os, random, socket, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def flipped_rows(path, n, seed):
    lines = Path(path).read_text().splitlines()
    header, rows = lines[0], [l.split("\t") for l in lines[1:] if l.strip()]
    random.Random(seed).shuffle(rows)
    return header, [[s, "0" if l.strip() == "1" else "1"] for s, l in rows[:n]]


def write_tsv(path, header, rows):
    path.write_text(header + "\n" + "".join(f"{s}\t{l}\n" for s, l in rows))


def lopa(args, *cmd):
    out = subprocess.run([args.lopa, *cmd], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"lopa {' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return out.stdout


def score(args, adapter, data):
    return json.loads(lopa(args, "eval", "--backend", "cpu", "--adapter", str(adapter), "--file", str(data)).strip().splitlines()[-1])["score"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lopa", required=True)
    ap.add_argument("--adapter", required=True, help="the SST-2 adapter to start from")
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/sst2"))
    ap.add_argument("--sizes", default="8,16,32")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--held-out", type=int, default=200)
    ap.add_argument("--work", default="runs/personalize")
    ap.add_argument("--out", default="results/personalize.json")
    a = ap.parse_args()
    work = ROOT / a.work
    work.mkdir(parents=True, exist_ok=True)
    header, held = flipped_rows(Path(a.data) / "dev.tsv", a.held_out, 1)
    write_tsv(work / "held-out.tsv", header, held)
    sock = socket.socket(); sock.bind(("127.0.0.1", 0)); port = sock.getsockname()[1]; sock.close()
    server = subprocess.Popen([a.lopa, "serve", "--backend", "cpu", "--addr", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        before = score(a, a.adapter, work / "held-out.tsv")
        runs = []
        for n in [int(x) for x in a.sizes.split(",")]:
            _, mine = flipped_rows(Path(a.data) / "train.tsv", n, 100 + n)
            data = work / f"user-{n}.tsv"
            write_tsv(data, header, mine)
            out = work / f"user-{n}"
            t0 = time.time()
            log = lopa(a, "personalize", "--backend", "cpu", "--adapter", a.adapter, "--endpoint", url, "--data", str(data), "--out", str(out),
                       "--steps", str(a.steps), "--lr", str(a.lr), "--batch-size", str(a.batch_size))
            wall = time.time() - t0
            steps = [json.loads(l) for l in log.splitlines() if l.startswith("{")]
            after = score(a, out, work / "held-out.tsv")
            own = score(a, out, data)
            per_step = sorted(s["seconds"] for s in steps)
            runs.append({"examples": n, "steps": len(steps), "before": before, "after": after, "own_examples_after": own,
                         "loss_first": steps[0]["loss"], "loss_last": steps[-1]["loss"], "median_step_seconds": per_step[len(per_step) // 2],
                         "wall_seconds": wall})
            print(json.dumps(runs[-1]), flush=True)
    finally:
        server.terminate()
        server.wait()
    host = f"{os.cpu_count()}-core"
    # The base adapter's own dev accuracy, from its run's metrics.
    metrics = Path(a.adapter).parent / "metrics.jsonl"
    base = max((json.loads(l)["dev_accuracy"] for l in metrics.read_text().splitlines() if l.strip()), default=None) if metrics.exists() else None
    result = {"adapter": a.adapter, "adapter_sst2_dev_accuracy": base, "steps": a.steps, "lr": a.lr, "batch_size": a.batch_size, "held_out": a.held_out, "host": host,
              "rule": "SST-2 labels flipped (the user's ' great' is SST-2's ' terrible')", "runs": runs}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    table = ["<!-- personalize:begin (written by scripts/lib/personalize_bench.py from results/personalize.json) -->", "",
             f"Starting from the small SST-2 adapter of the browser tests (`configs/browser-test.json`"
             + (f", {100 * base:.1f} on SST-2 dev" if base is not None else "") + "), a user whose labels are SST-2's flipped: "
             f"`lopa personalize` ({a.steps} steps, batch {a.batch_size}, lr {a.lr}) through `lopa serve`, both on one {host} CPU machine "
             f"(the step time counts the client's generator, the HTTP round trip and the server's forward and backward pass); "
             f"accuracy on {a.held_out} held-out dev sentences with the user's labels. Command: `scripts/benchmark.sh personalize`.", "",
             "| user's examples | accuracy before | after | on their own examples after | loss first → last step | median s / step |",
             "|---|---|---|---|---|---|"]
    for r in runs:
        table.append(f"| {r['examples']} | {100 * r['before']:.1f} | **{100 * r['after']:.1f}** | {100 * r['own_examples_after']:.1f} | "
                     f"{r['loss_first']:.2f} → {r['loss_last']:.2f} | {r['median_step_seconds']:.2f} |")
    browser = ROOT / "results/perf/personalize-browser.json"
    if browser.exists():
        b = json.loads(browser.read_text())
        ms = b["ms_per_step"]
        table += ["", f"One step of {b['batch_size']} examples, timed by `tests/browser/personalize.test.mjs --out results/perf/personalize-browser.json` "
                  f"(headless Chromium, same machine, same `lopa serve`): the CPU module {ms.get('cpu', 0):.0f} ms on the page, "
                  f"{ms.get('cpu (worker)', 0):.0f} ms in its worker; natively (`lopa personalize`) {ms.get('native', 0):.0f} ms; "
                  f"WebGPU on SwiftShader (a CPU emulation, not a GPU) {ms.get('webgpu', 0):.0f} ms."]
    table += ["", "<!-- personalize:end -->"]
    doc = ROOT / "docs/RESULTS.md"
    text = doc.read_text()
    start, end = text.find("<!-- personalize:begin"), text.find("<!-- personalize:end -->")
    block = "\n".join(table)
    if start >= 0 and end >= 0:
        text = text[:start] + block + text[end + len("<!-- personalize:end -->"):]
    else:
        text = text.rstrip() + "\n\n## Personalisation on the user's side\n\n" + block + "\n"
    doc.write_text(text)


if __name__ == "__main__":
    main()
