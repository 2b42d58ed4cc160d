#!/usr/bin/env python3
"""Code bytes of a wasm module by Rust crate, from its function bodies and name section.

    wasm_breakdown.py MODULE.wasm [--json OUT] [--top N]

Use the module as cargo wrote it (before wasm-bindgen and wasm-opt strip the names). A function
belongs to the crate its demangled path starts with; for `<A as B>::f` that is A's crate. Crates
are also summed into the parts of lopa's modules (GROUPS); generic code of `core` and `alloc`
instantiated for other crates stays under the Rust runtime.
"""
import json
import re
import sys
from collections import Counter


def leb(b, i):
    r = s = 0
    while True:
        x = b[i]
        i += 1
        r |= (x & 0x7F) << s
        s += 7
        if x < 0x80:
            return r, i


def sections(b):
    assert b[:4] == b"\0asm", "not a wasm module"
    i = 8
    while i < len(b):
        sid = b[i]
        size, j = leb(b, i + 1)
        yield sid, b[j : j + size]
        i = j + size


def demangle_crate(name):
    """The crate a (legacy-mangled or plain) Rust symbol belongs to."""
    if name.startswith("_ZN"):
        parts, i = [], 3
        while i < len(name) and name[i].isdigit():
            m = re.match(r"\d+", name[i:])
            n = int(m.group())
            i += len(m.group())
            parts.append(name[i : i + n])
            i += n
        first = parts[0] if parts else name
        first = first.replace("_$LT$", "").replace("$LT$", "").lstrip("_&*")
        first = re.sub(r"^(mut\$u20\$|dyn\$u20\$|\$u5b\$)+", "", first)
        return first.split("..")[0].split("$")[0] or "?"
    m = re.match(r"^<?(?:dyn |&(?:mut )?)?([A-Za-z_][A-Za-z0-9_]*)::", name)
    return m.group(1) if m else "(other)"


GROUPS = [
    ("burn's GPU kernel compiler (cubecl IR, optimizer, WGSL backend, runtime; the pliron IR)",
     r"^(cubecl_(core|ir|opt|wgpu|runtime|common|server|zspace|environment|monitoring|macros)|pliron.*|combine|rustc_apfloat)$"),
    ("GPU kernels in cubecl (its standard library, matmul, reductions, quantization, random)", r"^(cubecl_std|cubek.*|burn_cubecl.*)$"),
    ("wgpu and the WebGPU bindings", r"^(wgpu.*|naga.*|web_sys|js_sys|wasm_bindgen.*)$"),
    ("CPU backend (flex, gemm)", r"^(burn_flex|gemm.*|macerator.*|aligned_vec)$"),
    ("autodiff and AdamW (personalisation)", r"^(burn_autodiff|burn_optim)$"),
    ("burn's tensor API and dispatch", r"^burn_.*$"),
    ("tokenizer", r"^(tokenizers|regex.*|fancy_regex|unicode.*|onig.*|esaxx.*|spm_precompiled)$"),
    ("lopa", r"^lopa$"),
    ("Rust runtime (core, alloc, std, serde, hashbrown) and the rest", r""),
]


def group(crate):
    return next(name for name, pat in GROUPS if re.match(pat, crate))


def breakdown(path):
    b = open(path, "rb").read()
    imported = 0
    bodies, names = [], {}
    for sid, data in sections(b):
        if sid == 2:  # imports: functions among them shift the indices of bodies
            n, i = leb(data, 0)
            for _ in range(n):
                for _ in range(2):
                    ln, i = leb(data, i)
                    i += ln
                kind = data[i]
                i += 1
                if kind == 0:
                    _, i = leb(data, i)
                    imported += 1
                elif kind == 1:
                    i += 1
                    flags, i = leb(data, i)
                    _, i = leb(data, i)
                    if flags & 1:
                        _, i = leb(data, i)
                elif kind == 2:
                    flags, i = leb(data, i)
                    _, i = leb(data, i)
                    if flags & 1:
                        _, i = leb(data, i)
                elif kind == 3:
                    i += 2
                elif kind == 4:
                    i += 1
                    _, i = leb(data, i)
        elif sid == 10:
            n, i = leb(data, 0)
            for _ in range(n):
                size, i = leb(data, i)
                bodies.append(size)
                i += size
        elif sid == 0:
            ln, i = leb(data, 0)
            if data[i : i + ln] != b"name":
                continue
            i += ln
            while i < len(data):
                sub = data[i]
                size, i = leb(data, i + 1)
                if sub == 1:
                    n, k = leb(data, i)
                    for _ in range(n):
                        idx, k = leb(data, k)
                        ln2, k = leb(data, k)
                        names[idx] = data[k : k + ln2].decode("utf-8", "replace")
                        k += ln2
                i += size
    if not names:
        raise SystemExit(f"{path}: no name section (use the module before wasm-opt)")
    by = Counter()
    for k, size in enumerate(bodies):
        by[demangle_crate(names.get(imported + k, "(unnamed)"))] += size
    return sum(bodies), by


if __name__ == "__main__":
    path = sys.argv[1]
    top = int(sys.argv[sys.argv.index("--top") + 1]) if "--top" in sys.argv else 25
    total, by = breakdown(path)
    print(f"{path}: {total / 1e6:.2f} MB of function bodies")
    for crate, n in by.most_common(top):
        print(f"  {crate:32s} {n / 1e6:7.2f} MB  {100 * n / total:5.1f} %")
    groups = Counter()
    for crate, n in by.items():
        groups[group(crate)] += n
    print("by part:")
    for name, n in groups.most_common():
        print(f"  {n / 1e6:7.2f} MB  {100 * n / total:5.1f} %  {name}")
    if "--json" in sys.argv:
        out = sys.argv[sys.argv.index("--json") + 1]
        json.dump({"module": path, "code_bytes": total, "by_part": dict(groups.most_common()), "by_crate": dict(by.most_common())}, open(out, "w"), indent=1)
