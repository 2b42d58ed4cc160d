"""The performance section of docs/RESULTS.md, read from the files the measuring commands write
(results/perf/): soft-prompt latency, training throughput, server throughput. A missing file shows
as not measured."""
import json, os
from pathlib import Path

PERF = Path(__file__).resolve().parents[2] / "results/perf"


def load(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def performance(docs, results=None):
    """The performance section, from the files the measuring commands write (results/perf/)."""
    perf = PERF
    perf.mkdir(parents=True, exist_ok=True)
    L = ["## Performance", "", "Each figure is read from the file its command writes; a missing file shows as not measured.", "",
         "### Soft-prompt latency (MiniLM encoder + LoPA generator, one 64-token input)", "",
         "| where | backend | median | p90 | command |", "|---|---|---|---|---|"]
    crit = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/lopa/target")) / "criterion/cpu/soft_prompt_b1_64tok/new/estimates.json"
    c = load(perf / "criterion-soft-prompt.json") or load(crit)
    if c:
        (perf / "criterion-soft-prompt.json").write_text(json.dumps(c))
        L.append(f"| native, 2 cores | CPU (flex, rayon) | {c['median']['point_estimate'] / 1e6:.1f} ms | | `scripts/benchmark.sh cpu` |")
    else:
        L.append("| native | CPU | not measured | | `scripts/benchmark.sh cpu` |")
    for r in load(perf / "browser-latency.json") or []:
        where = "headless Chromium" + (f" ({r['adapter']})" if r.get("adapter") else "")
        L.append(f"| {where} | {r['backend']} | {r['median_ms']} ms | {r['p90_ms']} ms | `node tests/browser/bench.mjs` |")
    L += ["", "### Training throughput (samples/s)", "", "| framework | device | batch × tokens | samples/s | command |", "|---|---|---|---|---|"]
    gpu = (perf / "gpu/gpu.txt").read_text().split(",")[0] if (perf / "gpu/gpu.txt").exists() else "GPU"
    for f, what, cmd in [("burn-lopa.json", "burn 0.22.1, wgpu (WGSL)", "scripts/gpu.sh bench"), ("burn-lopa-vulkan.json", "burn 0.22.1, wgpu (SPIR-V)", "VARIANTS=lopa-vulkan scripts/gpu.sh bench"),
                         ("torch.json", "PyTorch (SDPA)", "scripts/lib/torch_reference.py"), ("torch-eager.json", "PyTorch (eager attention)", "scripts/lib/torch_reference.py --attn eager")]:
        r = load(perf / "gpu" / f)
        if r:
            L.append(f"| {what} | {gpu} | {r['batch_size']} × ({r['seq_len']} + 10) | {r['samples_per_sec']:.1f} | `{cmd}` |")
    rates = [(task, m, be, r["samples_per_sec"][0]) for task, rows in (results or {}).items() for m, r in rows.items()
             if r["samples_per_sec"] and r["samples_per_sec"][0] for be in r["backend"][:1] if m in ("pt", "idpg", "lopa", "lora")]
    for task, m, be, sps in rates:
        shared = " (the card shared with up to 7 other trainings)" if "NVIDIA" in be else ""
        L.append(f"| burn 0.22.1, {m} on real {task} data, batch 16, length-bucketed | {be}{shared} | 16 × real lengths | {sps:.1f} | this report's run |")
    b, t = load(perf / "gpu/burn-lopa.json"), load(perf / "gpu/torch.json")
    if b and t:
        L += ["", f"burn reaches {b['samples_per_sec'] / t['samples_per_sec']:.2f}× PyTorch's samples/s on the same GPU (PERFORMANCE.md discusses the bottleneck)."]
    L += ["", "### Server throughput", ""]
    lb = load(perf / "load-bench.json")
    command = "`scripts/benchmark.sh serving`"
    if lb:
        L += ["| server | requests/s | p50 | p99 | errors / lost |", "|---|---|---|---|---|"]
        for r in lb["runs"]:
            L.append(f"| {r['server']} | {r['requests_per_sec']:.2f} | {r['p50_s']:.2f} s | {r['p99_s']:.2f} s | {r['errors']} / {r['lost']} |")
        L += ["", f"{command}; the deployment picture and memory per part: [SCALING.md](SCALING.md)."]
    else:
        L.append(f"Not measured in this report: {command}.")
    return L
