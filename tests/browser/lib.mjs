// Shared by the browser tests and benchmarks: the static server, headless Chromium (Debian's,
// through playwright-core) and small assertion helpers.
import { spawn } from 'node:child_process';
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startStaticServer, ISOLATION } from '../../scripts/lib/static-server.mjs';

export { ISOLATION };

/** The browser weight files as `serve()` mounts them: the options every test loads. */
export const FILES = { encoder: '/models/encoder.safetensors', tokenizer: '/models/tokenizer.json', adapter: '/models/adapters/sst2.safetensors' };

/** Inputs that exercise the tokenizer and the padding: plain, empty, non-ASCII, long. */
export const INPUTS = [
  'a gripping, funny and deeply moving film',
  'the plot is a dull, predictable mess',
  'Ünïcödé, emoji 🎬 and punctuation?!',
  '',
  'it ' + 'goes on and on and '.repeat(12) + 'never ends',
];

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const BUNDLE = process.env.LOPA_WEB_DIR || join(process.env.HOME, '.cache/lopa/web');
export const LOPA = process.env.LOPA_BIN || join(process.env.CARGO_TARGET_DIR || join(process.env.HOME, '.cache/lopa/target'), 'debug/lopa');

/**
 * Serve the package, the demo, the test pages, the Leptos example's build (`/app/`) and the
 * browser weight files on one origin;
 * `isolated`: with the ISOLATION headers on every file.
 */
export async function serve({ isolated = false } = {}) {
  const mounts = { '/pkg/': join(ROOT, 'pkg'), '/www/': join(ROOT, 'www'), '/tests/': join(ROOT, 'tests'), '/app/': join(ROOT, 'examples/leptos-app/dist'), '/models/': BUNDLE };
  const server = await startStaticServer(0, mounts, '127.0.0.1', isolated ? ISOLATION : {});
  return { server, origin: `http://127.0.0.1:${server.address().port}` };
}

/** `lopa serve` (CPU) on a free port with CORS for `origin`: {process, endpoint}. */
export async function startLopaServe(origin) {
  const process_ = spawn(LOPA, ['serve', '--backend', 'cpu', '--addr', '127.0.0.1:0', '--cors-origin', origin], { stdio: ['ignore', 'inherit', 'pipe'] });
  const endpoint = await new Promise((ok, fail) => {
    let err = '';
    const timer = setTimeout(() => fail(new Error(`lopa serve did not start: ${err}`)), 120000);
    process_.stderr.on('data', (b) => {
      err += b;
      const m = /on (http:\/\/[0-9.:]+)/.exec(err);
      if (m) {
        clearTimeout(timer);
        ok(m[1]);
      }
    });
    process_.on('exit', (code) => fail(new Error(`lopa serve exited with ${code}: ${err}`)));
  });
  return { process: process_, endpoint };
}

/** Headless Chromium; `webgpu` adds the flag that gives navigator.gpu an adapter (SwiftShader here). */
export async function browser({ webgpu = true } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'lopa-chromium-'));
  const args = ['--no-sandbox', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-quic'];
  if (webgpu) args.push('--enable-unsafe-webgpu');
  const context = await chromium.launchPersistentContext(dir, { executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, args });
  const page = context.pages()[0] || (await context.newPage());
  const console_ = [];
  page.on('console', (m) => console_.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => console_.push(`pageerror: ${e.message}`));
  return {
    context,
    page,
    console: console_,
    close: async () => {
      await context.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * In the page: load a client with `options`, then the soft prompt of each input and one embed()
 * batch of all of them; `long`: also a batch of 8 long texts (enough rows to split the int8
 * projections by rows). Returns those and what the client reports.
 */
export async function softPromptsInPage(page, options, inputs = INPUTS, { long = false } = {}) {
  return page.evaluate(async ({ options, inputs, long }) => {
    const { LopaClient } = await import('/pkg/index.js');
    const client = await LopaClient.load(options);
    const out = [];
    for (const t of inputs) out.push(Array.from((await client.softPrompt(t)).data));
    const e = await client.embed(inputs);
    const l = long ? await client.embed(Array.from({ length: 8 }, (_, i) => inputs[inputs.length - 1] + ' take ' + i)) : null;
    const r = { backend: client.backend, threads: client.threads, worker: client.worker, fallbackReason: client.fallbackReason, shape: client.shape, out,
      embed: { shape: e.shape, data: Array.from(e.data) }, long: l && Array.from(l.data) };
    await client.dispose();
    return r;
  }, { options, inputs, long });
}

let failures = 0;
/** Record a check; the process exits 1 at the end if any failed. */
export function check(ok, what) {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) failures++;
}
export function done() {
  console.log(failures ? `${failures} check(s) failed` : 'all checks passed');
  process.exit(failures ? 1 : 0);
}

export function maxAbsDiff(a, b) {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}
