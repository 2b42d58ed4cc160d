// The threaded CPU module (lopa_cpu_mt_bg.wasm) against the single-threaded one, in headless
// Chromium: on a cross-origin isolated page the package picks it (in a Web Worker, its pool sized
// from the cores) and its soft prompts and embeddings are the same bits as one thread's, on the
// page's default path, in an explicit worker and with another pool size; elsewhere the
// single-threaded module runs as before. Run by scripts/test.sh.
import { serve, browser, check, done, softPromptsInPage, FILES as files, INPUTS } from './lib.mjs';


const run = (page, options) => softPromptsInPage(page, options, INPUTS, { long: true });

/** Whether two runs gave the same bits, and the first difference if not. */
function sameBits(a, b) {
  const flat = (r) => [...r.out.flat(), ...r.embed.data, ...r.long];
  const [x, y] = [flat(a), flat(b)];
  if (x.length !== y.length) return `${x.length} values against ${y.length}`;
  const i = x.findIndex((v, k) => !Object.is(v, y[k]));
  return i < 0 ? null : `value ${i}: ${x[i]} against ${y[i]}`;
}

const isolated = await serve({ isolated: true });
const plain = await serve();
const b = await browser({ webgpu: false });
try {
  await b.page.goto(`${isolated.origin}/tests/browser/harness.html`);
  const env = await b.page.evaluate(() => ({ isolated: globalThis.crossOriginIsolated, cores: navigator.hardwareConcurrency }));
  check(env.isolated === true, `the test page is cross-origin isolated (${env.cores} logical cores)`);
  const want = Math.max(1, Math.min(8, env.cores));

  const one = await run(b.page, { ...files, backend: 'cpu', threads: 1 });
  check(one.threads === 1 && one.worker === false, `threads: 1 runs the single-threaded module on the page (threads ${one.threads}, worker ${one.worker})`);
  const pooled = await run(b.page, { ...files, backend: 'cpu' });
  check(pooled.backend === 'cpu' && pooled.threads === want && pooled.worker === true, `isolated page, default: the threaded module in a worker on ${pooled.threads} threads (want ${want})`);
  const diff = sameBits(pooled, one);
  check(diff === null, `threaded (${pooled.threads}) = single-threaded, bit for bit: ${INPUTS.length} soft prompts, two embed() batches (${diff ?? 'no difference'})`);
  const three = await run(b.page, { ...files, backend: 'cpu', worker: true, threads: 3 });
  const diff3 = sameBits(three, one);
  check(three.threads === 3 && three.worker === true && diff3 === null, `worker: true, threads: 3 → ${three.threads} threads, same bits (${diff3 ?? 'no difference'})`);
  const auto = await run(b.page, { ...files, backend: 'auto' });
  check(auto.backend === 'cpu' && typeof auto.fallbackReason === 'string' && auto.threads === want && sameBits(auto, one) === null, `auto without WebGPU → the threaded CPU module (${auto.threads} threads, reason: ${auto.fallbackReason})`);

  const errors = await b.page.evaluate(async (files) => {
    const { LopaClient } = await import('/pkg/index.js');
    const attempt = (options) => LopaClient.load({ ...files, backend: 'cpu', ...options }).then((c) => (c.dispose(), 'loaded'), (e) => e.message);
    return { zero: await attempt({ threads: 0 }), half: await attempt({ threads: 1.5 }), onPage: await attempt({ worker: false, threads: 2 }) };
  }, files);
  check(errors.zero === 'lopa: threads must be a whole number from 1 to 64, got 0', `threads: 0 refused: ${errors.zero}`);
  check(errors.half === 'lopa: threads must be a whole number from 1 to 64, got 1.5', `threads: 1.5 refused: ${errors.half}`);
  check(errors.onPage === 'lopa: threads need a worker (the page may not block); leave `worker` unset', `worker: false with threads refused: ${errors.onPage}`);

  // Not isolated: no SharedArrayBuffer, so one thread on the page, whatever is asked.
  await b.page.goto(`${plain.origin}/tests/browser/harness.html`);
  const single = await run(b.page, { ...files, backend: 'cpu', threads: 4 });
  check(single.threads === 1 && single.worker === false && sameBits(single, one) === null, `page not isolated: threads: 4 → the single-threaded module on the page (${single.threads} thread), same bits`);
  const panics = b.console.filter((l) => /panicked|RuntimeError|unreachable/.test(l));
  check(panics.length === 0, `no wasm panic in the console (${panics.length}${panics.length ? ': ' + panics[0] : ''})`);
} finally {
  await b.close();
  isolated.server.close();
  plain.server.close();
}
done();
