// The package's TypeScript types (pkg/index.d.ts) against what it really returns: every value the
// API hands back in headless Chromium (the model on the page and in a worker, a request, the
// server's answer through `lopa serve`) is written into a TypeScript file as a literal of its
// declared type, and `tsc --strict` must accept it: a field the types lack, or one they promise
// that the value misses, fails the test.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve, browser, check, done, startLopaServe, ROOT, FILES as files } from './lib.mjs';

const { server: statics, origin } = await serve();
const { process: lopa, endpoint } = await startLopaServe(origin);
const b = await browser({ webgpu: false });
let seen = [];
try {
  await b.page.goto(`${origin}/tests/browser/harness.html`);
  seen = await b.page.evaluate(async ({ files, endpoint }) => {
    const { LopaClient } = await import('/pkg/index.js');
    const out = [];
    for (const worker of [false, true]) {
      const progress = [];
      const client = await LopaClient.load({ ...files, backend: 'cpu', worker, onProgress: (p) => progress.length || progress.push(p) });
      const sp = await client.softPrompt('a gripping, funny film');
      const emb = await client.embed(['a gripping, funny film', 'dull']);
      const req = await client.encodeRequest('a gripping, funny film', { dtype: 'f32' });
      const answer = await client.send(endpoint, req);
      const sent = JSON.parse(new TextDecoder().decode(req.body)).soft_prompt;
      const bodyValues = Array.from(new Float32Array(Uint8Array.from(atob(sent.data), (c) => c.charCodeAt(0)).buffer));
      // The one dispatch refuses what is not a method of the wasm client, and the lifecycle's.
      const refused = [];
      for (const name of ['noSuchMethod', 'free', 'constructor']) refused.push(await client.core.call(name).then(() => 'accepted', (e) => e.message));
      out.push({
        worker,
        progress: progress[0],
        backend: client.backend,
        fallbackReason: client.fallbackReason,
        shape: client.shape,
        adapter: client.adapter,
        computations: client.computations,
        softPrompt: { dataIsFloat32Array: sp.data instanceof Float32Array, length: sp.data.length, shape: sp.shape },
        embeddings: { dataIsFloat32Array: emb.data instanceof Float32Array, length: emb.data.length, shape: emb.shape },
        request: { bodyIsUint8Array: req.body instanceof Uint8Array, length: req.body.length, path: req.path, kind: req.kind, prompt: req.prompt },
        sentSoftPrompt: {
          dataIsFloat32Array: req.softPrompt.data instanceof Float32Array,
          shape: req.softPrompt.shape,
          dtype: req.softPrompt.dtype,
          equalsBody: req.softPrompt.data.length === bodyValues.length && req.softPrompt.data.every((x, i) => x === bodyValues[i]),
          equalsSoftPrompt: req.softPrompt.data.every((x, i) => x === sp.data[i]),
        },
        refused,
        answer,
      });
      await client.dispose();
    }
    return out;
  }, { files, endpoint });
} finally {
  await b.close();
  statics.close();
  lopa.kill('SIGINT');
}

const j0 = (x) => JSON.stringify(x);
const ts = [`import type { AdapterInfo, Completion, Embeddings, EncodedRequest, LopaClient, Progress, SoftPrompt } from '${join(ROOT, 'pkg/index.js')}';`];
for (const [i, v] of seen.entries()) {
  const where = v.worker ? 'worker' : 'page';
  check(v.softPrompt.dataIsFloat32Array && v.softPrompt.length === v.shape[0] * v.shape[1], `${where}: softPrompt().data is a Float32Array of m·d = ${v.softPrompt.length} values`);
  check(v.embeddings.dataIsFloat32Array && v.embeddings.length === v.embeddings.shape[0] * v.embeddings.shape[1] && v.embeddings.shape[0] === 2, `${where}: embed().data is a Float32Array of n·h = ${v.embeddings.length} values`);
  check(v.request.bodyIsUint8Array, `${where}: encodeRequest().body is a Uint8Array (${v.request.length} bytes)`);
  check(v.request.kind === 'score' && v.request.path === '/v1/score', `${where}: encodeRequest().kind is ${v.request.kind} for ${v.request.path}`);
  const s = v.sentSoftPrompt;
  check(s.dataIsFloat32Array && s.equalsBody && s.equalsSoftPrompt && s.dtype === 'f32' && j0(s.shape) === j0(v.shape), `${where}: encodeRequest().softPrompt is what the body carries (${s.dtype}, [${s.shape}])`);
  check(v.refused.every((m) => /^lopa: unknown method/.test(m)), `${where}: the dispatch refuses names that are not methods (${v.refused.join('; ')})`);
  check(v.answer.kind === 'classification' && Math.abs(Object.values(v.answer.probabilities).reduce((a, p) => a + p, 0) - 1) < 1e-4, `${where}: the answer's probabilities sum to 1 (${JSON.stringify(v.answer.probabilities)})`);
  const j = (x) => JSON.stringify(x);
  ts.push(
    `const progress${i}: Progress = ${j(v.progress)};`,
    `const backend${i}: LopaClient['backend'] = ${j(v.backend)};`,
    `const fallbackReason${i}: LopaClient['fallbackReason'] = ${j(v.fallbackReason)};`,
    `const shape${i}: LopaClient['shape'] = ${j(v.shape)};`,
    `const adapter${i}: AdapterInfo = ${j(v.adapter)};`,
    `const computations${i}: LopaClient['computations'] = ${j(v.computations)};`,
    `const softPrompt${i}: SoftPrompt = { data: new Float32Array(${v.softPrompt.length}), shape: ${j(v.softPrompt.shape)} };`,
    `const embeddings${i}: Embeddings = { data: new Float32Array(${v.embeddings.length}), shape: ${j(v.embeddings.shape)} };`,
    `const request${i}: EncodedRequest = { path: ${j(v.request.path)}, kind: ${j(v.request.kind)}, body: new Uint8Array(${v.request.length}), prompt: ${j(v.request.prompt)}, softPrompt: { data: new Float32Array(${v.shape[0] * v.shape[1]}), shape: ${j(v.sentSoftPrompt.shape)}, dtype: ${j(v.sentSoftPrompt.dtype)} } };`,
    `const answer${i}: Completion = ${j(v.answer)};`,
    `export const used${i} = [progress${i}, backend${i}, fallbackReason${i}, shape${i}, adapter${i}, computations${i}, softPrompt${i}, embeddings${i}, request${i}, answer${i}];`,
  );
}
const dir = mkdtempSync(join(tmpdir(), 'lopa-types-'));
try {
  writeFileSync(join(dir, 'returned.ts'), ts.join('\n') + '\n');
  let out = '';
  let ok = true;
  try {
    execFileSync(join(ROOT, 'tests/browser/node_modules/.bin/tsc'), ['--noEmit', '--strict', '--target', 'es2022', '--module', 'nodenext', join(dir, 'returned.ts')], { stdio: 'pipe' });
  } catch (e) {
    ok = false;
    out = e.stdout || e.stderr ? `${e.stdout}${e.stderr}` : e.message;
  }
  check(seen.length === 2 && ok, `tsc --strict accepts every returned value as its declared type (page and worker)${ok ? '' : `:\n${out}`}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
done();
