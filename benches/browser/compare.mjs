// lopa's browser package beside transformers.js, the same all-MiniLM-L6-v2 weights, the same
// inputs, one headless Chromium: sentence embeddings (mean pooling + L2) of texts of exactly 16,
// 64 and 256 tokens, batch 1 and 8. Each configuration runs in a fresh browser profile (nothing
// cached), so its download, first call and peak memory are its own.
//
//   node benches/browser/compare.mjs --lopa-f32 DIR --lopa-int8 DIR --onnx DIR [--runs N] [--only TEXT] [--shapes 256x8,64x1] [--out FILE]
//
// --lopa-*: `lopa export-web --dtype f32|int8` folders; --onnx: scripts/lib/export_onnx.py's
// folder (fp32 and q8). scripts/benchmark.sh compare prepares all three. Timing: per shape, one
// first call, 2 warm-up calls, then N timed calls (median, p90). Download: the bytes the static
// server sent for the configuration (code and weights). Peak memory: the largest peak resident set
// (VmHWM) of Chromium's renderer processes, which hold the page, its wasm memory and its workers.
// Last, the paired run: lopa int8 and transformers.js q8, both threaded, loaded in one isolated
// page and called in turn on every shape (N rounds), so the machine's speed is the same for both.
import { readFileSync, writeFileSync, readdirSync, statSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { browser, ROOT, ISOLATION } from '../../tests/browser/lib.mjs';
import { startStaticServer } from '../../scripts/lib/static-server.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const opt = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
};
const RUNS = Number(opt('runs', 10));
const OUT = opt('out', null);
const DIRS = { lopaF32: resolve(opt('lopa-f32')), lopaInt8: resolve(opt('lopa-int8')), onnx: resolve(opt('onnx')) };
const TOKENS = [16, 64, 256];
const BATCHES = [1, 8];

// Texts of exactly n tokens: n - 2 words, each one word piece of the uncased vocabulary, plus
// [CLS] and [SEP]. Row i of a batch starts i words later, so the rows differ.
const WORDS = ('the film is a quiet and moving story about a family that holds on to each other when the world ' +
  'around them falls apart and the actors give it real weight even if the last hour runs a little long and the music ' +
  'is too loud for its own good').split(' ');
const vocab = new Set(readFileSync(join(DIRS.onnx, 'vocab.txt'), 'utf8').split('\n'));
for (const w of WORDS) if (!vocab.has(w)) throw new Error(`"${w}" is not one word piece`);
const texts = (n, b) => Array.from({ length: b }, (_, i) => Array.from({ length: n - 2 }, (_, k) => WORDS[(i * 7 + k) % WORDS.length]).join(' '));
// --shapes TOKENSxBATCH,...: just those shapes (all six without it).
const ONLY_SHAPES = opt('shapes', '').split(',').filter(Boolean);
const SHAPES = TOKENS.flatMap((tokens) => BATCHES.map((batch) => ({ tokens, batch, texts: texts(tokens, batch) })))
  .filter((s) => !ONLY_SHAPES.length || ONLY_SHAPES.includes(`${s.tokens}x${s.batch}`));

// SwiftShader emulates a GPU on the CPU (seconds per call): the small shapes only, few runs.
const GPU_SHAPES = SHAPES.filter((s) => s.tokens <= 64 && s.batch === 1);
const CONFIGS = [
  { name: 'lopa f32', lib: 'lopa', weights: 'f32', device: 'cpu', shapes: SHAPES, runs: RUNS },
  { name: 'transformers.js fp32', lib: 'tjs', weights: 'fp32', device: 'wasm', shapes: SHAPES, runs: RUNS },
  { name: 'lopa int8', lib: 'lopa', weights: 'int8', device: 'cpu', shapes: SHAPES, runs: RUNS },
  { name: 'transformers.js q8', lib: 'tjs', weights: 'q8', device: 'wasm', shapes: SHAPES, runs: RUNS },
  // A cross-origin isolated page (SharedArrayBuffer) lets both use threads: lopa's threaded CPU
  // module with its default pool (the logical cores up to 8), onnxruntime-web with its own default
  // (half the cores, at most 4) and with lopa's count.
  { name: 'lopa int8, threads (isolated page)', lib: 'lopa', weights: 'int8', device: 'cpu', isolated: true, shapes: SHAPES, runs: RUNS },
  { name: 'transformers.js q8, threads (isolated page, its default count)', lib: 'tjs', weights: 'q8', device: 'wasm', isolated: true, count: 'default', shapes: SHAPES, runs: RUNS },
  { name: "transformers.js q8, threads (isolated page, lopa's count)", lib: 'tjs', weights: 'q8', device: 'wasm', isolated: true, count: 'lopa', shapes: SHAPES, runs: RUNS },
  { name: 'lopa f32, threads (isolated page)', lib: 'lopa', weights: 'f32', device: 'cpu', isolated: true, shapes: SHAPES, runs: RUNS },
  { name: 'transformers.js fp32, threads (isolated page, its default count)', lib: 'tjs', weights: 'fp32', device: 'wasm', isolated: true, count: 'default', shapes: SHAPES, runs: RUNS },
  { name: "transformers.js fp32, threads (isolated page, lopa's count)", lib: 'tjs', weights: 'fp32', device: 'wasm', isolated: true, count: 'lopa', shapes: SHAPES, runs: RUNS },
  { name: 'lopa f32, WebGPU (SwiftShader)', lib: 'lopa', weights: 'f32', device: 'webgpu', shapes: GPU_SHAPES, runs: 3 },
  { name: 'transformers.js fp32, WebGPU (SwiftShader)', lib: 'tjs', weights: 'fp32', device: 'webgpu', shapes: GPU_SHAPES, runs: 3 },
];

// Then both threaded 8-bit configurations again on one isolated page, their calls alternating:
// the comparison the targets are set on, without minutes of the machine's drift between them.
const PAIRED = {
  name: 'paired: lopa int8 and transformers.js q8 (its default count), threads, one isolated page',
  cfgs: [
    CONFIGS.find((c) => c.lib === 'lopa' && c.weights === 'int8' && c.isolated),
    CONFIGS.find((c) => c.lib === 'tjs' && c.weights === 'q8' && c.isolated && c.count === 'default'),
  ].map(({ lib, weights, device, count }) => ({ lib, weights, device, count })),
};

// --only TEXT: just the configurations (and the paired run) whose name contains TEXT.
const ONLY = opt('only', '');

// Runs in the page: load one configuration, then time every shape.
async function inPage({ cfg, shapes }) {
  const { load, stats } = await import('/bench/embedders.mjs');
  const { embed, info, loadMs } = await load(cfg, shapes[0].texts[0]);
  const rows = [];
  for (const s of shapes) {
    const t1 = performance.now();
    const first = await embed(s.texts);
    const firstMs = performance.now() - t1;
    for (let i = 0; i < 2; i++) await embed(s.texts);
    const times = [];
    for (let i = 0; i < cfg.runs; i++) {
      const t = performance.now();
      await embed(s.texts);
      times.push(performance.now() - t);
    }
    rows.push({ tokens: s.tokens, batch: s.batch, runs: cfg.runs, first_ms: +firstMs.toFixed(1), ...stats(times), embedding: first });
  }
  return { load_ms: Math.round(loadMs), crossOriginIsolated: globalThis.crossOriginIsolated, ...info, rows };
}

// Runs in the page: load both configurations, then per shape alternate their calls (a, b, then
// b, a, ...), 50 ms apart so neither library's threads are still busy when the other starts.
// Both see the same minute of the machine, so a drift of its speed moves both.
async function pairedInPage({ cfgs, shapes, rounds }) {
  const { load, stats, median } = await import('/bench/embedders.mjs');
  const pause = () => new Promise((ok) => setTimeout(ok, 50));
  const libs = [];
  for (const cfg of cfgs) libs.push(await load(cfg, shapes[0].texts[0]));
  const rows = [];
  for (const s of shapes) {
    // The first call and 2 warm-up calls of each.
    for (const l of libs) for (let i = 0; i < 3; i++) await l.embed(s.texts);
    const times = libs.map(() => []);
    for (let i = 0; i < rounds; i++) {
      for (const k of i % 2 ? [1, 0] : [0, 1]) {
        await pause();
        const t = performance.now();
        await libs[k].embed(s.texts);
        times[k].push(performance.now() - t);
      }
    }
    const [a, b] = times.map(stats);
    rows.push({
      tokens: s.tokens, batch: s.batch, rounds, a, b,
      ratio_of_medians: +(a.median_ms / b.median_ms).toFixed(3),
      // The ratio within each round, then its median: what a drift between rounds cannot move.
      round_ratio_median: +median(times[0].map((t, i) => t / times[1][i])).toFixed(3),
    });
  }
  return { crossOriginIsolated: globalThis.crossOriginIsolated, threads: libs.map((l) => l.info.threads), rows };
}

/** Peak resident set (VmHWM, bytes) of the largest Chromium renderer process. */
function rendererPeak() {
  let peak = 0;
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      if (!readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('--type=renderer')) continue;
      const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (m) peak = Math.max(peak, Number(m[1]) * 1024);
    } catch {}
  }
  return peak;
}

const sent = new Map();
const MOUNTS = {
  '/pkg/': join(ROOT, 'pkg'), '/tests/': join(ROOT, 'tests'), '/bench/': HERE,
  '/lopa-f32/': DIRS.lopaF32, '/lopa-int8/': DIRS.lopaInt8, '/onnx/minilm/': DIRS.onnx,
};
const server = await startStaticServer(0, MOUNTS);
const isolatedServer = await startStaticServer(0, MOUNTS, '127.0.0.1', ISOLATION);
/** The file behind a served path. */
const fileOf = (path) => {
  const [prefix, dir] = Object.entries(MOUNTS).find(([p]) => path.startsWith(p));
  return join(dir, path.slice(prefix.length));
};
/** gzip -9 size of a served file (what a server that compresses would send). */
const gzipped = (path) => gzipSync(readFileSync(fileOf(path)), { level: 9 }).length;
for (const s of [server, isolatedServer]) {
  s.on('request', (req, res) => res.on('finish', () => {
    const path = new URL(req.url, 'http://x').pathname;
    if (res.statusCode === 200) sent.set(path, statSync(fileOf(path)).size);
  }));
}
const origin = (cfg) => `http://127.0.0.1:${(cfg.isolated ? isolatedServer : server).address().port}`;
const results = { date: new Date().toISOString().slice(0, 10), runs: RUNS, configs: [] };
try {
  for (const cfg of CONFIGS.filter((c) => c.name.includes(ONLY))) {
    sent.clear();
    const b = await browser({ webgpu: cfg.device === 'webgpu' });
    let r;
    try {
      await b.page.goto(`${origin(cfg)}/tests/browser/harness.html`);
      r = await b.page.evaluate(inPage, { cfg: { lib: cfg.lib, weights: cfg.weights, device: cfg.device, runs: cfg.runs, isolated: !!cfg.isolated, count: cfg.count }, shapes: cfg.shapes });
      r.peak_rss_bytes = rendererPeak();
      const files = [...sent].filter(([p]) => !p.startsWith('/tests/'));
      const isWeights = (p) => /\.(safetensors|onnx)$|tokenizer|config\.json|adapters\//.test(p);
      r.code_bytes = files.filter(([p]) => !isWeights(p)).reduce((a, [, n]) => a + n, 0);
      r.code_gzip_bytes = files.filter(([p]) => !isWeights(p)).reduce((a, [p]) => a + gzipped(p), 0);
      r.weight_bytes = files.filter(([p]) => isWeights(p)).reduce((a, [, n]) => a + n, 0);
      r.files = Object.fromEntries(files);
    } catch (e) {
      r = { error: String(e.message || e).split('\n')[0], console: b.console.slice(-5) };
    } finally {
      await b.close();
    }
    const { rows, soft_prompt: _sp, files: _f, ...head } = r;
    console.log(cfg.name, JSON.stringify(head));
    for (const row of rows || []) console.log(`  ${row.tokens} tokens x ${row.batch}: median ${row.median_ms} ms, p90 ${row.p90_ms} ms, first ${row.first_ms} ms`);
    results.configs.push({ ...cfg, shapes: undefined, ...r });
  }
  if (PAIRED.name.includes(ONLY)) {
    const b = await browser({ webgpu: false });
    try {
      await b.page.goto(`http://127.0.0.1:${isolatedServer.address().port}/tests/browser/harness.html`);
      results.paired = { name: PAIRED.name, configs: PAIRED.cfgs, ...(await b.page.evaluate(pairedInPage, { cfgs: PAIRED.cfgs, shapes: SHAPES, rounds: RUNS })) };
    } catch (e) {
      results.paired = { name: PAIRED.name, error: String(e.message || e).split('\n')[0], console: b.console.slice(-5) };
    } finally {
      await b.close();
    }
    const { rows, ...head } = results.paired;
    console.log(PAIRED.name, JSON.stringify(head));
    for (const r of rows || []) console.log(`  ${r.tokens} tokens x ${r.batch}: ${r.a.median_ms} against ${r.b.median_ms} ms, ratio of medians ${r.ratio_of_medians}, median of round ratios ${r.round_ratio_median}`);
  }
} finally {
  server.close();
  isolatedServer.close();
}

// The embeddings themselves: each configuration against transformers.js fp32 (the ONNX export of
// the same checkpoint) on every shape's first call.
const ref = results.configs.find((c) => c.lib === 'tjs' && c.weights === 'fp32' && c.device === 'wasm');
for (const c of results.configs) {
  for (const row of c.rows || []) {
    const want = ref?.rows?.find((r) => r.tokens === row.tokens && r.batch === row.batch)?.embedding;
    row.max_abs_diff_to_tjs_fp32 = want ? row.embedding.reduce((m, v, i) => Math.max(m, Math.abs(v - want[i])), 0) : null;
  }
}
// The threaded module against the single-threaded one: the same weights, the same texts.
for (const c of results.configs.filter((c) => c.lib === 'lopa' && c.isolated)) {
  const single = results.configs.find((o) => o.lib === 'lopa' && !o.isolated && o.weights === c.weights && o.device === c.device);
  for (const row of c.rows || []) {
    const want = single?.rows?.find((r) => r.tokens === row.tokens && r.batch === row.batch)?.embedding;
    row.bits_equal_to_one_thread = want ? want.length === row.embedding.length && row.embedding.every((v, i) => Object.is(v, want[i])) : null;
  }
}
// The soft prompt from int8 weights against f32 (same adapter, same input, CPU module).
const sp = (w) => results.configs.find((c) => c.lib === 'lopa' && c.weights === w && c.device === 'cpu' && !c.isolated)?.soft_prompt;
if (sp('f32') && sp('int8')) {
  results.soft_prompt_int8 = {
    max_abs_diff: sp('int8').reduce((m, v, i) => Math.max(m, Math.abs(v - sp('f32')[i])), 0),
    max_abs_f32: sp('f32').reduce((m, v) => Math.max(m, Math.abs(v)), 0),
  };
  console.log('soft prompt int8 vs f32:', JSON.stringify(results.soft_prompt_int8));
}
for (const c of results.configs) {
  delete c.soft_prompt;
  for (const row of c.rows || []) delete row.embedding;
}
if (OUT) writeFileSync(OUT, JSON.stringify(results, null, 1) + '\n');
console.log(JSON.stringify(results.configs.map((c) => [c.name, (c.rows || []).map((r) => r.max_abs_diff_to_tjs_fp32)])));
