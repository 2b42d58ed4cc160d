#!/usr/bin/env python3
"""Write the side-by-side section of docs/PERFORMANCE.md from results/perf/browser-compare.json
(benches/browser/compare.mjs's output). Usage: python3 scripts/lib/browser_compare.py"""
import json
import textwrap
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


def cfg(lib, w, device="wasm", isolated=False, count=None):
    """The configuration that ran: lopa's CPU module stands beside transformers.js's wasm.
    `count` (isolated transformers.js): "default" (onnxruntime-web's own) or "lopa" (lopa's)."""
    device = "cpu" if lib == "lopa" and device == "wasm" else device
    return next((c for c in R["configs"] if c["lib"] == lib and c["weights"] == w and c["device"] == device and bool(c.get("isolated")) == isolated and c.get("count") == count and "rows" in c), None)


def ratio(lib_w, tjs_w):
    a, b = cfg("lopa", lib_w), cfg("tjs", tjs_w)
    return row(a, 64, 1)["median_ms"] / row(b, 64, 1)["median_ms"] if a and b else None


shapes = [(t, b) for t in (16, 64, 256) for b in (1, 8)]
L = [f"{BEGIN} (written by scripts/lib/browser_compare.py from results/perf/browser-compare.json) -->"]
L.extend(textwrap.wrap(
    f"`scripts/benchmark.sh compare` ({R['date']}; headless Chromium 156 on this 2-core machine, one configuration per fresh"
    f" profile, {R['runs']} timed calls after 2 warm-up calls). Sentence embeddings (mean pooling + L2) of the same"
    " all-MiniLM-L6-v2 weights: lopa's package (`client.embed` on the CPU) against transformers.js"
    " 4.3.1 (`pipeline('feature-extraction')`, onnxruntime-web's wasm backend as transformers.js configures it, loading"
    " `scripts/lib/export_onnx.py`'s ONNX files from the same server). Without cross-origin isolation both run one"
    " thread. The threads rows serve the same page cross-origin isolated: lopa then runs its threaded CPU module"
    " (`lopa_cpu_mt_bg.wasm`, in a Web Worker, its default pool), onnxruntime-web its threaded build with its own"
    " default count and with lopa's. Inputs are exactly 16, 64 or 256 tokens; a batch is 8 different texts"
    " of that length.",
    width=100, break_on_hyphens=False,
))
L.append("")
L.append("Median latency in ms (p90 in brackets), tokens × batch:")
L.append("")
L.append("| library, weights | threads | " + " | ".join(f"{t} × {b}" for t, b in shapes) + " |")
L.append("|---" * (len(shapes) + 2) + "|")
for c in R["configs"]:
    if "error" in c:
        L.append(f"| {c['name']} | | failed: {c['error']} |" + " |" * (len(shapes) - 1))
        continue
    cells = []
    for t, b in shapes:
        r = row(c, t, b)
        cells.append(f"{ms(r['median_ms'])} ({ms(r['p90_ms'])})" if r else "–")
    L.append(f"| {c['name']} | {c.get('threads') or 1} | " + " | ".join(cells) + " |")
L.append("")
L.append("| library, weights | load | first call (64 × 1) | code downloaded (gzip) | weights downloaded | peak renderer memory | embeddings: max abs diff to transformers.js fp32 |")
L.append("|---|---|---|---|---|---|---|")
for c in R["configs"]:
    if "error" in c:
        continue
    first = row(c, 64, 1)
    diffs = [r["max_abs_diff_to_tjs_fp32"] for r in c["rows"] if r.get("max_abs_diff_to_tjs_fp32") is not None]
    diff = "reference" if c is cfg("tjs", "fp32") else (f"{max(diffs):.1e}" if diffs else "–")
    L.append(
        f"| {c['name']} | {ms(c['load_ms'])} ms | {ms(first['first_ms']) + ' ms' if first else '–'} | {mb(c['code_bytes'])} ({mb(c['code_gzip_bytes'])}) |"
        f" {mb(c['weight_bytes'])} | {mb(c['peak_rss_bytes'])} | {diff} |"
    )
L.append("")


for lw, tw, what in [("f32", "fp32", "f32 weights"), ("int8", "q8", "8-bit weights")]:
    q = ratio(lw, tw)
    if q is not None:
        verdict = "met" if q <= 0.5 else "**not met**"
        L.append(f"- 64 tokens, batch 1, {what}: lopa takes **{q:.2f}×** transformers.js's median (target ≤ 0.5×: {verdict}).")
a32, t32, a8, t8 = cfg("lopa", "f32"), cfg("tjs", "fp32"), cfg("lopa", "int8"), cfg("tjs", "q8")
if a32 and t32 and a8 and t8:
    L.append(
        f"- lopa int8 multiplies the int8 weights by 16-bit activations as integers (wasm SIMD `i32x4.dot_i16x8_s`):"
        f" {row(a8, 64, 1)['median_ms']:.1f} ms at 64 × 1 against {row(a32, 64, 1)['median_ms']:.1f} ms with f32 weights,"
        f" and {row(a8, 64, 1)['median_ms'] / row(t32, 64, 1)['median_ms']:.2f}× transformers.js fp32's median."
    )
    L.append(
        f"- Loading (download from localhost, compile, weights): lopa {a8['load_ms'] / 1000:.1f} s against {t8['load_ms'] / 1000:.1f} s with 8-bit"
        f" weights. Code: {mb(a8['code_gzip_bytes'])} gzipped against {mb(t8['code_gzip_bytes'])} ({t8['code_gzip_bytes'] / a8['code_gzip_bytes']:.1f}× less)."
        f" Weights: {mb(a8['weight_bytes'])} against {mb(t8['weight_bytes'])}. Peak renderer memory: {mb(a8['peak_rss_bytes'])} against {mb(t8['peak_rss_bytes'])}."
    )
    d8 = max(r["max_abs_diff_to_tjs_fp32"] for r in a8["rows"])
    dq = max(r["max_abs_diff_to_tjs_fp32"] for r in t8["rows"])
    L.append(
        f"- Accuracy of 8-bit weights: lopa's int8 embeddings stay within {d8:.1e} of fp32, transformers.js's q8 within {dq:.1e}"
        f" ({dq / d8:.0f}× further): q8 quantizes the activations to 8 bits, lopa to 16."
    )
m8, d8c, l8c = cfg("lopa", "int8", isolated=True), cfg("tjs", "q8", isolated=True, count="default"), cfg("tjs", "q8", isolated=True, count="lopa")
if m8 and (d8c or l8c):
    for (t, b, target) in [(256, 8, 0.5), (64, 1, 0.7)]:
        parts = []
        for other, what in [(d8c, "its default count"), (l8c, "lopa's count")]:
            if other and row(other, t, b):
                q = row(m8, t, b)["median_ms"] / row(other, t, b)["median_ms"]
                parts.append(f"**{q:.2f}×** transformers.js q8 threaded at {what} ({other.get('threads')} thread{'s' if other.get('threads') != 1 else ''}: {ms(row(other, t, b)['median_ms'])} ms)")
        L.append(
            f"- {t} × {b}, isolated page: lopa int8 on {m8.get('threads')} threads takes {ms(row(m8, t, b)['median_ms'])} ms, "
            + " and ".join(parts) + f" (target ≤ {target}×)."
        )
if m8 and a8:
    speed = [f"{ms(row(a8, t, b)['median_ms'] / row(m8, t, b)['median_ms'])}× at {t} × {b}" for t, b in ((64, 1), (256, 8))]
    same = [r.get("bits_equal_to_one_thread") for r in m8["rows"]]
    L.append(
        f"- Threads against one thread, lopa int8: {', '.join(speed)}; the threaded module's embeddings are"
        f" {'the same bits as' if all(same) else 'NOT the same bits as'} the single-threaded module's on all {len(same)} shapes."
    )
sp = R.get("soft_prompt_int8")
if sp:
    L.append(
        f"- lopa's int8 weights against f32 (the browser tests' trained SST-2 adapter, CPU module): the soft prompt moves by"
        f" {sp['max_abs_diff']:.1e} at most (values up to {sp['max_abs_f32']:.2f})."
    )
P = R.get("paired")
if P:
    L.append("")
    if "rows" not in P:
        L.append(f"The paired run failed: {P.get('error')}")
    else:
        lt, tt = P["threads"]
        L.extend(textwrap.wrap(
            f"**Paired, one isolated page:** lopa int8 (threaded module, {lt} threads) and transformers.js q8"
            f" (onnxruntime-web's default count, {tt} thread{'s' if tt != 1 else ''}) loaded side by side, their calls"
            f" alternating 50 ms apart, {P['rows'][0]['rounds']} rounds a shape, after 3 calls each. Both see the same"
            " minutes of this machine, whose speed drifts between the rows above (each on its own page, minutes apart).",
            width=100, break_on_hyphens=False,
        ))
        L.append("")
        L.append("| tokens × batch | lopa int8, threads | transformers.js q8, threads | ratio of medians | median of the rounds' ratios |")
        L.append("|---|---|---|---|---|")
        for r in P["rows"]:
            L.append(
                f"| {r['tokens']} × {r['batch']} | {ms(r['a']['median_ms'])} ({ms(r['a']['p90_ms'])}) | {ms(r['b']['median_ms'])} ({ms(r['b']['p90_ms'])}) |"
                f" {r['ratio_of_medians']:.2f}× | {r['round_ratio_median']:.2f}× |"
            )
        L.append("")
        for (t, b, target) in [(256, 8, 0.5), (64, 1, 0.7)]:
            r = next((r for r in P["rows"] if r["tokens"] == t and r["batch"] == b), None)
            if r:
                q = r["ratio_of_medians"]
                L.append(f"- Paired, {t} × {b}: lopa int8 threaded takes **{q:.2f}×** transformers.js q8 threaded (target ≤ {target}×: {'met' if q <= target else '**not met**'}).")
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
