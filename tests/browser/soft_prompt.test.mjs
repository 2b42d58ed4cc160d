// The browser package against the native library: the same soft prompts and embeddings on the CPU backend and
// on WebGPU (max abs diff ≤ 1e-4), `backend` telling the truth, the worker, the Cache API, and
// clear errors for bad input. Run by scripts/test.sh.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { serve, browser, check, done, maxAbsDiff, softPromptsInPage, BUNDLE, LOPA, FILES as files, INPUTS } from './lib.mjs';

const TOL = 1e-4;
// Embeddings of int8 files on the CPU: each projection rounds its input rows to 16 bits, so f32
// differences of 1e-7 upstream (a padded batch, another SIMD width) can move an activation by one
// step; natively the same texts embedded alone and in this batch differ by 5e-5.
const TOL_EMBED = 3e-4;
const reference = JSON.parse(execFileSync(LOPA, ['soft-prompt', '--bundle', BUNDLE, '--adapter', 'sst2', ...INPUTS], { maxBuffer: 1 << 28 }).toString());
const [m, d] = reference[0].shape;
// The encoder alone, the five inputs as one padded batch.
const embeddings = execFileSync(LOPA, ['embed', '--backend', 'cpu', '--bundle', BUNDLE, ...INPUTS]).toString().trim().split('\n').map((l) => JSON.parse(l));

const { server, origin } = await serve();

const run = softPromptsInPage;

const withGpu = await browser({ webgpu: true });
try {
  await withGpu.page.goto(`${origin}/tests/browser/harness.html`);
  for (const [backend, worker] of [['cpu', false], ['cpu', true], ['webgpu', false]]) {
    const t0 = Date.now();
    const r = await run(withGpu.page, { ...files, backend, worker }, INPUTS);
    const diffs = r.out.map((v, i) => maxAbsDiff(v, reference[i].values));
    const worst = Math.max(...diffs);
    check(r.backend === backend, `backend '${backend}'${worker ? ' in a worker' : ''} reports '${r.backend}'`);
    check(r.shape[0] === m && r.shape[1] === d, `shape [${r.shape}] = native [${m}, ${d}]`);
    check(worst <= TOL, `${backend}${worker ? ' (worker)' : ''}: ${INPUTS.length} inputs, max abs diff to native ${worst.toExponential(2)} ≤ ${TOL} (${Date.now() - t0} ms)`);
    const e = maxAbsDiff(r.embed.data, embeddings.flat());
    check(r.embed.shape[0] === INPUTS.length && r.embed.shape[1] === embeddings[0].length && e <= TOL_EMBED, `${backend}${worker ? ' (worker)' : ''}: embed() of the ${INPUTS.length} inputs as one batch, shape [${r.embed.shape}], max abs diff to lopa embed ${e.toExponential(2)} ≤ ${TOL_EMBED}`);
  }
  // auto picks WebGPU when the browser has an adapter.
  const auto = await run(withGpu.page, { ...files, backend: 'auto' }, INPUTS.slice(0, 1));
  check(auto.backend === 'webgpu' && auto.fallbackReason === null, `auto with an adapter → '${auto.backend}'`);

  // The Cache API: a second load downloads nothing.
  const requests = [];
  withGpu.page.on('request', (r) => r.url().includes('/models/') && requests.push(r.url()));
  const cached = await withGpu.page.evaluate(async (files) => {
    const { LopaClient } = await import('/pkg/index.js');
    const seen = [];
    const client = await LopaClient.load({ ...files, backend: 'cpu', onProgress: (p) => seen.push(p) });
    await client.dispose();
    return seen;
  }, files);
  check(requests.length === 0 && cached.length === 3 && cached.every((p) => p.cached && p.loaded === p.total), `reload served from the Cache API (${requests.length} downloads, progress ${JSON.stringify(cached.map((p) => [p.file, p.cached]))})`);

  // Errors are exceptions with clear messages.
  const errors = await withGpu.page.evaluate(async (files) => {
    const { LopaClient } = await import('/pkg/index.js');
    const attempt = async (options) => {
      try {
        await LopaClient.load({ ...files, backend: 'cpu', ...options });
        return 'loaded';
      } catch (e) {
        return e.message;
      }
    };
    // An adapter trained with another encoder: same bundle, another encoder sha256 in its metadata.
    const bytes = new Uint8Array(await (await fetch(files.adapter)).arrayBuffer());
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
    const meta = JSON.parse(header.__metadata__.adapter);
    meta.encoder.sha256 = 'f'.repeat(64);
    meta.encoder.id = 'some-other-encoder';
    header.__metadata__.adapter = JSON.stringify(meta);
    let h = new TextEncoder().encode(JSON.stringify(header));
    const pad = (8 - (h.length % 8)) % 8;
    h = new TextEncoder().encode(JSON.stringify(header) + ' '.repeat(pad));
    const forged = new Uint8Array(8 + h.length + bytes.length - 8 - n);
    new DataView(forged.buffer).setBigUint64(0, BigInt(h.length), true);
    forged.set(h, 8);
    forged.set(bytes.subarray(8 + n), 8 + h.length);
    const client = await LopaClient.load({ ...files, backend: 'cpu' });
    let badInput;
    try {
      await client.softPrompt({ text: 'x' });
    } catch (e) {
      badInput = e.message;
    }
    const badEmbed = await client.embed([42]).catch((e) => e.message);
    await client.dispose();
    let disposed;
    try {
      await client.softPrompt('x');
    } catch (e) {
      disposed = e.message;
    }
    return {
      url: await attempt({ encoder: '/models/no-such-file.safetensors' }),
      swapped: await attempt({ adapter: files.encoder }),
      truncated: await attempt({ encoder: new Uint8Array(100) }),
      wrongEncoder: await attempt({ adapter: forged }),
      backend: await attempt({ backend: 'tpu' }),
      badInput,
      badEmbed,
      disposed,
    };
  }, files);
  const expect = {
    url: `lopa: load: encoder: HTTP 404 (${origin}/models/no-such-file.safetensors)`,
    swapped: 'lopa: load: config: adapter bundle: format `lopa-encoder/1`, expected `lopa-adapter-bundle/1` (is this the right file?)',
    wrongEncoder: /^lopa: load: config: adapter was trained with encoder some-other-encoder \(sha256 ffffffffffff\), not all-minilm-l6-v2 \(sha256 [0-9a-f]{12}\)$/,
    truncated: /^lopa: load: safetensors: /,
    backend: 'lopa: unknown backend `tpu` (auto, webgpu, cpu)',
    badInput: 'lopa: softPrompt: input: task `sst2` needs the field `sentence`',
    badEmbed: 'lopa: embed: expected a string or a list of strings',
    disposed: 'lopa: this client was disposed',
  };
  for (const [k, want] of Object.entries(expect)) {
    const got = errors[k];
    check(want instanceof RegExp ? want.test(got) : got === want, `error ${k}: ${got}`);
  }
  const panics = withGpu.console.filter((l) => /panicked|RuntimeError|unreachable/.test(l));
  check(panics.length === 0, `no wasm panic in the console (${panics.length})`);
} finally {
  await withGpu.close();
}

// Without --enable-unsafe-webgpu there is no adapter: auto falls back to the CPU and says so,
// and an explicit 'webgpu' is an error, not a silent CPU run.
const noGpu = await browser({ webgpu: false });
try {
  await noGpu.page.goto(`${origin}/tests/browser/harness.html`);
  const r = await run(noGpu.page, { ...files, backend: 'auto' }, INPUTS.slice(0, 2));
  const worst = Math.max(...r.out.map((v, i) => maxAbsDiff(v, reference[i].values)));
  check(r.backend === 'cpu' && typeof r.fallbackReason === 'string', `auto without an adapter → '${r.backend}' (${r.fallbackReason})`);
  check(worst <= TOL, `fallback CPU output matches native (${worst.toExponential(2)})`);
  const explicit = await noGpu.page.evaluate(async (files) => {
    const { LopaClient } = await import('/pkg/index.js');
    try {
      await LopaClient.load({ ...files, backend: 'webgpu' });
      return 'loaded';
    } catch (e) {
      return e.message;
    }
  }, files);
  check(/^lopa: (WebGPU is not available|load: backend: WebGPU)/.test(explicit), `explicit webgpu without an adapter fails: ${explicit}`);
} finally {
  await noGpu.close();
}
server.close();
done();
