#!/usr/bin/env python3
"""The browser tests on several freshly trained test adapters: configs/browser-test.json (what the
test command trains) with seeds 42 (the test command's own), 1, 2, 3 and 4, and one trained for a
single step, close to its initialisation. For each adapter: its dev accuracy and sha256,
personalisation in the browser against the native loop with the margin of every comparison to
its bound (tests/browser/personalize.test.mjs on f32 files), and the demo end to end
(tests/browser/demo.test.mjs on int8 files). Writes results/perf/parity.json.

    scripts/benchmark.sh parity [--cases 42,1,2,3,4,step1]

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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lopa", required=True)
    ap.add_argument("--cases", default="42,1,2,3,4,step1")
    ap.add_argument("--out", default=str(ROOT / "results/perf/parity.json"))
    a = ap.parse_args()
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
    print(f"\n| case | dev accuracy | personalisation | worst margin | demo | POOL right (confident) |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['dev_accuracy']:.3f} | {'pass' if r['personalize_passed'] else 'FAIL'} | {r.get('worst_margin', float('nan')):.1f}× | "
              f"{'pass' if r['demo_passed'] else 'FAIL'} | {r.get('demo_pool_right', '?')}/{r.get('demo_pool', '?')} ({r.get('demo_pool_confident', '?')}) |")
    print(f"\nworst margin over all adapters: {worst:.1f}×")
    sys.exit(0 if all(r["personalize_passed"] and r["demo_passed"] for r in rows) else 1)


if __name__ == "__main__":
    main()
