#!/usr/bin/env python3
"""PyTorch reference for `lopa bench-train`: the same LoPA (m=10, r=4, H=256, h=384) on a
random-weight llama of SmolLM2-135M's shape, frozen, same batch and sequence length. `--dtype bf16`
runs the frozen model in bf16 as `lopa bench-train --precision bf16` does (the generator, AdamW
and the logits stay fp32); fp32 runs with TF32 off.
Prints one JSON line with samples/s. Needs torch and transformers.

    python3 scripts/lib/torch_reference.py --batch-size 32 --seq-len 256 --steps 5
"""
import argparse, json, time
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

p = argparse.ArgumentParser()
p.add_argument("--batch-size", type=int, default=32)
p.add_argument("--seq-len", type=int, default=256)
p.add_argument("--layers", type=int, default=30)
p.add_argument("--steps", type=int, default=5)
p.add_argument("--warmup", type=int, default=2)
p.add_argument("--attn", default="sdpa", help="sdpa or eager")
p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="the frozen model's type")
p.add_argument("--matmul", action="store_true", help="also time the largest matmul alone (fp32, TF32 off)")
a = p.parse_args()
dev = "cuda" if torch.cuda.is_available() else "cpu"
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=a.layers,
                  num_attention_heads=9, num_key_value_heads=3, rms_norm_eps=1e-5, rope_theta=1e5,
                  tie_word_embeddings=True, max_position_embeddings=8192, attn_implementation=a.attn)
dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
model = LlamaForCausalLM(cfg).to(dev).to(dtype).eval()
model.requires_grad_(False)
m, r, H, h, d = 10, 4, 256, 384, 576


def head(out):
    hd = nn.Sequential(nn.Dropout(0.1), nn.Linear(h, H), nn.Tanh(), nn.Linear(H, out))
    for l in (hd[1], hd[3]):
        nn.init.normal_(l.weight, std=0.02); nn.init.zeros_(l.bias)
    return hd


class Lopa(nn.Module):
    def __init__(self):
        super().__init__()
        self.task_prompt = nn.Parameter(torch.randn(m, d) * 0.05)
        self.u_head, self.v_head = head(m * r), head(d * r)

    def forward(self, f):
        b = f.shape[0]
        u = self.u_head(f).view(b, m, r)
        v = self.v_head(f).view(b, d, r)
        return self.task_prompt * torch.sigmoid(u @ v.transpose(1, 2))


gen = Lopa().to(dev)
opt = torch.optim.AdamW(gen.parameters(), lr=1e-3)
B, S = a.batch_size, a.seq_len
ids = torch.randint(0, 49152, (B, S), device=dev)
f = torch.rand(B, h, device=dev) - 0.5
labels = torch.tensor([1000, 2000] * (B // 2) + [1000] * (B % 2), device=dev)
emb = model.get_input_embeddings()
times = []
for step in range(a.warmup + a.steps):
    t = time.perf_counter()
    z = gen(f)
    x = torch.cat([z.to(dtype), emb(ids)], 1)
    hidden = model.model(inputs_embeds=x).last_hidden_state[:, -1]
    loss = nn.functional.cross_entropy((hidden @ emb.weight.T).float(), labels)
    opt.zero_grad(); loss.backward(); opt.step()
    if dev == "cuda":
        torch.cuda.synchronize()
    if step >= a.warmup:
        times.append(time.perf_counter() - t)
mean = sum(times) / len(times)
tflops = None
if a.matmul:
    rows = B * (S + m)
    x, w = torch.randn(rows, 576, device=dev), torch.randn(576, 1536, device=dev)
    acc = torch.zeros(rows, 1536, device=dev)
    acc += x @ w
    if dev == "cuda": torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(50):
        acc += x @ w
    if dev == "cuda": torch.cuda.synchronize()
    tflops = 2 * rows * 576 * 1536 * 50 / (time.perf_counter() - t) / 1e12
print(json.dumps({"matmul_tflops": tflops, "tf32": torch.backends.cuda.matmul.allow_tf32,"backend": f"pytorch {torch.__version__} {dev} ({torch.cuda.get_device_name() if dev == 'cuda' else 'cpu'})",
                  "attn": a.attn, "dtype": a.dtype, "batch_size": B, "seq_len": S, "layers": a.layers, "step_seconds": mean, "samples_per_sec": B / mean}))
