#!/usr/bin/env python3
"""The browser tests on several freshly trained test adapters: configs/browser-test.json (what the
test command trains) with seeds 42 (the test command's own), 1, 2, 3 and 4, and one trained for a
single step, close to its initialisation. For each adapter: its dev accuracy and sha256,
personalisation in the browser against the native loop with the margin of every comparison to
its bound (tests/browser/personalize.test.mjs on f32 files), and the demo end to end
(tests/browser/demo.test.mjs on int8 files). Writes results/perf/parity.json and, from it, the
parity section of docs/PERFORMANCE.md.

    scripts/benchmark.sh parity [--cases 42,1,2,3,4,step1]
    python3 scripts/lib/parity.py --report      the docs section from the results file alone

Each adapter is trained once into $LOPA_CACHE/adapters/parity-CASE (about 5 min on 2 cores). The
seed-42 one is trained again rather than taken from the test command's cache, so its sha256 next
to that cache's says whether training is bitwise reproducible.
"""
import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("LOPA_CACHE", Path.home() / ".cache/lopa"))
CONFIG = "configs/browser-test.json"


def train_args(case):
    if case == "step1":
        # One optimizer step of 16 examples: the generator is still close to its initialisation.
        return ["--seed", "5", "--train-limit", "16", "--dev-limit", "64"]
    return ["--seed", case]


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def report(path):
    """The parity section of docs/PERFORMANCE.md, between its markers."""
    r = json.loads(Path(path).read_text())
    rows = r["cases"]
    checks = sorted({k for row in rows for k in row.get("margins", {})})
    L = [
        "<!-- parity:begin (written by scripts/lib/parity.py from results/perf/parity.json) -->",
        f"`scripts/benchmark.sh parity` trains the browser tests' adapter (`{r['config']}`) with six settings and runs",
        "`tests/browser/personalize.test.mjs` (f32 files) and `tests/browser/demo.test.mjs` (int8 files) on each.",
        "A margin is the bound over the worst difference (the test passes above 1×); the 1 % learning-rate",
        "controls must fail, and did wherever the personalisation column says pass.",
        "",
        "| adapter | dev accuracy | sha256 (first 12) | personalisation | worst margin | demo | POOL right natively (p ≥ 0.7) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        name = "one step (near initialisation)" if row["case"] == "step1" else f"seed {row['case']}"
        L.append(f"| {name} | {row['dev_accuracy']:.3f} | `{row['sha256'][:12]}` | {'pass' if row['personalize_passed'] else 'FAIL'} | "
                 f"{row.get('worst_margin', float('nan')):.1f}× | {'pass' if row['demo_passed'] else 'FAIL'} | "
                 f"{row.get('demo_pool_right', '?')}/{row.get('demo_pool', '?')} ({row.get('demo_pool_confident', '?')}) |")
    L += ["", "Worst margin of each comparison over the six adapters:", "", "| comparison | worst margin |", "|---|---|"]
    for c in checks:
        L.append(f"| {c} | {min(row['margins'][c] for row in rows if c in row.get('margins', {})):.1f}× |")
    same = [row.get("same_as_test_command_adapter") for row in rows if row["case"] == "42"]
    if same and same[0] is not None:
        L += ["", f"Seed 42 trained again in another process gives {'the same bytes as' if same[0] else 'other bytes than'} the test command's adapter."]
    if r.get("note"):
        L += ["", f"Note: {r['note']}."]
    L.append("<!-- parity:end -->")
    doc_path = ROOT / "docs/PERFORMANCE.md"
    doc = doc_path.read_text()
    begin, end = doc.index("<!-- parity:begin"), doc.index("<!-- parity:end -->") + len("<!-- parity:end -->")
    doc_path.write_text(doc[:begin] + "\n".join(L) + doc[end:])
    print("\n".join(L))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lopa")
    ap.add_argument("--cases", default="42,1,2,3,4,step1")
    ap.add_argument("--out", default=str(ROOT / "results/perf/parity.json"))
    ap.add_argument("--report", action="store_true", help="only write the docs section from --out")
    a = ap.parse_args()
    if a.report:
        return report(a.out)
    if not a.lopa:
        ap.error("--lopa is required")
    rows = []
    for case in a.cases.split(","):
        run = CACHE / "adapters" / f"parity-{case}"
        best = run / "best"
        if not (best / "adapter.json").exists():
            print(f"lopa: training the test adapter, case {case}, into {run}", file=sys.stderr)
            subprocess.run([a.lopa, "train", "--config", CONFIG, *train_args(case), "--run-dir", str(run)], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        metrics = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]
        row = {"case": case, "dev_accuracy": max(m["dev_accuracy"] for m in metrics), "sha256": sha256(best / "adapter.safetensors")}
        if case == "42":
            ci = CACHE / "adapters/sst2-ci/best/adapter.safetensors"
            row["same_as_test_command_adapter"] = sha256(ci) == row["sha256"] if ci.exists() else None
        web = {}
        for dtype in ("f32", "int8"):
            web[dtype] = CACHE / f"parity-web/{case}-{dtype}"
            subprocess.run([a.lopa, "export-web", "--out", str(web[dtype]), "--adapter", f"sst2={best}", "--dtype", dtype], cwd=ROOT, check=True, stderr=subprocess.DEVNULL)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "personalize.json"
            env = {**os.environ, "LOPA_WEB_DIR": str(web["f32"]), "LOPA_BIN": a.lopa}
            p = subprocess.run(["node", "tests/browser/personalize.test.mjs", "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True)
            sys.stdout.write(p.stdout)
            row["personalize_passed"] = p.returncode == 0
            row["personalize_failures"] = [l for l in p.stdout.splitlines() if l.startswith("FAIL")]
            if out.exists():
                r = json.loads(out.read_text())
                row["margins"] = {k: round(v["margin"], 1) for k, v in r["margins"].items()}
                row["worst_margin"] = r["worst_margin"]
            env = {**os.environ, "LOPA_WEB_DIR": str(web["int8"]), "LOPA_BIN": a.lopa, "LOPA_ARTIFACTS": tmp}
            d = subprocess.run(["node", "tests/browser/demo.test.mjs"], cwd=ROOT, env=env, capture_output=True, text=True)
            sys.stdout.write(d.stdout)
            row["demo_passed"] = d.returncode == 0
            row["demo_failures"] = [l for l in d.stdout.splitlines() if l.startswith("FAIL")]
            m = re.search(r"labels (\d+)/(\d+) of POOL right natively, (\d+) with", d.stdout)
            if m:
                row["demo_pool_right"], row["demo_pool"], row["demo_pool_confident"] = int(m[1]), int(m[2]), int(m[3])
        rows.append(row)
        print(json.dumps(row), flush=True)
    worst = min((r.get("worst_margin", 0) for r in rows), default=0)
    Path(a.out).write_text(json.dumps({"config": CONFIG, "cases": rows, "worst_margin": worst}, indent=1) + "\n")
    print(f"\nworst margin over all adapters: {worst:.1f}×")
    report(a.out)
    sys.exit(0 if all(r["personalize_passed"] and r["demo_passed"] for r in rows) else 1)


if __name__ == "__main__":
    main()
