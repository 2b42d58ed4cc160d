#!/usr/bin/env python3
"""What a server can learn of a task adapter from the requests it serves: the benchmark plays the
server. Clients of a trained SST-2 LoPA adapter send N queries (the prompt text and its soft
prompt Z(x)); the encoder and the LoPA architecture are public, so the server embeds the same
texts and fits a generator of the same shape to the (x, Z(x)) pairs (MSE, Adam). Measured on the
SST-2 dev set, which no query came from: the copy's accuracy through the frozen model, and how far
its soft prompts are from the original's (relative L2). Repeated with a client-side defence
applied to Z before it is sent (f16 rounding, which the wire does by default; int8 rounding; noise)
beside what the defence costs the honest client in accuracy.

An independent implementation (PyTorch, transformers): the encoder from its Hugging Face folder,
the frozen model from `lopa export-hf`'s folder, the generator re-implemented from the adapter
file. Its accuracy for the original adapter is checked against lopa's own on the same rows.
Writes results/privacy/extraction.json and the sections of docs/THREAT-MODEL.md and
docs/RESULTS.md between <!-- extraction:begin/end -->.

    scripts/benchmark.sh extraction [--adapter DIR] [--queries 10 100 1000 10000]
"""
import argparse, hashlib, json, math, os, sys, time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docsection import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("LOPA_CACHE", Path.home() / ".cache" / "lopa"))
DATA = Path(os.environ.get("LOPA_DATA", ROOT.parent / "shared" / "data"))
torch.set_num_threads(os.cpu_count() or 1)


def rows(path):
    lines = path.read_text().splitlines()[1:]
    out = []
    for line in lines:
        if line.strip():
            s, label = line.split("\t")
            out.append((s.strip(), int(label)))
    return out


class Generator(torch.nn.Module):
    """LoPA: Z = Z_S ⊙ σ(u vᵀ), u = MLP_u(f) ∈ R^{m×r}, v = MLP_v(f) ∈ R^{d×r}; MLP = Linear, tanh, Linear."""

    def __init__(self, m, d, h, H, r, zs_std=0.02):
        super().__init__()
        self.m, self.d, self.r = m, d, r
        self.task_prompt = torch.nn.Parameter(torch.randn(m, d) * zs_std)
        head = lambda out: torch.nn.Sequential(torch.nn.Linear(h, H), torch.nn.Tanh(), torch.nn.Linear(H, out))
        self.u_head, self.v_head = head(m * r), head(d * r)
        for seq in (self.u_head, self.v_head):
            for layer in (seq[0], seq[2]):
                torch.nn.init.normal_(layer.weight, std=0.02)
                torch.nn.init.zeros_(layer.bias)

    def load_lopa(self, path):
        w = load_file(str(path))
        with torch.no_grad():
            self.task_prompt.copy_(w["task_prompt"])
            for name, seq in (("u_head", self.u_head), ("v_head", self.v_head)):
                for part, layer in (("hidden", seq[0]), ("output", seq[2])):
                    layer.weight.copy_(w[f"{name}.{part}.weight"])
                    layer.bias.copy_(w[f"{name}.{part}.bias"])
        return self

    def forward(self, f):
        b = f.shape[0]
        u = self.u_head(f).view(b, self.m, self.r)
        v = self.v_head(f).view(b, self.d, self.r)
        return self.task_prompt * torch.sigmoid(u @ v.transpose(1, 2))


@torch.no_grad()
def embed(texts, tok, enc, batch=128):
    out = []
    for i in range(0, len(texts), batch):
        t = tok(texts[i:i + batch], padding=True, truncation=True, max_length=512, return_tensors="pt")
        h = enc(**t).last_hidden_state
        mask = t["attention_mask"].unsqueeze(-1).float()
        f = (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        out.append(torch.nn.functional.normalize(f, dim=1))
    return torch.cat(out)


@torch.no_grad()
def accuracy(z, texts, labels, lm, tok, label_ids, batch=32):
    """Accuracy of `[soft prompt ; template]` through the frozen model, argmax over the label words."""
    emb = lm.get_input_embeddings()
    right = 0
    for i in range(0, len(texts), batch):
        ids = [tok(t + " It was", add_special_tokens=True)["input_ids"] for t in texts[i:i + batch]]
        zb = z[i:i + batch]
        m, d = zb.shape[1], zb.shape[2]
        n = max(len(x) for x in ids)
        x = torch.zeros(len(ids), m + n, d)
        mask = torch.zeros(len(ids), m + n, dtype=torch.long)
        for r, seq in enumerate(ids):
            x[r, :m] = zb[r]
            x[r, m:m + len(seq)] = emb(torch.tensor(seq))
            mask[r, :m + len(seq)] = 1
        logits = lm(inputs_embeds=x, attention_mask=mask).logits
        last = torch.tensor([m + len(seq) - 1 for seq in ids])
        picked = logits[torch.arange(len(ids)), last][:, label_ids]
        right += (picked.argmax(1) == torch.tensor(labels[i:i + batch])).sum().item()
    return 100 * right / len(texts)


def defend(z, how, std, gen):
    """What the client sends instead of Z."""
    if how == "f32":
        return z
    if how == "f16":
        return z.half().float()
    if how == "int8":
        scale = z.abs().amax(dim=2, keepdim=True).clamp(min=1e-12) / 127
        return (z / scale).round().clamp(-127, 127) * scale
    if how.startswith("noise"):
        return z + torch.randn(z.shape, generator=gen) * float(how[len("noise"):]) * std
    raise ValueError(how)


def fit(f, z, shape, steps, seed):
    torch.manual_seed(seed)
    g = Generator(*shape)
    opt = torch.optim.Adam(g.parameters(), lr=1e-3)
    n = f.shape[0]
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(n, (min(n, 64),), generator=gen)
        loss = torch.nn.functional.mse_loss(g(f[idx]), z[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return g.eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--adapter", type=Path, default=CACHE / "adapters" / "sst2-ci" / "best")
    ap.add_argument("--queries", type=int, nargs="+", default=[10, 100, 1000, 10000])
    ap.add_argument("--defences", nargs="+", default=["f32", "f16", "int8", "noise0.5", "noise1.0"])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--accuracy-rows", type=int, default=300, help="dev rows each accuracy is measured on (distances use all)")
    a = ap.parse_args()
    t0 = time.time()
    meta = json.loads((a.adapter / "adapter.json").read_text())
    gcfg = meta["generator"]
    assert gcfg["method"] == "lopa", "the benchmark fits a LoPA generator"
    shape = (gcfg["num_virtual_tokens"], gcfg["token_dim"], gcfg["encoder_dim"], gcfg["hidden_dim"], gcfg["rank"])
    original = Generator(*shape).load_lopa(a.adapter / "adapter.safetensors").eval()
    etok = AutoTokenizer.from_pretrained(CACHE / "weights" / "all-minilm-l6-v2")
    enc = AutoModel.from_pretrained(CACHE / "weights" / "all-minilm-l6-v2").eval()
    lm_dir = CACHE / "hf" / "smollm2-135m-instruct"
    ltok = AutoTokenizer.from_pretrained(lm_dir)
    lm = AutoModelForCausalLM.from_pretrained(lm_dir, torch_dtype=torch.float32).eval()
    words = [meta["task"]["label_words"][k] for k in sorted(meta["task"]["label_words"])]
    label_ids = [ltok(w, add_special_tokens=False)["input_ids"][0] for w in words]
    train = rows(DATA / "sst2" / "train.tsv")
    dev = rows(DATA / "sst2" / "dev.tsv")
    rng = np.random.default_rng(a.seed)
    pool = [train[i] for i in rng.permutation(len(train))[: max(a.queries)]]
    dev_texts, dev_labels = [t for t, _ in dev], [y for _, y in dev]
    k = a.accuracy_rows
    acc = lambda z: accuracy(z[:k], dev_texts[:k], dev_labels[:k], lm, ltok, label_ids)
    f_pool, f_dev = embed([t for t, _ in pool], etok, enc), embed(dev_texts, etok, enc)
    with torch.no_grad():
        z_pool, z_dev = original(f_pool), original(f_dev)
    std = z_pool.std().item()
    # The implementation check: the original adapter's accuracy on the rows lopa scored it on.
    n_check = 200
    check = accuracy(z_dev[:n_check], dev_texts[:n_check], dev_labels[:n_check], lm, ltok, label_ids)
    summary = json.loads((a.adapter.parent / "summary.json").read_text()) if (a.adapter.parent / "summary.json").exists() else {}
    lopa_acc = 100 * summary["best_dev_accuracy"] if "best_dev_accuracy" in summary else None
    print(f"original adapter, first {n_check} dev rows: {check:.1f} % here, {lopa_acc} % by lopa", flush=True)
    gen = torch.Generator().manual_seed(a.seed + 1)
    zero = acc(torch.zeros(len(dev), 0, gcfg["token_dim"]))
    # The adapter's bytes, not its path: a cache retrained on another machine holds other weights.
    digest = hashlib.sha256()
    for f in sorted(p for p in a.adapter.rglob("*") if p.is_file()):
        digest.update(f.name.encode() + f.read_bytes())
    results = {"adapter": str(a.adapter), "adapter_sha256": digest.hexdigest(), "queries": a.queries, "steps": a.steps, "z_std": std, "dev_rows": len(dev), "accuracy_rows": k,
               "zero_shot_accuracy": zero, "check": {"rows": n_check, "here": check, "lopa": lopa_acc}, "defences": {}}
    for how in a.defences:
        sent_dev = defend(z_dev, how, std, gen)
        honest = acc(sent_dev)
        row = {"honest_accuracy": honest, "copies": []}
        sent_pool = defend(z_pool, how, std, gen)
        for n in a.queries:
            copy = fit(f_pool[:n], sent_pool[:n], shape, a.steps, a.seed)
            with torch.no_grad():
                zc = copy(f_dev)
            dist = ((zc - z_dev).norm() / z_dev.norm()).item()
            copied = acc(zc)
            row["copies"].append({"queries": n, "accuracy": copied, "relative_distance": dist})
            print(f"{how}: honest {honest:.1f} %; N = {n}: copy {copied:.1f} %, distance {dist:.3f}", flush=True)
        results["defences"][how] = row
    results["seconds"] = time.time() - t0
    out = ROOT / "results" / "privacy" / "extraction.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    # A run of other defences with the same adapter and settings adds its rows to the earlier
    # run's; anything else replaces it.
    if out.exists():
        old = json.loads(out.read_text())
        if all(old.get(k) == results[k] for k in ("adapter_sha256", "queries", "steps", "accuracy_rows")):
            results["defences"] = {**old["defences"], **results["defences"]}
            results["seconds"] += old.get("seconds", 0)
    out.write_text(json.dumps(results, indent=1))
    section = report(results)
    write_section(ROOT / "docs" / "THREAT-MODEL.md", "extraction", section)
    write_section(ROOT / "docs" / "RESULTS.md", "extraction", section, "## What a server can learn of an adapter")
    print(section)


def report(r):
    q = r["queries"]
    L = [f"Generated by `scripts/benchmark.sh extraction` (results/privacy/extraction.json): the SST-2 LoPA adapter the tests "
         f"train (`configs/browser-test.json`), SST-2 dev (none of it a query), a copy fitted to N queries from SST-2 train "
         f"by {r['steps']} Adam steps on the MSE of its soft prompts. Accuracy is through the frozen SmolLM2-135M on the first "
         f"{r['accuracy_rows']} dev rows; zero-shot (no soft prompt) is {r['zero_shot_accuracy']:.1f} % there. Distance, in "
         f"parentheses: ‖Z_copy − Z‖ / ‖Z‖ over all {r['dev_rows']} dev rows. The check of this independent "
         f"implementation: the original adapter scores {r['check']['here']:.1f} % on the first {r['check']['rows']} dev rows here, "
         f"{r['check']['lopa']:.1f} % in lopa." if r["check"]["lopa"] is not None else "", "",
         "| what the client sends | honest accuracy | " + " | ".join(f"copy after {n:,} queries" for n in q) + " |",
         "|---|---|" + "---|" * len(q)]
    names = {"f32": "Z (f32)", "f16": "Z rounded to f16 (the wire's default)", "int8": "Z rounded to int8 (per row)"}
    order = lambda how: (how.startswith("noise"), float(how[len("noise"):]) if how.startswith("noise") else 0.0)
    for how, row in sorted(r["defences"].items(), key=lambda kv: order(kv[0])):
        name = names.get(how, f"Z + noise, σ = {how[len('noise'):]} × std(Z)")
        cells = " | ".join(f"{c['accuracy']:.1f} % ({c['relative_distance']:.2f})" for c in row["copies"])
        L.append(f"| {name} | {row['honest_accuracy']:.1f} % | {cells} |")
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    main()
