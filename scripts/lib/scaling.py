#!/usr/bin/env python3
"""Writes docs/SCALING.md from results/perf/load-bench.json (scripts/lib/load-bench.py's output): the
deployment picture, what each part holds in memory, the measured figures, and their extrapolation
to a 1.5B model on one H200 and to a cluster, each assumption stated next to the number it makes.

    python3 scripts/lib/scaling.py [--bench results/perf/load-bench.json] [--out docs/SCALING.md]

(`scripts/benchmark.sh serving` runs it after the load benchmark.) Also writes the serving
section of docs/PERFORMANCE.md, between its markers.
"""
import argparse, json, os

p = argparse.ArgumentParser()
p.add_argument("--bench", default="results/perf/load-bench.json")
p.add_argument("--gateway", default="results/perf/gateway.json", help="the gateway's CPU time per request (scripts/benchmark.sh gateway)")
p.add_argument("--out", default="docs/SCALING.md")
a = p.parse_args()
bench = json.load(open(a.bench))
gateway = json.load(open(a.gateway)) if os.path.exists(a.gateway) else None
faults = json.load(open("results/perf/faults.json")) if os.path.exists("results/perf/faults.json") else None
soak = json.load(open("results/perf/soak.json")) if os.path.exists("results/perf/soak.json") else None
runs = {r["server"]: r for r in bench["runs"]}
s = bench["summary"]
GB = 1e9

# Models: (name, vocab, d, layers, kv heads, head dim, parameters).
small = ("SmolLM2-135M (measured here)", 49_152, 576, 30, 3, 64, 134.5e6)
big = ("Qwen2.5-1.5B", 151_936, 1_536, 28, 2, 128, 1.54e9)
# Serving limits (lopa serve defaults: ServeConfig::default()).
MAX_CONCURRENT, MAX_BODY, MAX_REQ_TOKENS = 64, 4 << 20, 4096
# H200 (public specifications).
H200_BW, H200_BF16, H200_MEM = 4.8e12, 790e12, 141e9


def table_bytes(m, dtype=4):
    return m[1] * m[2] * dtype


def kv_per_token(m, dtype=2):
    return 2 * m[3] * m[4] * m[5] * dtype


def request_bytes(m):
    # Body (base64 soft prompt + JSON) plus the upstream body the gateway writes in one pass: the
    # prompt's f32 rows as torch.save bytes in base64 (4/3), one buffer.
    return MAX_BODY + MAX_REQ_TOKENS * m[2] * 4 * 4 / 3


def gb(x):
    return f"{x / GB:.2f} GB"


# The request shape every server was driven with (the same for all runs).
shape = runs["embedded"]
rows = []
for name, label in [("embedded", "`lopa serve` (embedded engine, batched)"), ("embedded-1", "`lopa serve --max-batch 1`"),
                    ("gateway+vllm", "`lopa serve --upstream vllm=…` + vLLM"), ("vllm", "vLLM alone, full `prompt_embeds`")]:
    r = runs[name]
    rows.append(f"| {label} | {r['requests_per_sec']:.2f} | {r['p50_s']:.2f} s | {r['p99_s']:.2f} s | {r['sequential_p50_s']:.3f} s | {r['errors']} / {r['lost']} |")

g, v = runs["gateway+vllm"], runs["vllm"]
added = s["gateway_added_p50_s"]
build = bench.get("build", "dev profile")
if gateway:
    # The gateway's own time per request at the 1.5B model's width, the benchmark's request shape.
    gw = {(r["d"], r["prompt_tokens"]): r["median_ms"] / 1e3 for r in gateway["rows"]}
    added_big, long_big = gw[(big[2], 16)], gw.get((big[2], 1000))
else:
    # Without it: the measured added latency, scaled by d (the rows it gathers and serialises).
    added_big, long_big = max(added, 0) * big[2] / small[2], None
gw_rps_per_core = 1 / added_big if added_big > 0 else float("inf")
# vLLM decode on one H200, bandwidth bound: every step reads the bf16 weights once.
steps_per_s = H200_BW / (big[6] * 2)
flops_per_token = 2 * big[6]
tokens_per_s = H200_BF16 * 0.4 / flops_per_token  # 40% of peak: a usual sustained share for small models
tokens_per_request = 10 + 16 + shape["max_tokens"]  # soft-prompt rows + a short prompt + new tokens, as benchmarked
req_per_s_h200 = tokens_per_s / tokens_per_request
kv_tokens = (H200_MEM * 0.9 - big[6] * 2) / kv_per_token(big)
gateways = req_per_s_h200 / gw_rps_per_core if gw_rps_per_core != float("inf") else 0

if gateway:
    gateway_line = f"""The gateway's own work per request, measured without vLLM by
  `scripts/benchmark.sh gateway` (criterion, release build, {gateway['machine']}), is
  {added_big * 1e3:.2f} ms at d = {big[2]:,} for the benchmark's request (10 soft rows, 16 prompt tokens)
  and {long_big * 1e3:.2f} ms with 1,000 prompt tokens: ~{gw_rps_per_core:,.0f} requests/s per core.
  Keeping one H200 busy with short requests then takes **~{gateways:,.1f} gateway cores**. The
  gateway's cost grows with the prompt and so does vLLM's: with 1,000-token prompts one H200 does
  ~{tokens_per_s / (10 + 1000 + shape['max_tokens']):,.0f} requests/s and the gateway ~{1 / long_big:,.0f} per core, so
  ~{tokens_per_s / (10 + 1000 + shape['max_tokens']) * long_big:,.1f} cores keep it busy. Each gateway process also holds the
  {gb(table_bytes(big))} table (f16 would halve it). The figure includes a loopback HTTP exchange
  with a stub; a real network adds latency, not CPU."""
else:
    gateway_line = f"""The gateway's work per request grows with d × tokens (embedding gather,
  serialisation). The measured {added * 1e3:.1f} ms ({build}) is an upper bound on its CPU time: it
  includes a loopback hop. Scaled by d, it becomes ~{added_big * 1e3:.1f} ms of one core at d = {big[2]},
  or ~{gw_rps_per_core:,.0f} requests/s per core. Keeping one H200 busy then takes
  **~{gateways:,.0f} gateway cores** (each gateway process also holds the {gb(table_bytes(big))}
  table; f16 would halve it)."""

gateway_own = (f" The gateway's own time for such a request, measured alone without vLLM, is "
               f"{gw[(small[2], 16)] * 1e3:.2f} ms (release build; see below).") if gateway else ""

failure = ""
if faults:
    failure += (f"\n- **vLLM killed and restarted under load** (`scripts/benchmark.sh faults`, {faults['clients']} clients): "
                f"{faults['sent']:,} requests sent, {faults['answered']:,} answered (200, or 503 `upstream_unavailable` at once while "
                f"vLLM was gone), {faults['hung']} hung, {faults['lost']} lost, the slowest in {faults['slowest_s']:.1f} s; `/health` "
                f"turned 503 {faults['health_503_after_kill_s']:.1f} s after the kill and 200 when vLLM answered again; the same "
                "gateway served again without a restart.")
if soak:
    failure += (f"\n- **A {soak['minutes']:g}-minute soak at the concurrency limit** (`scripts/benchmark.sh soak`, embedded engine, "
                f"{soak['concurrency']} clients, completions, streams, scores, gradients and malformed bodies): {soak['requests']:,} "
                f"requests, {soak['failures']} not as expected, {soak['hung']} hung, {soak['lost']} lost; resident memory "
                f"{soak['rss_after_warmup_mib']:.0f} MiB after warm-up, at most {soak['rss_growth_after_warmup_mib']:+.0f} MiB after that "
                f"({soak['rss_slope_mib_per_min']:+.2f} MiB/min).")
if failure:
    failure = "\n## When things fail\n\nFigures in [PERFORMANCE.md](PERFORMANCE.md#the-gateway-when-vllm-dies-and-comes-back).\n" + failure + "\n"

doc = f"""# Scaling lopa's serving side

Generated by `scripts/benchmark.sh serving` from `results/perf/load-bench.json`
(`scripts/lib/load-bench.py`) and `results/perf/gateway.json` (`scripts/benchmark.sh gateway`);
do not edit by hand.

## The deployment

```
 browser / app ── encoder + generator on the device; the task adapter never leaves it
      │  query text + soft prompt (m × d, f16), HTTPS
      ▼
 any load balancer (L4 or L7; no session affinity: nothing is kept between requests)
      │
      ├──► lopa serve --upstream vllm=http://vllm-1:8000   ┐  stateless gateways, as many as the
      ├──► lopa serve --upstream vllm=http://vllm-2:8000   ┘  request rate needs (CPU only)
      │        validates every byte, tokenizes, builds [soft prompt ; embed(prompt)],
      │        writes torch.save bytes itself
      ▼  private network only (vLLM takes prompt_embeds from trusted senders alone)
 vLLM --enable-prompt-embeds: data-parallel replicas, each tensor-parallel over its GPUs
```

The gateway is the trust boundary: vLLM never sees a client byte (its `prompt_embeds` reader was
CVE-2025-62164). Gateways hold no per-user state, so any number of them can run behind any load
balancer and be replaced at will; `GET /health` answers 503 when the vLLM behind one does not.
A small deployment needs none of this: `lopa serve` alone runs the model in its own process.

## What each part holds in memory

| part | holds | {small[0]} | {big[0]} |
|---|---|---|---|
| gateway | tokenizer and token-embedding table (vocab × d, f32) | {gb(table_bytes(small))} | {gb(table_bytes(big))} |
| gateway, per request in flight | body ≤ 4 MiB + the upstream body it writes in one pass (≤ 4,096 tokens × d as f32 in base64 torch.save bytes) | {gb(request_bytes(small))} | {gb(request_bytes(big))} |
| gateway, worst case | table + {MAX_CONCURRENT} requests in flight (`--max-concurrent`) | {gb(table_bytes(small) + MAX_CONCURRENT * request_bytes(small))} | {gb(table_bytes(big) + MAX_CONCURRENT * request_bytes(big))} |
| vLLM | weights (bf16) | {gb(small[6] * 2)} | {gb(big[6] * 2)} |
| vLLM | KV cache per token (bf16: 2 × layers × KV heads × head dim × 2 B) | {kv_per_token(small) / 1e3:.1f} kB | {kv_per_token(big) / 1e3:.1f} kB |
| embedded `lopa serve` | the whole model in f32, and activations for one batch (≤ `--max-batch-tokens`) | {gb(small[6] * 4)} | {gb(big[6] * 4)} |

Every request's memory is bounded before it is read: the body by `--max-body-bytes`, its tokens by
`--max-request-tokens` (soft prompt + prompt + new tokens, summed over candidates for `/v1/score`),
a batch by `--max-batch-tokens`, and the number in flight by `--max-concurrent`.

## Measured on this machine

One run of `scripts/lib/load-bench.py` ({bench['summary']['machine']}, CPU only, lopa's {build}, all servers on loopback,
one after another): {shape['clients']} concurrent clients, {shape['requests']} completion requests, each
with its own {shape['soft_prompt_rows']}-row f16 soft prompt, greedy, {shape['max_tokens']} new tokens;
vLLM 0.32 (CPU build, fp32, `--enforce-eager`) serving the model `lopa export-hf` wrote.
"Sequential p50" is the median of 16 requests sent one at a time.

| server | requests/s | p50 | p99 | sequential p50 | errors / lost |
|---|---|---|---|---|---|
{chr(10).join(rows)}

Gateway + vLLM against vLLM alone, the same requests: {added * 1e3:+.1f} ms at the median without
queueing and {s['gateway_added_p50_under_load_s'] * 1e3:+.0f} ms under the concurrent load, where the
gateway shares two cores with vLLM.{gateway_own} Batching in the embedded engine gives
{s['batched_over_one_at_a_time']:.1f}× the throughput of one request at a time.

{failure}
## Extrapolated (not measured)

To {big[0]} on one H200, then a cluster. Each line states its assumption.

- **vLLM on one H200.** Decoding is bound by reading the bf16 weights ({gb(big[6] * 2)}) once per
  step: at most {steps_per_s:,.0f} steps/s at 4.8 TB/s, each step advancing every running sequence.
  With continuous batching the limit is compute: {flops_per_token / 1e9:.1f} GFLOP per token at 40% of
  the 790 TFLOP/s bf16 peak is about {tokens_per_s:,.0f} tokens/s. A request like the benchmark's
  (10 soft rows + ~16 prompt tokens + {shape['max_tokens']} new tokens ≈ {tokens_per_request} tokens of work)
  then costs about 1/{req_per_s_h200:,.0f} s: **~{req_per_s_h200:,.0f} requests/s per H200**.
  The KV cache has room for about {kv_tokens / 1e6:.1f} M tokens (90% of 141 GB less the weights).
- **Gateways per H200.** {gateway_line}
- **A cluster.** Gateways and vLLM replicas scale independently and linearly: nothing is shared
  between requests, and vLLM's data parallelism adds replicas behind the gateways' URL (one
  `--upstream` per gateway pool, or a load balancer in front of the replicas). A model too large for
  one GPU runs tensor-parallel inside a replica; the gateway does not change, since it only needs the
  embedding table and tokenizer.
- **What this does not cover:** network time between client, gateway and vLLM; TLS; long prompts
  (the gateway's cost grows linearly with them, vLLM's prefill too); and `/v1/score` with multi-token
  candidates, which costs one vLLM request per distinct candidate prefix (single-token label words:
  one request for all candidates).
"""
open(a.out, "w").write(doc)
print(f"wrote {a.out}")

# The serving table of docs/PERFORMANCE.md, between its markers.
readme_path = "docs/PERFORMANCE.md"
readme = open(readme_path).read()
begin, end = "<!-- serving:begin (written by scripts/lib/scaling.py from results/perf/load-bench.json) -->", "<!-- serving:end -->"
block = f"""{begin}
`scripts/benchmark.sh serving`: {shape['clients']} concurrent loopback clients, {shape['requests']} requests, each
with its own {shape['soft_prompt_rows']}-row f16 soft prompt, greedy, {shape['max_tokens']} new tokens, SmolLM2-135M
on {bench['summary']['machine']} (CPU). Every server is started by the script, one after another;
any error or lost request fails it.

| server | requests/s | p50 | p99 | sequential p50 | errors / lost |
|---|---|---|---|---|---|
{chr(10).join(rows)}

Gateway + vLLM against vLLM alone: {added * 1e3:+.1f} ms per request at the median (sequential).{gateway_own}
Batching gives {s['batched_over_one_at_a_time']:.1f}× the throughput of one request at a time.
Memory per part and the extrapolation to a 1.5B model on an H200: [SCALING.md](SCALING.md).
{end}"""
i, j = readme.index(begin), readme.index(end) + len(end)
open(readme_path, "w").write(readme[:i] + block + readme[j:])
print(f"updated {readme_path}")
