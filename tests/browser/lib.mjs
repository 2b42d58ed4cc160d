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

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const BUNDLE = process.env.LOPA_WEB_DIR || join(process.env.HOME, '.cache/lopa/web');
export const LOPA = process.env.LOPA_BIN || join(process.env.CARGO_TARGET_DIR || join(process.env.HOME, '.cache/lopa/target'), 'debug/lopa');

/**
 * Serve the package, the demo, the test pages and the browser weight files on one origin;
 * `isolated`: with the ISOLATION headers on every file.
 */
export async function serve({ isolated = false } = {}) {
  const mounts = { '/pkg/': join(ROOT, 'pkg'), '/www/': join(ROOT, 'www'), '/tests/': join(ROOT, 'tests'), '/models/': BUNDLE };
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
