// Soft-prompt latency in headless Chromium for a 64-token input (62 words + [CLS] + [SEP]):
// load once per backend, 3 warm-up calls, then the median and p90 of N timed calls.
// Usage: node tests/browser/bench.mjs [N] [--out results/perf/browser-latency.json] (scripts/benchmark.sh browser)
import { writeFileSync } from 'node:fs';
import { serve, browser } from './lib.mjs';

const args = process.argv.slice(2);
const outAt = args.indexOf('--out');
const out = outAt >= 0 ? args.splice(outAt, 2)[1] : null;
const N = Number(args[0] || 20);
const results = [];
const TEXT = Array(62).fill('movie').join(' ');
const { server, origin } = await serve();
const b = await browser({ webgpu: true });
try {
  await b.page.goto(`${origin}/tests/browser/harness.html`);
  for (const backend of ['cpu', 'webgpu']) {
    const r = await b.page.evaluate(async ({ backend, TEXT, N }) => {
      const { LopaClient } = await import('/pkg/index.js');
      const t0 = performance.now();
      const client = await LopaClient.load({ encoder: '/models/encoder.safetensors', tokenizer: '/models/tokenizer.json', adapter: '/models/adapters/sst2.safetensors', backend });
      const loadMs = performance.now() - t0;
      const t1 = performance.now();
      await client.softPrompt(TEXT);
      const firstMs = performance.now() - t1;
      for (let i = 0; i < 2; i++) await client.softPrompt(TEXT);
      const times = [];
      for (let i = 0; i < N; i++) {
        const t = performance.now();
        await client.softPrompt(TEXT);
        times.push(performance.now() - t);
      }
      times.sort((a, b) => a - b);
      const gpu = navigator.gpu ? await navigator.gpu.requestAdapter() : null;
      const adapter = gpu ? (gpu.info ? `${gpu.info.vendor} ${gpu.info.architecture}`.trim() : 'unknown') : null;
      const r = { backend: client.backend, adapter: client.backend === 'webgpu' ? adapter : null, tokens: 64, runs: N, load_ms: Math.round(loadMs), first_ms: Math.round(firstMs), median_ms: +times[N >> 1].toFixed(1), p90_ms: +times[Math.floor(N * 0.9)].toFixed(1) };
      await client.dispose();
      return r;
    }, { backend, TEXT, N });
    console.log(JSON.stringify(r));
    results.push(r);
  }
  if (out) writeFileSync(out, JSON.stringify(results, null, 1));
} finally {
  await b.close();
  server.close();
}
