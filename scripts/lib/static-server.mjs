// A small static file server for the demo and the browser tests: correct MIME types (wasm),
// Content-Length (download progress), no caching headers, nothing outside the roots.
// Usage: node scripts/static-server.mjs [--isolated] PORT URL_PREFIX=DIR [URL_PREFIX=DIR ...]
// --isolated: cross-origin isolate the pages (COOP/COEP), which lets the package run threads.
import { createServer } from 'node:http';
import { createReadStream, statSync } from 'node:fs';
import { resolve, extname, sep } from 'node:path';

const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8', '.json': 'application/json', '.wasm': 'application/wasm', '.svg': 'image/svg+xml',
  '.png': 'image/png', '.ts': 'text/plain; charset=utf-8', '.md': 'text/plain; charset=utf-8',
};

/** The headers that make a page cross-origin isolated (SharedArrayBuffer, and so wasm threads). */
export const ISOLATION = { 'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'require-corp' };

/** Serve `mounts` ({URL prefix: folder}); `headers` are added to every file (e.g. COOP/COEP). */
export function startStaticServer(port, mounts, host = '127.0.0.1', headers = {}) {
  const roots = Object.entries(mounts).map(([prefix, dir]) => [prefix, resolve(dir)]).sort((a, b) => b[0].length - a[0].length);
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    if (path === '/' && mounts['/www/']) return res.writeHead(302, { location: '/www/' + new URL(req.url, 'http://x').search }).end();
    const mount = roots.find(([prefix]) => path.startsWith(prefix));
    if (!mount || (req.method !== 'GET' && req.method !== 'HEAD')) return res.writeHead(404).end('not found');
    let file = resolve(mount[1], '.' + path.slice(mount[0].length - (mount[0].endsWith('/') ? 1 : 0)));
    if (file !== mount[1] && !file.startsWith(mount[1] + sep)) return res.writeHead(403).end('forbidden');
    let st;
    try {
      st = statSync(file);
      if (st.isDirectory()) {
        file = resolve(file, 'index.html');
        st = statSync(file);
      }
    } catch {
      return res.writeHead(404).end('not found');
    }
    res.writeHead(200, { 'content-type': TYPES[extname(file)] || 'application/octet-stream', 'content-length': st.size, 'cache-control': 'no-store', ...headers });
    if (req.method === 'HEAD') return res.end();
    createReadStream(file).pipe(res);
  });
  return new Promise((ok, fail) => {
    server.once('error', fail);
    server.listen(port, host, () => ok(server));
  });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2);
  const isolated = args[0] === '--isolated' ? !!args.shift() : false;
  const [port, ...specs] = args;
  const mounts = Object.fromEntries(specs.map((s) => s.split('=')));
  const server = await startStaticServer(Number(port), mounts, '127.0.0.1', isolated ? ISOLATION : {});
  console.error(`static: http://127.0.0.1:${server.address().port}/ (${specs.join(', ')})`);
  const stop = () => server.close(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
