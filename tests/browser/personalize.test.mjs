// Personalisation in the browser against the native loop: the same starting adapter, examples
// and options give the same adapter after k steps (`lopa personalize --bundle` natively; the
// package's `personalize` on the CPU module, in its worker and on WebGPU), both against one real
// `lopa serve`. Also: the soft prompts change, the exported file reloads through the origin-private
// file system, and an aborted signal stops before any step. Run by scripts/test.sh.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve, browser, check, done, maxAbsDiff, startLopaServe, BUNDLE, LOPA } from './lib.mjs';

// `--out FILE`: also write the time per step (browser paths and native) as JSON.
const out = process.argv.includes('--out') ? process.argv[process.argv.indexOf('--out') + 1] : null;
const timings = {};

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
const OPTIONS = { learningRate: 3e-3, batchSize: 4, seed: 7 };
// The same f32 arithmetic on the same inputs agrees to float rounding in the losses. AdamW then
// divides each gradient by its running norm, so a coordinate whose gradient is almost zero turns a
// rounding difference into a visible fraction of a step (at most the learning rate): parameters
// are compared against the distance AdamW can move them, lr × steps. WebGPU's kernels sum in
// other orders. scripts/test.sh runs this on f32 files: with int8 files the CPU's projections round
// their inputs to 16 bits, a rounding difference upstream can move an activation by one step, and
// AdamW turns that into up to 30 % of lr × steps, which would hide a real error in the loop
// (soft_prompt.test.mjs checks the int8 files' embeddings and soft prompts).
const MOVE = OPTIONS.learningRate * STEPS;
const TOL = { cpu: { loss: 1e-4, params: 0.02 * MOVE }, webgpu: { loss: 1e-3, params: 0.05 * MOVE } };

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

const { server, origin } = await serve();
const lopa = await startLopaServe(origin);
const work = mkdtempSync(join(tmpdir(), 'lopa-personalize-'));
try {
  // Natively, from the same browser files.
  writeFileSync(join(work, 'mine.tsv'), 'sentence\tlabel\n' + EXAMPLES.map(([s, l]) => `${s}\t${l}\n`).join(''));
  const log = execFileSync(LOPA, ['personalize', '--backend', 'cpu', '--bundle', BUNDLE, '--bundle-adapter', 'sst2', '--endpoint', lopa.endpoint,
    '--data', join(work, 'mine.tsv'), '--out', join(work, 'native'), '--steps', String(STEPS), '--lr', String(OPTIONS.learningRate),
    '--batch-size', String(OPTIONS.batchSize), '--seed', String(OPTIONS.seed)], { stdio: ['ignore', 'pipe', 'inherit'] }).toString();
  const nativeSteps = log.trim().split('\n').map((l) => JSON.parse(l));
  const native = tensors(readFileSync(join(work, 'native/adapter.safetensors')));

  const files = { encoder: '/models/encoder.safetensors', tokenizer: '/models/tokenizer.json', adapter: '/models/adapters/sst2.safetensors' };
  const b = await browser({ webgpu: true });
  try {
    await b.page.goto(`${origin}/tests/browser/harness.html`);
    for (const [backend, worker] of [['cpu', false], ['cpu', true], ['webgpu', false]]) {
      const where = `${backend}${worker ? ' (worker)' : ''}`;
      const r = await b.page.evaluate(async ({ files, backend, worker, endpoint, examples, steps, options }) => {
        const { LopaClient, saveAdapter, loadSavedAdapter } = await import('/pkg/index.js');
        const client = await LopaClient.load({ ...files, backend, worker });
        const text = examples[0][0];
        const before = Array.from((await client.softPrompt(text)).data);
        const seen = [];
        const t0 = performance.now();
        const result = await client.personalize(endpoint, examples.map(([input, label]) => ({ input, label })), { steps, ...options, onStep: (s) => seen.push(s) });
        const ms = performance.now() - t0;
        const after = Array.from((await client.softPrompt(text)).data);
        const bytes = await client.exportAdapter();
        await saveAdapter('mine', bytes);
        const again = await LopaClient.load({ ...files, backend: 'cpu', adapter: await loadSavedAdapter('mine') });
        const reloaded = Array.from((await again.softPrompt(text)).data);
        const aborted = await again.personalize(endpoint, [{ input: text, label: '0' }], { steps: 5, signal: AbortSignal.abort() });
        // importAdapter swaps the adapter in place: the shipped one gives the first soft prompt back.
        await again.importAdapter(new Uint8Array(await (await fetch(files.adapter)).arrayBuffer()));
        const shipped = Array.from((await again.softPrompt(text)).data);
        const scratch = await again.personalize(endpoint, examples.slice(0, 2).map(([input, label]) => ({ input, label })), { steps: 1, fromScratch: true, seed: 1 });
        const fresh = Array.from((await again.softPrompt(text)).data);
        await again.dispose();
        await client.dispose();
        return { result, seen, ms, before, after, reloaded, aborted, shipped, scratch, fresh, bytes: Array.from(bytes), missing: await loadSavedAdapter('nothing-here') };
      }, { files, backend, worker, endpoint: lopa.endpoint, examples: EXAMPLES, steps: STEPS, options: OPTIONS });
      const mine = tensors(new Uint8Array(r.bytes));
      const names = Object.keys(native);
      const worst = Math.max(...names.map((n) => (mine[n] ? maxAbsDiff(Array.from(mine[n]), Array.from(native[n])) : Infinity)));
      check(r.result.steps === STEPS && r.seen.length === STEPS, `${where}: ${r.result.steps} steps, ${r.seen.length} reported`);
      const lossDiff = Math.max(...r.seen.map((s, i) => Math.abs(s.loss - nativeSteps[i].loss)));
      check(lossDiff <= TOL[backend].loss, `${where}: losses ${r.seen.map((s) => s.loss.toFixed(4)).join(', ')} = native ${nativeSteps.map((s) => s.loss.toFixed(4)).join(', ')} (max diff ${lossDiff.toExponential(2)})`);
      check(names.length === Object.keys(mine).length && worst <= TOL[backend].params, `${where}: adapter after ${STEPS} steps = native's (${names.length} tensors, max abs diff ${worst.toExponential(2)} ≤ ${TOL[backend].params.toExponential(1)}, ${((100 * worst) / MOVE).toFixed(2)}% of lr × steps)`);
      check(maxAbsDiff(r.before, r.after) > 1e-4, `${where}: the soft prompt changed (${maxAbsDiff(r.before, r.after).toExponential(2)})`);
      check(maxAbsDiff(r.after, r.reloaded) <= 1e-3, `${where}: the exported file, kept in the origin-private file system, reloads to the same soft prompt (${maxAbsDiff(r.after, r.reloaded).toExponential(2)})`);
      check(r.aborted.steps === 0 && r.missing === null, `${where}: an aborted signal stops before any step; a name never saved is null`);
      check(maxAbsDiff(r.shipped, r.before) <= 1e-3 && r.scratch.steps === 1 && maxAbsDiff(r.fresh, r.before) > 1e-2, `${where}: importAdapter brings the shipped adapter back; fromScratch trains fresh weights`);
      const nativeMs = (1000 * nativeSteps.reduce((a, s) => a + s.seconds, 0)) / STEPS;
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
if (out) writeFileSync(out, JSON.stringify({ examples: EXAMPLES.length, batch_size: OPTIONS.batchSize, steps: STEPS, ms_per_step: timings, date: new Date().toISOString().slice(0, 10) }, null, 1));
done();
