#!/usr/bin/env python3
"""Write the side-by-side section of docs/PERFORMANCE.md from results/perf/browser-compare.json
(benches/browser/compare.mjs's output). Usage: python3 scripts/lib/browser_compare.py"""
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "PERFORMANCE.md"
R = json.loads((ROOT / "results" / "perf" / "browser-compare.json").read_text())
BEGIN, END = "<!-- browser-compare:begin", "<!-- browser-compare:end -->"


def mb(n):
    return f"{n / 1e6:.1f} MB"


def ms(v):
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def row(c, tokens, batch):
    return next((r for r in c.get("rows", []) if r["tokens"] == tokens and r["batch"] == batch), None)


shapes = [(t, b) for t in (16, 64, 256) for b in (1, 8)]
L = [f"{BEGIN} (written by scripts/lib/browser_compare.py from results/perf/browser-compare.json) -->"]
L.append(
    f"`scripts/benchmark.sh compare` ({R['date']}; headless Chromium 156 on this 2-core machine, one configuration per fresh"
    f" profile, {R['runs']} timed calls after 2 warm-up calls). Sentence embeddings (mean pooling + L2) of the same"
    " all-MiniLM-L6-v2 weights: lopa's package (`client.embed`, the CPU module, one thread) against transformers.js"
    " 4.3.1 (`pipeline('feature-extraction')`, onnxruntime-web's wasm backend as transformers.js configures it, loading"
    " `scripts/lib/export_onnx.py`'s ONNX files from the same server). The page is not cross-origin isolated, so"
    " onnxruntime-web runs one thread too (the threads row serves the page cross-origin isolated, so it may use more). Inputs are exactly 16, 64 or 256 tokens; a batch is 8 different texts"
    " of that length."
)
L.append("")
L.append("Median latency in ms (p90 in brackets), tokens × batch:")
L.append("")
L.append("| library, weights | " + " | ".join(f"{t} × {b}" for t, b in shapes) + " |")
L.append("|---" * (len(shapes) + 1) + "|")
for c in R["configs"]:
    if "error" in c:
        L.append(f"| {c['name']} | failed: {c['error']} |" + " |" * (len(shapes) - 1))
        continue
    cells = []
    for t, b in shapes:
        r = row(c, t, b)
        cells.append(f"{ms(r['median_ms'])} ({ms(r['p90_ms'])})" if r else "–")
    L.append(f"| {c['name']} | " + " | ".join(cells) + " |")
L.append("")
L.append("| library, weights | load | first call (64 × 1) | code downloaded (gzip) | weights downloaded | peak renderer memory | embeddings: max abs diff to transformers.js fp32 |")
L.append("|---|---|---|---|---|---|---|")
for c in R["configs"]:
    if "error" in c:
        continue
    first = row(c, 64, 1)
    diffs = [r["max_abs_diff_to_tjs_fp32"] for r in c["rows"] if r.get("max_abs_diff_to_tjs_fp32") is not None]
    diff = "reference" if c["lib"] == "tjs" and c["weights"] == "fp32" and c["device"] == "wasm" and not c.get("isolated") else (f"{max(diffs):.1e}" if diffs else "–")
    L.append(
        f"| {c['name']} | {ms(c['load_ms'])} ms | {ms(first['first_ms']) + ' ms' if first else '–'} | {mb(c['code_bytes'])} ({mb(c['code_gzip_bytes'])}) |"
        f" {mb(c['weight_bytes'])} | {mb(c['peak_rss_bytes'])} | {diff} |"
    )
L.append("")


def ratio(lib_w, tjs_w):
    a = next((c for c in R["configs"] if c["lib"] == "lopa" and c["weights"] == lib_w and c["device"] == "cpu" and "rows" in c), None)
    b = next((c for c in R["configs"] if c["lib"] == "tjs" and c["weights"] == tjs_w and c["device"] == "wasm" and not c.get("isolated") and "rows" in c), None)
    if not a or not b:
        return None
    return row(a, 64, 1)["median_ms"] / row(b, 64, 1)["median_ms"]


for lw, tw, what in [("f32", "fp32", "f32 weights"), ("int8", "q8", "8-bit weights")]:
    q = ratio(lw, tw)
    if q is not None:
        verdict = "met" if q <= 0.5 else "**not met**"
        L.append(f"- 64 tokens, batch 1, {what}: lopa takes **{q:.2f}×** transformers.js's median (target ≤ 0.5×: {verdict}).")
sp = R.get("soft_prompt_int8")
if sp:
    L.append(
        f"- lopa's int8 weights against f32 (the browser tests' trained SST-2 adapter, CPU module): the soft prompt moves by"
        f" {sp['max_abs_diff']:.1e} at most (values up to {sp['max_abs_f32']:.2f})."
    )
L.append(END)
doc = DOC.read_text()
block = "\n".join(L)
if BEGIN in doc:
    a, b = doc.index(BEGIN), doc.index(END) + len(END)
    doc = doc[:a] + block + doc[b:]
else:
    raise SystemExit(f"{DOC}: no {BEGIN} marker")
DOC.write_text(doc)
print(block)
