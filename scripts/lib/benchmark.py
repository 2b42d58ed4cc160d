#!/usr/bin/env python3
"""The paper's comparison at small scale: zero-shot, PT, IDPG, LoPA and its variants, and LoRA on
SST-2, RTE, MRPC (and CruxEval-O in the `full` budget), one fixed budget per task, several seeds
where time allows. Writes results/benchmark.json, docs/accuracy-vs-params.svg and docs/RESULTS.md
(generated: do not edit by hand; the discussion paragraph comes from docs/results-discussion.md).

    scripts/benchmark.sh accuracy --budget quick            # what docs/RESULTS.md shows (2-core CPU)
    scripts/benchmark.sh accuracy --budget full --seeds 42 43 44

Runs are resumable: a run whose summary.json exists is not trained again. Needs the `lopa`
binary (cargo build --features full --bin lopa) and the weights (scripts/fetch-weights.sh).
On a GPU, `--backend wgpu --jobs 8` runs eight trainings at once (one process each), most
important first: seed 1 of the core methods on every task, then the variants, then more seeds;
`--deadline` stops starting runs after that many seconds, and `--report-only` writes the report
from the runs that finished.
"""
import argparse, json, os, platform, statistics, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from perf_report import load, performance

ROOT = Path(__file__).resolve().parents[2]
LOPA = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/lopa/target")) / "debug/lopa"
METHODS = ["zero-shot", "pt", "idpg", "lopa", "lopa-add", "lopa-max", "lopa-concat", "lora"]
CORE = ["zero-shot", "pt", "idpg", "lopa", "lora"]
SLOWEST_FIRST = {"cruxeval-o": 3, "rte": 2, "mrpc": 1}  # so that concurrent runs end close together
SERVER_STATE = {"lora": "yes (per task/user)"}
# One fixed budget per task: training rows × epochs, dev rows (0 = all), max length.
BUDGETS = {
    "quick": {  # about 70 min on 2 CPU cores: too small a budget to rank the methods (see the report)
        "sst2": dict(train_limit=400, epochs=1, dev_limit=200, max_length=256),
        "mrpc": dict(train_limit=240, epochs=1, dev_limit=120, max_length=256, methods=["zero-shot", "pt", "idpg", "lopa", "lora"]),
        "rte": dict(train_limit=160, epochs=1, dev_limit=100, max_length=512, methods=["zero-shot", "pt", "idpg", "lopa", "lora"]),
    },
    "full": {
        "sst2": dict(train_limit=2000, epochs=2, dev_limit=0, max_length=256),
        "mrpc": dict(train_limit=2000, epochs=2, dev_limit=0, max_length=256),
        "rte": dict(train_limit=0, epochs=2, dev_limit=0, max_length=512),
        "cruxeval-o": dict(train_limit=0, epochs=2, dev_limit=0, max_length=512),
    },
}
# The paper's numbers (RoBERTa-large, GLUE dev; ../shared/notes/lopa-method.md) for the same tasks.
PAPER = {
    "pt": {"params_m": 0.01, "sst2": 84.40, "mrpc": 72.38, "rte": 53.07},
    "idpg": {"params_m": 2.89, "sst2": 95.30, "mrpc": 78.60, "rte": 77.26},
    "lora": {"params_m": 2.4, "sst2": 96.22, "mrpc": 90.77, "rte": 85.66},
    "lopa": {"params_m": 1.60, "sst2": 95.99, "mrpc": 91.09, "rte": 83.39},
}
PAPER_CODE = {"pt": 31.6, "lopa": 36.8, "lora": 38.0}  # CruxEval-O pass@1, average of six models


def metric_of(task):
    return {"mrpc": "f1", "cruxeval-o": "pass@1"}.get(task, "accuracy")


def run(cmd, log):
    with open(log, "w") as f:
        subprocess.run(cmd, stdout=subprocess.PIPE, stderr=f, check=True, text=True, cwd=ROOT)


def one(task, method, seed, budget, lr, out, backend="cpu", report_only=False):
    b = BUDGETS[budget][task]
    d = out / budget / task / f"{method}-s{seed}"
    summary = d / "summary.json"
    if summary.exists() and "command" in (s := json.loads(summary.read_text())):
        return s
    if report_only:
        return None
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if method == "zero-shot":
        cmd = [str(LOPA), "zero-shot", "--backend", backend, "--task", task, "--dev-limit", str(b["dev_limit"])]
        r = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
        z = json.loads(r.stdout)
        s = {"best_dev_accuracy": z["dev_accuracy"], "best_dev_f1": z["dev_f1"], "trainable_parameters": 0, "samples_per_sec": None,
             "backend": z.get("backend"), "check": check_of(z)}
    else:
        cmd = [str(LOPA), "train", "--backend", backend, "--task", task, "--method", method, "--seed", str(seed), "--lr", str(lr),
               "--batch-size", "16", "--epochs", str(b["epochs"]), "--train-limit", str(b["train_limit"]),
               "--dev-limit", str(b["dev_limit"]), "--max-length", str(b["max_length"]), "--run-dir", str(d)]
        run(cmd, d / "train.log")
        s = json.loads(summary.read_text())
        s["check"] = check_of(json.loads((d / "best" / "adapter.json").read_text())["task"])
        s["backend"] = logged_backend(d)
    s["wall_seconds"] = time.time() - t0
    s["host"] = host()
    s["command"] = " ".join(c.replace(str(LOPA), "lopa").replace(str(ROOT) + "/", "") for c in cmd)
    summary.write_text(json.dumps(s, indent=1))
    return s


def check_of(spec):
    """The pass@1 check a run used, from its task spec (or `lopa zero-shot`'s output); specs
    written before `check` recorded a program template."""
    if spec.get("check"):
        return spec["check"]
    return {"program": spec["check_template"]} if spec.get("check_template") else None


def logged_backend(d):
    """The backend a run really used, from its train.log's first line (`lopa: backend wgpu (NVIDIA H200)`)."""
    log = d / "train.log"
    first = log.read_text().splitlines()[:1] if log.exists() else []
    return first[0].removeprefix("lopa: backend ") if first and first[0].startswith("lopa: backend ") else None


def host():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} cores"


def score(s, task):
    return 100 * (s["best_dev_f1"] if metric_of(task) == "f1" else s["best_dev_accuracy"])


def fmt(xs):
    if len(xs) == 1:
        return f"{xs[0]:.1f}"
    return f"{statistics.mean(xs):.1f} ± {statistics.stdev(xs):.1f}"


def plot(results, path):
    """Accuracy (or F1) against trainable parameters, one panel per task, log x."""
    import math
    tasks = [t for t in results if results[t]]
    W, H, pad = 300, 230, 46
    colors = {"pt": "#9ca3af", "idpg": "#f59e0b", "lopa": "#2563eb", "lopa-add": "#60a5fa", "lopa-max": "#93c5fd", "lopa-concat": "#1e40af", "lora": "#dc2626", "zero-shot": "#111827"}
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W * len(tasks)}" height="{H + 40}" font-family="sans-serif" font-size="10">']
    for i, task in enumerate(tasks):
        x0 = i * W
        rows = [(m, r["params"], statistics.mean(r["scores"])) for m, r in results[task].items()]
        ys = [y for _, _, y in rows]
        lo, hi = math.floor(min(ys) / 5) * 5, math.ceil(max(ys) / 5) * 5 + 1e-9
        px = lambda p: x0 + pad + (math.log10(max(p, 1)) / 7) * (W - pad - 10)
        py = lambda y: 10 + (hi - y) / (hi - lo) * (H - 40)
        out.append(f'<text x="{x0 + W / 2}" y="{H + 30}" text-anchor="middle">{task} ({metric_of(task)}) vs trainable parameters (log10)</text>')
        out.append(f'<line x1="{x0 + pad}" y1="{H - 30}" x2="{x0 + W - 10}" y2="{H - 30}" stroke="#999"/><line x1="{x0 + pad}" y1="10" x2="{x0 + pad}" y2="{H - 30}" stroke="#999"/>')
        for e in range(0, 8):
            out.append(f'<text x="{px(10 ** e)}" y="{H - 18}" text-anchor="middle">{"0" if e == 0 else f"1e{e}"}</text>')
        for y in range(int(lo), int(hi) + 1, 5):
            out.append(f'<text x="{x0 + pad - 4}" y="{py(y) + 3}" text-anchor="end">{y}</text>')
        for m, p, y in rows:
            out.append(f'<circle cx="{px(p):.1f}" cy="{py(y):.1f}" r="4" fill="{colors.get(m, "#000")}"/><text x="{px(p) + 6:.1f}" y="{py(y) + 3:.1f}">{m}</text>')
    out.append("</svg>")
    path.write_text("\n".join(out))


def main():
    global LOPA
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", default="quick", choices=sorted(BUDGETS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[42])
    ap.add_argument("--tasks", nargs="+")
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--backend", default="cpu", help="cpu, wgpu or auto (passed to lopa)")
    ap.add_argument("--jobs", type=int, default=1, help="trainings run at once (a GPU takes several)")
    ap.add_argument("--deadline", type=float, default=0, help="start no run after this many seconds (0: no limit)")
    ap.add_argument("--report-only", action="store_true", help="train nothing: report the runs that finished")
    ap.add_argument("--lopa", type=Path, default=LOPA, help="the lopa binary")
    ap.add_argument("--out", type=Path, default=ROOT / "runs/bench")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs")
    a = ap.parse_args()
    LOPA = a.lopa
    tasks = a.tasks or list(BUDGETS[a.budget])

    def wanted(task, method):
        return method in a.methods and method in BUDGETS[a.budget][task].get("methods", METHODS)

    # Most important first, so a deadline cuts the least: the core methods at the first seed on
    # every task (slowest task first), then the variants, then the other seeds.
    order = []
    for i, seed in enumerate(a.seeds):
        for group in (CORE, [m for m in METHODS if m not in CORE]):
            for task in sorted(tasks, key=lambda t: -SLOWEST_FIRST.get(t, 0)):
                order += [(task, m, seed) for m in group if wanted(task, m) and not (m == "zero-shot" and i > 0)]
    t0 = time.time()

    def job(key):
        task, method, seed = key
        if a.deadline and time.time() - t0 > a.deadline and not a.report_only:
            return one(task, method, seed, a.budget, a.lr, a.out, a.backend, report_only=True)
        if not a.report_only:
            print(f"{task} {method} seed {seed}", file=sys.stderr, flush=True)
        try:
            return one(task, method, seed, a.budget, a.lr, a.out, a.backend, a.report_only)
        except subprocess.CalledProcessError as e:
            print(f"{task} {method} seed {seed} failed ({e}); see its train.log", file=sys.stderr, flush=True)
            return None

    with ThreadPoolExecutor(max(1, a.jobs)) as pool:
        done = dict(zip(order, pool.map(job, order)))
    for (task, method, seed), r in done.items():
        if r and "check" not in r:  # runs recorded before the summary carried it: their adapter's task
            cfg = load(a.out / a.budget / task / f"{method}-s{seed}" / "best" / "adapter.json")
            r["check"] = check_of(cfg["task"]) if cfg else None
    results, unfinished = {}, []
    for task in tasks:
        results[task] = {}
        for method in METHODS:
            runs = [r for (t, m, _), r in done.items() if t == task and m == method and r]
            for (t, m, seed), r in done.items():
                if t == task and m == method and not r:
                    unfinished.append(partial(a.out / a.budget / task / f"{method}-s{seed}", task, method, seed, a.budget))
            if not runs:
                continue
            results[task][method] = {
                "params": runs[0]["trainable_parameters"],
                "server_state": SERVER_STATE.get(method, "none"),
                "scores": [score(r, task) for r in runs],
                "accuracy": [100 * r["best_dev_accuracy"] for r in runs],
                "wall_seconds": [round(r["wall_seconds"]) for r in runs],
                "samples_per_sec": [r.get("samples_per_sec") for r in runs],
                "commands": [r["command"] for r in runs],
                "backend": sorted({backend_of(r) for r in runs}),
                "host": sorted({r.get("host", "?") for r in runs}),
                "dev_examples": runs[0].get("dev_examples"),
                # pass@1 runs scored by running the predicted assertion rather than comparing it as data
                "lax_check": metric_of(task) == "pass@1" and any("literal" not in (r.get("check") or {}) for r in runs),
            }
    # A zero-shot run records only its `--backend`: name the device as the training runs on its host did.
    full = {(h, b.split(" ")[0]): b for t in results.values() for r in t.values() for b in r["backend"] for h in r["host"] if " " in b}
    for t in results.values():
        for r in t.values():
            r["backend"] = sorted({full.get((h, b), b) for b in r["backend"] for h in r["host"]})
    a.docs.mkdir(exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    machines = sorted({(b, h) for t in results.values() for r in t.values() for b in r["backend"] for h in r["host"]})
    meta = {"budget": a.budget, "budgets": BUDGETS[a.budget], "seeds": a.seeds, "lr": a.lr, "batch_size": 16,
            "machines": [f"{b} on a host with {h}" for b, h in machines], "commit": commit, "date": time.strftime("%Y-%m-%d"),
            "total_wall_minutes": round(sum(w for t in results.values() for r in t.values() for w in r["wall_seconds"]) / 60, 1),
            "command": f"scripts/benchmark.sh accuracy --budget {a.budget} --seeds {' '.join(map(str, a.seeds))}",
            "unfinished": [u for u in unfinished if u]}
    (ROOT / "results/benchmark.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    plot(results, a.docs / "accuracy-vs-params.svg")
    write_markdown(meta, results, a.docs)
    print((a.docs / "RESULTS.md").read_text())


def backend_of(r):
    """The backend a run used: recorded from its log, else the `--backend` of its command."""
    if r.get("backend"):
        return r["backend"]
    c = r.get("command", "").split()
    return c[c.index("--backend") + 1] if "--backend" in c else "?"


def partial(d, task, method, seed, budget):
    """A run without a summary: how far it got (its metrics.jsonl), if it started at all."""
    try:
        epochs = [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines() if l.strip()]
    except OSError:
        epochs = []
    return {"task": task, "method": method, "seed": seed, "epochs_done": len(epochs), "epochs": BUDGETS[budget][task]["epochs"],
            "last_dev": 100 * (epochs[-1].get("dev_f1") if metric_of(task) == "f1" else epochs[-1].get("dev_accuracy")) if epochs else None,
            "backend": logged_backend(d)}


def noise(task, a, b):
    """`; within noise (2 SE = x)` when two single-seed scores differ by less than two standard errors."""
    import math
    n = a.get("dev_examples") or b.get("dev_examples")
    if metric_of(task) == "f1" or not n:
        return ""
    p1, p2 = statistics.mean(a["scores"]) / 100, statistics.mean(b["scores"]) / 100
    two_se = 200 * math.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / n)
    return f"; within noise, 2 SE = {two_se:.1f}" if abs(p1 - p2) * 100 < two_se else f"; 2 SE = {two_se:.1f}"


def majority(task):
    """Accuracy (and F1 for MRPC) of always answering the dev set's most common label."""
    import csv
    col = {"sst2": "label", "rte": "label", "mrpc": "Quality"}.get(task)
    if not col:
        return None
    f = Path(os.environ.get("LOPA_DATA", ROOT.parent / "shared/data")) / task / "dev.tsv"
    try:
        rows = list(csv.DictReader(open(f, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE))
    except OSError:
        return None
    labels = [r[col].strip() for r in rows]
    top = max(set(labels), key=labels.count)
    acc = 100 * labels.count(top) / len(labels)
    if metric_of(task) == "f1":  # always the positive class: precision = its share, recall = 1
        p = labels.count("1") / len(labels)
        return {"label": "1", "accuracy": 100 * p, "score": 100 * 2 * p / (1 + p)}
    return {"label": top, "accuracy": acc, "score": acc}


def write_markdown(meta, results, docs):
    old = (docs / "RESULTS.md").read_text() if (docs / "RESULTS.md").exists() else ""
    # The code task on a code model (scripts/lib/code_task.py) sits beside SmolLM2's CruxEval-O table.
    cb, ce = old.find("<!-- code:begin"), old.find("<!-- code:end -->")
    code = old[cb:ce + len("<!-- code:end -->")] if cb >= 0 and ce >= 0 else ""
    L = ["# Benchmark report: LoPA against its baselines, at small scale", "",
         f"Generated on {meta['date']} (commit {meta['commit']}) from the runs' own summaries by "
         f"`{meta['command']} --report-only`; do not edit by hand. Each row's exact training command is in its table; "
         "the same command trains the run again on a machine where it is missing (runs are resumable).", "",
         "Machines:", ""] + [f"- {m}" for m in meta["machines"]] + ["",
         "Frozen model SmolLM2-135M-Instruct (Q4_1 GGUF, f32 compute), encoder all-MiniLM-L6-v2. "
         f"Settings: AdamW, lr {meta['lr']} with 6 % warm-up, batch {meta['batch_size']}, m = 10, r = 4, H = 256 (LoPA and variants), "
         "LoRA r = 16, alpha = 32 on q/k/v. Scores are the best epoch's dev score; mean ± standard deviation over seeds "
         f"{', '.join(map(str, meta['seeds']))} where there are several (column n). Wall time of all finished runs "
         f"{meta['total_wall_minutes']} min; on the GPU several runs shared the card, so a run's wall time is not its cost alone.", "",
         "Budgets (training rows × epochs, dev rows; rows are the first N of the seed's shuffle, 0 = all):", ""]
    for t, b in meta["budgets"].items():
        L.append(f"- {t}: {b['train_limit'] or 'all'} × {b['epochs']}, dev {b['dev_limit'] or 'all'}, max length {b['max_length']}"
                 + (f"; methods {', '.join(b['methods'])}" if "methods" in b else ""))
    L += ["", "## Results", ""]
    for task, rows in results.items():
        m = metric_of(task)
        L += [f"### {task} ({m})", "", f"| method | trainable params | server-side state | {m} | n | backend | wall time | command |",
              "|---|---|---|---|---|---|---|---|"]
        maj = majority(task)
        if maj:
            L.append(f"| always `{maj['label']}` (majority) | 0 | none | {maj['score']:.1f} | | | | |")
        for method, r in rows.items():
            bold = "**" if method == "lopa" else ""
            lax = " †" if r.get("lax_check") else ""
            L.append(f"| {bold}{method}{bold} | {r['params']:,} | {r['server_state']} | {bold}{fmt(r['scores'])}{bold}{lax} | {len(r['scores'])} | "
                     f"{', '.join(r['backend'])} | {statistics.mean(r['wall_seconds']) / 60:.1f} min | `{r['commands'][0]}` |")
        if any(r.get("lax_check") for r in rows.values()):
            L += ["", "† scored by an earlier check that ran the predicted assertion as Python (or with none recorded), "
                  "which answers such as `0 or 1` or `f(input)` can pass; lopa now reads the answer as a Python literal and "
                  "compares it with the recorded output, running nothing. Rows without † use it."]
        if m == "f1":
            L += ["", f"Accuracy on {task}: " + ", ".join(f"{k} {fmt(v['accuracy'])}" for k, v in rows.items()) + "."]
        L.append("")
        if task == "cruxeval-o" and code:
            L += [code, ""]
            code = ""
    started = [u for u in meta["unfinished"] if u["backend"]]
    if started:
        L += ["### Runs of this budget that did not finish", "",
              "Stopped before their last epoch (on the GPU: at the end of the call's time), so not in the tables above; "
              "the dev score of the last finished epoch is given for information only.", "",
              "| task | method | seed | epochs finished | last dev score | where it ran |", "|---|---|---|---|---|---|"]
        for u in started:
            last = f"{u['last_dev']:.1f}" if u["last_dev"] is not None else "–"
            L.append(f"| {u['task']} | {u['method']} | {u['seed']} | {u['epochs_done']} of {u['epochs']} | {last} | {u['backend']} |")
        L.append("")
    never = [u for u in meta["unfinished"] if not u["backend"]]
    if never:
        L += ["Not run at this budget: " + "; ".join(f"{t} ({', '.join(u['method'] for u in never if u['task'] == t)})"
                                                     for t in dict.fromkeys(u["task"] for u in never)) + ".", ""]
    L += ["![accuracy against trainable parameters](accuracy-vs-params.svg)", "", "## The orderings the paper reports", ""]
    for task, rows in results.items():
        s = {k: statistics.mean(v["scores"]) for k, v in rows.items()}
        for other, claim in [("pt", "LoPA > PT"), ("idpg", "LoPA ≥ IDPG"), ("lora", "LoPA ≈ LoRA (within 2 points)")]:
            if "lopa" not in s or other not in s:
                missing = " and ".join(x for x in ("lopa", other) if x not in s)
                L.append(f"- {task}: {claim}: **not measured** ({missing} did not finish)")
                continue
            ok = s["lopa"] > s[other] if other == "pt" else (s["lopa"] >= s[other] if other == "idpg" else abs(s["lopa"] - s[other]) <= 2)
            L.append(f"- {task}: {claim}: **{'holds' if ok else 'does not hold'}** (LoPA {s['lopa']:.1f}, {other} {s[other]:.1f}"
                     f"{noise(task, rows['lopa'], rows[other])})")
    p = {m: r["params"] for t in results.values() for m, r in t.items()}
    if "lopa" in p and "idpg" in p:
        L.append("- Trainable parameters: " + ", ".join(f"{m} {p[m]:,}" for m in ("lopa", "idpg", "pt", "lora") if m in p)
                 + f" (LoPA / IDPG = {p['lopa'] / p['idpg']:.2f})")
    L += ["", "A difference is marked *within noise* when it is under two standard errors of the dev-set sampling "
          "(√(p₁(1−p₁)/n + p₂(1−p₂)/n) for accuracy and pass@1 with n dev examples, unpaired and so on the cautious side; seeds add their own spread, "
          "not counted here). F1 has no such closed form and is not marked."]
    L += ["", "## The paper's numbers (RoBERTa-large, full GLUE training sets, 20 epochs)", "",
          "| method | params (M) | server change | SST-2 | MRPC F1 | RTE |", "|---|---|---|---|---|---|"]
    for k, v in PAPER.items():
        L.append(f"| {k} | {v['params_m']} | {'yes' if k == 'lora' else 'no'} | {v['sst2']} | {v['mrpc']} | {v['rte']} |")
    L += ["", "CruxEval-O pass@1 in the paper (average of six code models, 350M to 8B): " + ", ".join(f"{k} {v}" for k, v in PAPER_CODE.items()) + ".", ""]
    disc = docs / "results-discussion.md"
    if disc.exists():
        L += ["## Where ours agree and differ, and why", "", fill(disc.read_text().strip(), results), ""]
    L += performance(docs, results)
    # Sections other scripts write (between their markers) are kept.
    if code:
        L += ["", code]
    for heading, name in [("## Personalisation on the user's side", "personalize"), ("## What a server can learn of an adapter", "extraction")]:
        start, end = old.find(heading), old.find(f"<!-- {name}:end -->")
        if start >= 0 and end >= 0:
            L += ["", old[start:end + len(f"<!-- {name}:end -->")]]
    (docs / "RESULTS.md").write_text("\n".join(L))


def fill(text, results):
    """The hand-written discussion quotes no figure by hand: `{{task/method}}` is that row's score,
    `{{task/method/acc}}` its accuracy, `{{task/majority}}` the majority-class score (`/acc`: its accuracy)."""
    import re

    def value(m):
        task, what, *field = m.group(1).split("/")
        if what == "majority":
            return f"{majority(task)['accuracy' if field == ['acc'] else 'score']:.1f}"
        r = results.get(task, {}).get(what)
        if not r:
            return "(not measured)"
        return fmt(r["accuracy"] if field == ["acc"] else r["scores"])
    return re.sub(r"\{\{([\w/-]+)\}\}", value, text)


if __name__ == "__main__":
    main()
