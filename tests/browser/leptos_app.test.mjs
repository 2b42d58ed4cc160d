// The Leptos example (examples/leptos-app, built by `scripts/build-wasm.sh --app`) on lopa::web, in
// headless Chromium against a real `lopa serve`:
// - without a WebGPU adapter, `auto` runs on the CPU and says why; `webgpu` is refused with it;
// - its soft prompts equal `lopa soft-prompt` natively (CPU: the same Rust code, float rounding
//   of wasm's simd128 against native FMA; the package's bound, 1e-4), and the label is the
//   server's answer to exactly what the page sent;
// - progress events arrive in order per file and the stream ends; a reload downloads no weight
//   file (Cache API) and computes the same bits;
// - personalising sends its steps to /v1/soft_prompt_grad, and the adapter kept in the
//   origin-private file system comes back after a reload with the same soft prompts (and the JS
//   package's loadSavedAdapter finds it);
// - cancelling drops the personalisation future: no gradient request is sent after it, the one in
//   flight is aborted, and the client's soft prompts are unchanged;
// - with WebGPU, `auto` picks it and its soft prompt matches native too.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { serve, browser, check, done, maxAbsDiff, startLopaServe, BUNDLE, LOPA, ROOT, INPUTS } from './lib.mjs';

const TOL = 1e-4;
if (!existsSync(join(ROOT, 'examples/leptos-app/dist/index.html'))) {
  console.error('build the app first: scripts/build-wasm.sh --app');
  process.exit(1);
}
const TEXTS = [INPUTS[0], INPUTS[2]];
const reference = JSON.parse(execFileSync(LOPA, ['soft-prompt', '--bundle', BUNDLE, '--adapter', 'sst2', ...TEXTS], { maxBuffer: 1 << 28 }).toString());
const { server, origin } = await serve();
const lopa = await startLopaServe(origin);
const endpoint = lopa.endpoint;
const app = (q = '') => `${origin}/app/index.html?endpoint=${encodeURIComponent(endpoint)}${q}`;

/** Requests the page sends, by kind, and the gradient requests that failed (aborted). */
function watch(page) {
  const seen = { models: [], grads: [], gradsFailed: [], scores: [] };
  page.on('request', (r) => {
    if (r.url().includes('/models/')) seen.models.push(r.url());
    if (r.url().endsWith('/v1/soft_prompt_grad')) seen.grads.push(Date.now());
  });
  page.on('requestfailed', (r) => r.url().endsWith('/v1/soft_prompt_grad') && seen.gradsFailed.push(r.failure()?.errorText));
  page.on('response', async (r) => {
    if (r.url().endsWith('/v1/score')) seen.scores.push(await r.json().catch(() => null));
  });
  return seen;
}

/** Load the app and wait until it is ready or shows an error; what it shows. */
async function open(page, url) {
  await page.goto(url);
  await page.waitForFunction(() => document.querySelector('#status')?.textContent === 'ready' || document.querySelector('#error')?.textContent, null, { timeout: 180000 });
  return page.evaluate(() => ({
    status: document.querySelector('#status')?.textContent,
    error: document.querySelector('#error').textContent,
    backend: document.querySelector('#backend').textContent,
    threads: document.querySelector('#threads').textContent,
    reason: document.querySelector('#reason').textContent,
  }));
}

/** The progress events the page received, and whether their stream ended. */
async function progress(page) {
  await page.waitForFunction(() => document.querySelector('#progress').dataset.ended === 'true', null, { timeout: 60000 });
  return page.$$eval('#progress li', (ls) => ls.map((l) => ({ file: l.dataset.file, loaded: Number(l.dataset.loaded), total: l.dataset.total === '' ? null : Number(l.dataset.total), cached: l.dataset.cached === 'true' })));
}

/** Classify `text` in the page: its soft prompt (f32 values), label and probabilities. */
async function classify(page, text) {
  const runs = Number(await page.$eval('#soft-prompt', (e) => e.dataset.runs));
  await page.fill('#text', text);
  await page.click('#classify');
  await page.waitForFunction((n) => Number(document.querySelector('#soft-prompt').dataset.runs) > n, runs, { timeout: 120000 });
  return page.evaluate(() => ({
    values: JSON.parse(document.querySelector('#soft-prompt').textContent || '[]'),
    label: document.querySelector('#label').textContent,
    probabilities: JSON.parse(document.querySelector('#probabilities').textContent || '{}'),
    error: document.querySelector('#error').textContent,
  }));
}

async function personalize(page, steps, until) {
  await page.fill('#steps', String(steps));
  await page.click('#personalize');
  await page.waitForFunction(until, null, { timeout: 300000 });
}
const state = (page) => page.textContent('#personalized');

const b = await browser({ webgpu: false });
try {
  const seen = watch(b.page);
  // 1. No WebGPU adapter: the CPU, with the reason.
  let shown = await open(b.page, app());
  check(shown.status === 'ready' && !shown.error, `the app loaded (${shown.error || shown.status})`);
  check(shown.backend === 'cpu' && /^WebGPU: navigator\.gpu (offers no adapter|is missing)$/.test(shown.reason), `no WebGPU adapter: auto runs on '${shown.backend}', reason “${shown.reason}”`);
  // 2. Progress, in order.
  const events = await progress(b.page);
  const files = ['encoder', 'tokenizer', 'adapter'];
  for (const f of files) {
    const e = events.filter((x) => x.file === f);
    const ordered = e.length >= 2 && e[0].loaded === 0 && e.every((x, i) => !x.cached && (i === 0 || x.loaded >= e[i - 1].loaded));
    const last = e[e.length - 1];
    check(ordered && last.total !== null && last.loaded === last.total, `${f}: ${e.length} progress events, from 0 up to ${last?.loaded} of ${last?.total} bytes, in order`);
  }
  check(events.length > 0 && events.every((x) => files.includes(x.file)), `the progress stream ended after ${events.length} events`);
  check(seen.models.length === 3, `the first load fetched ${seen.models.length} weight files (3)`);
  // 3. Soft prompts against native, and the label is the server's.
  const first = [];
  for (const [i, text] of TEXTS.entries()) {
    const r = await classify(b.page, text);
    first.push(r.values);
    const diff = maxAbsDiff(r.values, reference[i].values);
    check(!r.error && diff <= TOL, `“${text.slice(0, 30)}…”: soft prompt [${reference[i].shape}] max abs diff to lopa soft-prompt ${diff.toExponential(2)} ≤ ${TOL}`);
    const answer = seen.scores[seen.scores.length - 1];
    const labels = Object.keys(r.probabilities);
    const same = answer && answer.scores.length === labels.length && labels.every((l, k) => Math.abs(r.probabilities[l] - answer.scores[k].probability) <= 1e-6);
    const best = labels.reduce((a, l) => (r.probabilities[l] > r.probabilities[a] ? l : a), labels[0]);
    const sum = labels.reduce((s, l) => s + r.probabilities[l], 0);
    check(same && Math.abs(sum - 1) < 1e-3 && r.label === answer.scores[labels.indexOf(best)].text.trim(), `  label “${r.label}”: the server's answer to the page's request (p=${JSON.stringify(r.probabilities)})`);
  }
  // 4. A reload downloads nothing and computes the same bits.
  seen.models.length = 0;
  shown = await open(b.page, app());
  const again = await progress(b.page);
  check(seen.models.length === 0 && again.length === 3 && again.every((x) => x.cached && x.loaded === x.total), `reload: ${seen.models.length} weight files fetched, ${again.filter((x) => x.cached).length}/3 read from the Cache API`);
  const reloaded = await classify(b.page, TEXTS[0]);
  check(maxAbsDiff(reloaded.values, first[0]) === 0, 'reload: the same soft prompt, bit for bit');
  // 5. Personalise, kept in the origin-private file system.
  const grads0 = seen.grads.length;
  await personalize(b.page, 2, () => ['saved', 'failed'].includes(document.querySelector('#personalized').textContent));
  const steps = await b.page.textContent('#step');
  check((await state(b.page)) === 'saved' && steps === '2' && seen.grads.length - grads0 === 2, `personalised: ${steps} steps, ${seen.grads.length - grads0} gradient requests, loss ${await b.page.textContent('#loss')}, saved (${await b.page.textContent('#error')})`);
  const mine = await classify(b.page, TEXTS[0]);
  check(maxAbsDiff(mine.values, first[0]) > 1e-6, `the personalised adapter's soft prompt moved (max ${maxAbsDiff(mine.values, first[0]).toExponential(2)})`);
  await open(b.page, app());
  await b.page.click('#restore');
  await b.page.waitForFunction(() => document.querySelector('#personalized').textContent !== 'idle', null, { timeout: 30000 });
  const restored = await classify(b.page, TEXTS[0]);
  check((await state(b.page)) === 'restored' && maxAbsDiff(restored.values, mine.values) === 0, `after a reload, the adapter from the origin-private file system gives the same bits (${await state(b.page)})`);
  // The JS package finds the adapter the app saved, and makes the same soft prompts from it.
  const js = await b.page.evaluate(async ({ text }) => {
    const { LopaClient, loadSavedAdapter } = await import('/pkg/index.js');
    const adapter = await loadSavedAdapter('leptos-app');
    if (!adapter) return null;
    const c = await LopaClient.load({ encoder: '/models/encoder.safetensors', tokenizer: '/models/tokenizer.json', adapter, backend: 'cpu', worker: false });
    const z = Array.from((await c.softPrompt(text)).data);
    await c.dispose();
    return z;
  }, { text: TEXTS[0] });
  check(js !== null && maxAbsDiff(js, mine.values) <= 1e-5, `the JS package's loadSavedAdapter reads the app's adapter: soft prompt max abs diff ${js ? maxAbsDiff(js, mine.values).toExponential(2) : 'none saved'} ≤ 1e-5`);
  // 6. Cancelling drops the future: nothing more is sent, the client is unchanged.
  const before = seen.grads.length;
  await personalize(b.page, 500, () => Number(document.querySelector('#step').textContent) >= 2);
  const stepMs = seen.grads[seen.grads.length - 1] - seen.grads[seen.grads.length - 2];
  await b.page.click('#cancel');
  await b.page.waitForFunction(() => document.querySelector('#personalized').textContent === 'cancelled', null, { timeout: 10000 });
  const atCancel = seen.grads.length;
  // Steps answered before the cancel; a request sent past them was in flight and must be aborted.
  const answered = Number(await b.page.textContent('#step'));
  const inFlight = atCancel - before - answered;
  await new Promise((r) => setTimeout(r, Math.max(3000, 3 * stepMs)));
  check(seen.grads.length === atCancel, `cancelled after ${atCancel - before} gradient requests: ${seen.grads.length - atCancel} sent in the ${Math.max(3000, 3 * stepMs)} ms after (a step took ${stepMs} ms)`);
  check(inFlight >= 0 && inFlight <= 1 && seen.gradsFailed.length === inFlight && seen.gradsFailed.every((e) => /ABORTED/.test(e)), `${inFlight} request in flight at the cancel, ${seen.gradsFailed.length} aborted (${seen.gradsFailed.join(', ') || 'none'})`);
  const after = await classify(b.page, TEXTS[0]);
  check(maxAbsDiff(after.values, mine.values) === 0, 'a cancelled personalisation leaves the client as it was, bit for bit');
  // 7. `webgpu` without an adapter is refused with the reason.
  shown = await open(b.page, app('&backend=webgpu'));
  check(/WebGPU: navigator\.gpu (offers no adapter|is missing)/.test(shown.error), `backend=webgpu without an adapter: “${shown.error}”`);
  shown = await open(b.page, app('&backend=gpu'));
  check(/unknown backend `gpu`/.test(shown.error), `an unknown backend: “${shown.error}”`);
} finally {
  if (process.env.LOPA_TEST_VERBOSE) console.log(b.console.join('\n'));
  await b.close();
}

// 8. With WebGPU, auto picks it.
const g = await browser({ webgpu: true });
try {
  const shown = await open(g.page, app());
  check(shown.backend === 'webgpu' && shown.reason === '', `with an adapter, auto runs on '${shown.backend}' (${shown.error || 'no fallback'})`);
  const r = await classify(g.page, TEXTS[0]);
  const diff = maxAbsDiff(r.values, reference[0].values);
  check(!r.error && diff <= TOL, `WebGPU soft prompt: max abs diff to lopa soft-prompt ${diff.toExponential(2)} ≤ ${TOL}`);
} finally {
  await g.close();
  lopa.process.kill();
  server.close();
}
done();
