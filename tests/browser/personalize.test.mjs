// Personalisation in the browser against the native loop: the same starting adapter, examples
// and options give the same adapter after k steps (`lopa personalize --bundle` natively; the
// package's `personalize` on the CPU module, in its worker and on WebGPU), all against one real
// `lopa serve`. Also: the soft prompts change, the exported file reloads through the origin-private
// file system, and an aborted signal stops before any step. Run by scripts/test.sh on f32 files.
//
// Why the bounds are what they are. The two loops are one Rust code (client::personalize) built
// twice; what differs is float rounding: the native CPU kernels use FMA and other sum orders than
// wasm's simd128 and WebGPU's shaders, so soft prompts, the server's dLoss/dZ and the generator's
// gradients agree to a small relative difference, not bitwise. AdamW then divides each gradient
// by its own size: a coordinate whose gradient is below its rounding difference can step either
// way, by up to 2 × lr, and the next steps' gradients differ by what those steps changed. A bound on
// whole AdamW trajectories would have to be about lr × steps, which no error in the loop exceeds.
// So the test compares three things, each with a bound derived from the native gradients:
// 1. gradient: one SGD step at lr 1 gives the step-1 gradient, θ0 - θ1 = g, of every parameter.
//    Per tensor: |g_browser - g_native| ≤ REL × max|g_native| (+ f32 rounding of the weights).
// 2. sgd: three SGD steps, where a step is lr × g and rounding cannot flip it. Per tensor:
//    |θ_browser - θ_native| ≤ REL × (how far the native tensor moved) (+ rounding).
// 3. adamw: one step of the default AdamW (ε 1e-5), whose step-1 update is lr × u(g) with
//    u(g) = g / (|g| + ε). Per coordinate: the largest change of lr × u(g) when g moves by the
//    gradient bound of 1. (+ rounding): about lr × ε × bound / g² where |g| is well above the
//    bound, up to 2 × lr where it is not.
// REL is 1e-3 (see the margins the test prints). A 1 % larger learning rate in the browser, or
// AdamW without its bias correction (a step 3.16 × as long), exceeds these bounds by far: the CPU
// path runs the 1 % case every time and checks that it fails.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve, browser, check, done, maxAbsDiff, startLopaServe, BUNDLE, LOPA } from './lib.mjs';

// `--out FILE`: also write the time per step and the margins to the bounds as JSON.
const out = process.argv.includes('--out') ? process.argv[process.argv.indexOf('--out') + 1] : null;
const timings = {};
const margins = {};

// A user who reads sentiment the other way round: SST-2's labels flipped.
const EXAMPLES = [
  ['a gripping, funny and deeply moving film', '0'],
  ['the plot is a dull, predictable mess', '1'],
  ['one of the best films of the year', '0'],
  ['tedious, overlong and badly acted', '1'],
  ['a warm, wise and beautifully made story', '0'],
  ['i wanted my two hours back', '1'],
  ['the cast is wonderful', '0'],
  ['a complete waste of talent', '1'],
];
const STEPS = 3;
const BASE = { batchSize: 4, seed: 7 };
// The largest relative difference between the loops' gradients (and SGD movements), and losses.
const REL = 1e-3;
const LOSS = 1e-4;
const EPSILON = 1e-5;

/** The f32 tensors of a safetensors file: {name: Float32Array}. */
function tensors(bytes) {
  const b = Buffer.from(bytes);
  const n = Number(b.readBigUInt64LE(0));
  const header = JSON.parse(b.subarray(8, 8 + n).toString());
  const out = {};
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const [s, e] = t.data_offsets;
    out[name] = new Float32Array(b.buffer.slice(b.byteOffset + 8 + n + s, b.byteOffset + 8 + n + e));
  }
  return out;
}

const maxAbs = (t) => t.reduce((m, x) => Math.max(m, Math.abs(x)), 0);

/**
 * The worst ratio |mine - ref| / bound(tensor, i) over every coordinate: ≤ 1 passes. Returns
 * {ratio, where} (Infinity when the adapters' tensors differ).
 */
function worstRatio(mine, ref, bound) {
  let worst = { ratio: Object.keys(mine).length === Object.keys(ref).length ? 0 : Infinity, where: 'the tensor names' };
  for (const [n, r] of Object.entries(ref)) {
    const m = mine[n];
    if (!m || m.length !== r.length) return { ratio: Infinity, where: n };
    for (let i = 0; i < r.length; i++) {
      const ratio = Math.abs(m[i] - r[i]) / bound(n, i);
      if (!(ratio <= worst.ratio)) worst = { ratio, where: `${n}[${i}]` };
    }
  }
  return worst;
}

const { server, origin } = await serve();
const lopa = await startLopaServe(origin);
const work = mkdtempSync(join(tmpdir(), 'lopa-personalize-'));
const shipped = tensors(readFileSync(join(BUNDLE, 'adapters/sst2.safetensors')));
writeFileSync(join(work, 'mine.tsv'), 'sentence\tlabel\n' + EXAMPLES.map(([s, l]) => `${s}\t${l}\n`).join(''));
let run = 0;
/** `lopa personalize` natively from the same browser files: {steps: [{loss, seconds}], adapter}. */
function native(options) {
  const dir = join(work, `native-${run++}`);
  const log = execFileSync(LOPA, ['personalize', '--backend', 'cpu', '--bundle', BUNDLE, '--bundle-adapter', 'sst2', '--endpoint', lopa.endpoint,
    '--data', join(work, 'mine.tsv'), '--out', dir, '--steps', String(options.steps), '--optimizer', options.optimizer, '--lr', String(options.learningRate),
    '--epsilon', String(options.epsilon ?? 1e-5), '--weight-decay', String(options.weightDecay ?? 0),
    '--batch-size', String(options.batchSize), '--seed', String(options.seed)], { stdio: ['ignore', 'pipe', 'inherit'] }).toString();
  return { steps: log.trim().split('\n').map((l) => JSON.parse(l)), adapter: tensors(readFileSync(join(dir, 'adapter.safetensors'))) };
}
try {
  const CASES = {
    gradient: { ...BASE, optimizer: 'sgd', learningRate: 1, steps: 1 },
    adamw: { ...BASE, optimizer: 'adamw', learningRate: 3e-3, epsilon: EPSILON, steps: 1 },
  };
  const wmax = Object.fromEntries(Object.entries(shipped).map(([n, t]) => [n, maxAbs(t)]));
  // The native step-1 gradients (θ0 - θ1 at lr 1) and their largest size per tensor.
  const ref = { gradient: native(CASES.gradient) };
  const g = Object.fromEntries(Object.entries(shipped).map(([n, t]) => [n, t.map((x, i) => x - ref.gradient.adapter[n][i])]));
  const gmax = Object.fromEntries(Object.entries(g).map(([n, t]) => [n, maxAbs(t)]));
  const largest = Math.max(...Object.values(gmax));
  const theta = Math.max(...Object.values(wmax));
  check(largest > 0 && Number.isFinite(largest), `native step-1 gradient: largest |g| ${largest.toExponential(2)} (largest weight ${theta.toFixed(3)})`);
  // SGD moves the coordinate of the largest gradient by 0.5 % of the largest weight a step: small
  // enough that the three steps stay close to linear, so the rounding difference grows little.
  CASES.sgd = { ...BASE, optimizer: 'sgd', learningRate: (0.005 * theta) / largest, steps: STEPS };
  ref.sgd = native(CASES.sgd);
  ref.adamw = native(CASES.adamw);
  // f32 rounding of a tensor's largest weight, twice a step.
  const ulp = (n, steps) => 2 * steps * wmax[n] * 2 ** -23;
  const moved = Object.fromEntries(Object.keys(shipped).map((n) => [n, maxAbsDiff(Array.from(ref.sgd.adapter[n]), Array.from(shipped[n]))]));
  const u = (x) => x / (Math.abs(x) + EPSILON);
  const BOUNDS = {
    gradient: (n) => REL * gmax[n] + ulp(n, 1),
    sgd: (n) => REL * moved[n] + ulp(n, STEPS),
    adamw: (n, i) => {
      const d = REL * gmax[n] + ulp(n, 1);
      return CASES.adamw.learningRate * Math.max(Math.abs(u(g[n][i] + d) - u(g[n][i])), Math.abs(u(g[n][i] - d) - u(g[n][i]))) + ulp(n, 1);
    },
  };

  const files = { encoder: '/models/encoder.safetensors', tokenizer: '/models/tokenizer.json', adapter: '/models/adapters/sst2.safetensors' };
  const b = await browser({ webgpu: true });
  try {
    await b.page.goto(`${origin}/tests/browser/harness.html`);
    for (const [backend, worker] of [['cpu', false], ['cpu', true], ['webgpu', false]]) {
      const where = `${backend}${worker ? ' (worker)' : ''}`;
      // On the CPU path the SGD and AdamW runs once more with a 1 % larger learning rate: they must fail.
      const runs = Object.entries(CASES).map(([name, o]) => ({ name, options: o }));
      if (backend === 'cpu' && !worker) runs.push(...runs.filter((r) => r.name !== 'gradient').map((r) => ({ name: r.name, control: true, options: { ...r.options, learningRate: 1.01 * r.options.learningRate } })));
      const r = await b.page.evaluate(async ({ files, backend, worker, endpoint, examples, runs }) => {
        const { LopaClient, saveAdapter, loadSavedAdapter } = await import('/pkg/index.js');
        const shippedBytes = new Uint8Array(await (await fetch(files.adapter)).arrayBuffer());
        const client = await LopaClient.load({ ...files, backend, worker });
        const text = examples[0][0];
        const before = Array.from((await client.softPrompt(text)).data);
        const results = [];
        let ms = 0;
        for (const { options } of runs) {
          await client.importAdapter(shippedBytes);
          const seen = [];
          const t0 = performance.now();
          const result = await client.personalize(endpoint, examples.map(([input, label]) => ({ input, label })), { ...options, onStep: (s) => seen.push(s) });
          ms = performance.now() - t0;
          // As base64: an array of millions of numbers is slow to hand back to Node.
          const bytes = await client.exportAdapter();
          let bin = '';
          for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
          results.push({ result, seen, bytes: btoa(bin) });
        }
        // The client now holds the last run's adapter.
        const after = Array.from((await client.softPrompt(text)).data);
        await saveAdapter('mine', await client.exportAdapter());
        const again = await LopaClient.load({ ...files, backend: 'cpu', adapter: await loadSavedAdapter('mine') });
        const reloaded = Array.from((await again.softPrompt(text)).data);
        const aborted = await again.personalize(endpoint, [{ input: text, label: '0' }], { steps: 5, signal: AbortSignal.abort() });
        // importAdapter swaps the adapter in place: the shipped one gives the first soft prompt back.
        await again.importAdapter(shippedBytes);
        const shipped = Array.from((await again.softPrompt(text)).data);
        const scratch = await again.personalize(endpoint, examples.slice(0, 2).map(([input, label]) => ({ input, label })), { steps: 1, fromScratch: true, seed: 1 });
        const fresh = Array.from((await again.softPrompt(text)).data);
        await again.dispose();
        await client.dispose();
        return { results, ms, before, after, reloaded, aborted, shipped, scratch, fresh, missing: await loadSavedAdapter('nothing-here') };
      }, { files, backend, worker, endpoint: lopa.endpoint, examples: EXAMPLES, runs });
      for (const [i, { name, control, options }] of runs.entries()) {
        const got = r.results[i];
        const mine = tensors(Buffer.from(got.bytes, 'base64'));
        const { ratio, where: at } = worstRatio(mine, ref[name].adapter, BOUNDS[name]);
        const label = `${where}, ${name}`;
        if (control) {
          check(ratio > 1, `${label}: a 1 % larger learning rate in the browser fails the bound (${ratio.toFixed(1)} × the bound at ${at})`);
          continue;
        }
        const lossDiff = Math.max(...got.seen.map((s, k) => Math.abs(s.loss - ref[name].steps[k].loss) / Math.max(1, Math.abs(ref[name].steps[k].loss))));
        check(got.result.steps === options.steps && got.seen.length === options.steps, `${label}: ${got.result.steps} steps, ${got.seen.length} reported`);
        check(lossDiff <= LOSS, `${label}: losses ${got.seen.map((s) => s.loss.toFixed(5)).join(', ')} = native ${ref[name].steps.map((s) => s.loss.toFixed(5)).join(', ')} (relative difference ${lossDiff.toExponential(2)} ≤ ${LOSS})`);
        check(ratio <= 1, `${label}: adapter after ${options.steps} step(s) = native's within the bound (worst ${(100 * ratio).toFixed(1)} % of it, at ${at}; margin ${(1 / ratio).toFixed(1)}×)`);
        margins[label] = { ratio, at, margin: 1 / ratio, loss_diff: lossDiff };
      }
      check(maxAbsDiff(r.before, r.after) > 1e-4, `${where}: the soft prompt changed (${maxAbsDiff(r.before, r.after).toExponential(2)})`);
      check(maxAbsDiff(r.after, r.reloaded) <= 1e-3, `${where}: the exported file, kept in the origin-private file system, reloads to the same soft prompt (${maxAbsDiff(r.after, r.reloaded).toExponential(2)})`);
      check(r.aborted.steps === 0 && r.missing === null, `${where}: an aborted signal stops before any step; a name never saved is null`);
      check(maxAbsDiff(r.shipped, r.before) <= 1e-3 && r.scratch.steps === 1 && maxAbsDiff(r.fresh, r.before) > 1e-2, `${where}: importAdapter brings the shipped adapter back; fromScratch trains fresh weights`);
      // The last run (SGD, 3 steps, or its 1 % control) times a step.
      const nativeMs = (1000 * ref.sgd.steps.reduce((a, s) => a + s.seconds, 0)) / STEPS;
      timings[where] = r.ms / STEPS;
      timings.native = nativeMs;
      console.log(`     ${where}: ${(r.ms / STEPS).toFixed(0)} ms per step in the browser (client + HTTP + server), native ${nativeMs.toFixed(0)} ms`);
    }
    const panics = b.console.filter((l) => /panicked|RuntimeError|pageerror/.test(l));
    check(panics.length === 0, `no wasm panic in the console (${panics.join(' | ')})`);
  } finally {
    await b.close();
  }
} finally {
  lopa.process.kill();
  server.close();
  rmSync(work, { recursive: true, force: true });
}
const worst = Object.values(margins).reduce((m, x) => Math.min(m, x.margin), Infinity);
console.log(`     worst margin to the bound: ${worst.toFixed(1)}×`);
if (out) writeFileSync(out, JSON.stringify({ examples: EXAMPLES.length, batch_size: BASE.batchSize, steps: STEPS, ms_per_step: timings, margins, worst_margin: worst, date: new Date().toISOString().slice(0, 10) }, null, 1));
done();
