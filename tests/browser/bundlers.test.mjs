// The package as an app gets it: `npm pack`, installed into tests/bundlers, built for production
// with Vite and with webpack, served as plain static files, and run in Chromium on the CPU (on
// the page and in the worker), on the threaded CPU module (the same build served cross-origin
// isolated) and on WebGPU. Each build's soft prompt must equal the native
// library's, with the .wasm files fetched from the build's own output. Run by scripts/test.sh.
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startStaticServer } from '../../scripts/lib/static-server.mjs';
import { ROOT, BUNDLE, LOPA, ISOLATION, browser, check, done, maxAbsDiff } from './lib.mjs';

const TOL = 1e-4;
const TEXT = 'a gripping, funny and deeply moving film';
const app = join(ROOT, 'tests/bundlers');
const reference = JSON.parse(execFileSync(LOPA, ['soft-prompt', '--bundle', BUNDLE, '--adapter', 'sst2', TEXT]).toString())[0].values;

// The package exactly as npm would publish it (package.json's `files`), installed like a user would.
const packed = mkdtempSync(join(tmpdir(), 'lopa-pack-'));
execFileSync('npm', ['pack', '--silent', '--pack-destination', packed], { cwd: join(ROOT, 'pkg') });
const tarball = join(packed, readdirSync(packed).find((f) => f.endsWith('.tgz')));
execFileSync('npm', ['install', '--no-save', '--no-package-lock', '--no-audit', '--no-fund', tarball], { cwd: app, stdio: 'inherit' });
rmSync(packed, { recursive: true, force: true });

// Production builds.
const t0 = Date.now();
execFileSync(join(app, 'node_modules/.bin/vite'), ['build', '--logLevel', 'warn'], { cwd: app, stdio: 'inherit' });
const vite = Date.now() - t0;
const webpack = createRequire(join(app, 'package.json'))('webpack');
const config = (await import(join(app, 'webpack.config.js'))).default;
await new Promise((ok, fail) => webpack(config, (err, stats) => (err || stats.hasErrors() ? fail(err || new Error(stats.toString('errors-only'))) : ok())));
copyFileSync(join(app, 'app/index.html'), join(app, 'dist-webpack/index.html'));
const webpackMs = Date.now() - t0 - vite;
// The three modules, each once (webpack names them by content hash alone).
const emitted = (dir) => readdirSync(join(app, dir), { recursive: true }).filter((f) => String(f).endsWith('.wasm'));
const three = (dir) => emitted(dir).length === 3;
check(three('dist-vite'), `Vite emitted the three wasm modules (${emitted('dist-vite').join(', ')}) in ${vite} ms`);
check(three('dist-webpack'), `webpack emitted the three wasm modules (${emitted('dist-webpack').join(', ')}) in ${webpackMs} ms`);

const b = await browser({ webgpu: true });
try {
  for (const dist of ['dist-vite', 'dist-webpack']) {
    // The build at the site's root, the weights beside it: nothing else of the repository is
    // served. The same files again cross-origin isolated, where the threaded module runs.
    const mounts = { '/models/': BUNDLE, '/': join(app, dist) };
    const servers = { plain: await startStaticServer(0, mounts), isolated: await startStaticServer(0, mounts, '127.0.0.1', ISOLATION) };
    const wasm = [];
    const listener = (r) => r.url().endsWith('.wasm') && wasm.push(new URL(r.url()).pathname);
    b.page.on('request', listener);
    for (const [backend, worker, on] of [['cpu', '0', 'plain'], ['cpu', '1', 'plain'], ['webgpu', '0', 'plain'], ['cpu', null, 'isolated']]) {
      await b.page.goto(`http://127.0.0.1:${servers[on].address().port}/?backend=${backend}${worker === null ? '' : `&worker=${worker}`}`);
      const r = await b.page.evaluate(() => window.lopaResult);
      const where = `${dist.slice(5)}: ${backend}${worker === '1' ? ' in a worker' : ''}${on === 'isolated' ? ', isolated page (threads)' : ''}`;
      if (r.error) {
        check(false, `${where}: ${r.error}`);
        continue;
      }
      const diff = maxAbsDiff(r.data, reference);
      const threaded = on !== 'isolated' || (r.threads > 1 && r.worker);
      check(r.backend === backend && threaded && diff <= TOL, `${where}: backend '${r.backend}' on ${r.threads} thread(s)${r.worker ? ' in a worker' : ''}, soft prompt [${r.shape}] max abs diff to native ${diff.toExponential(2)} ≤ ${TOL}`);
    }
    b.page.off('request', listener);
    check(wasm.length > 0 && wasm.every((p) => !p.startsWith('/models/')), `${dist.slice(5)}: wasm fetched from the build (${[...new Set(wasm)].join(', ')})`);
    for (const server of Object.values(servers)) await new Promise((ok) => server.close(ok));
  }
  const panics = b.console.filter((l) => /panicked|RuntimeError|pageerror/.test(l));
  check(panics.length === 0, `no errors in the console (${panics.join(' | ')})`);
} finally {
  await b.close();
}
done();
