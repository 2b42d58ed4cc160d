// The model side of the package: picking and loading the wasm module, whose client downloads its
// files (progress, the Cache API: lopa::web's code). Runs on the page or inside the Web Worker
// (worker.js); index.js is the public API over either.
const BACKENDS = ['auto', 'webgpu', 'cpu'];
const REQUEST_OPTIONS = ['dtype', 'maxTokens', 'temperature', 'topP', 'seed', 'stop', 'stream'];
// Three builds of the same crate: the small CPU-only module, the same with threads (a rayon pool
// on Web Workers sharing its memory: only where the page is cross-origin isolated, and only off
// the page's main thread, which may not block), and WebGPU + CPU (mostly the kernel compiler)
// fetched only when the browser offers a WebGPU adapter. Every path is a literal so that bundlers
// (Vite, webpack) see the files, emit them and rewrite the URLs.
const MODULES = {
  cpu: { glue: () => import('./wasm/lopa_cpu.js'), wasm: () => new URL('./wasm/lopa_cpu_bg.wasm', import.meta.url) },
  cpuThreads: { glue: () => import('./wasm/lopa_cpu_mt.js'), wasm: () => new URL('./wasm/lopa_cpu_mt_bg.wasm', import.meta.url) },
  webgpu: { glue: () => import('./wasm/lopa.js'), wasm: () => new URL('./wasm/lopa_bg.wasm', import.meta.url) },
};
const ready = {};

/** The WasmClient class of one module, initialised once per context (with its thread pool). */
export function wasmModule(kind, url, threads = 1) {
  ready[kind] ??= (async () => {
    const glue = await MODULES[kind].glue();
    await glue.default({ module_or_path: url ?? MODULES[kind].wasm() });
    if (kind === 'cpuThreads') await glue.initThreadPool(threads);
    return glue.WasmClient;
  })();
  return ready[kind];
}

/** Whether this context is a worker (where a wasm thread may block waiting for its pool). */
export const inWorker = typeof WorkerGlobalScope !== 'undefined' && globalThis instanceof WorkerGlobalScope;

/**
 * How many threads the CPU module gets: `threads` when given (1: the single-threaded module),
 * else the logical cores up to 8, as onnxruntime-web sizes its pool from them (it takes half, at
 * most 4, because its calling thread computes too; lopa's caller only waits). More than 1 only
 * where threads are possible: a cross-origin isolated context with SharedArrayBuffer.
 */
export function cpuThreads(threads) {
  if (threads !== undefined && !(Number.isInteger(threads) && threads >= 1 && threads <= 64)) {
    throw new Error(`lopa: threads must be a whole number from 1 to 64, got ${threads}`);
  }
  if (!globalThis.crossOriginIsolated || typeof SharedArrayBuffer !== 'function') return 1;
  return threads ?? Math.max(1, Math.min(8, (globalThis.navigator && navigator.hardwareConcurrency) || 1));
}

/**
 * The module a load runs: `{kind: 'cpu' | 'cpuThreads' | 'webgpu', threads, reason}` (`reason`:
 * why `auto` did not take WebGPU).
 */
export async function pickModule(backend, threads) {
  if (!BACKENDS.includes(backend)) throw new Error(`lopa: unknown backend \`${backend}\` (auto, webgpu, cpu)`);
  const n = cpuThreads(threads);
  const gpu = globalThis.navigator && navigator.gpu;
  if (backend === 'webgpu' && !gpu) throw new Error('lopa: WebGPU is not available here (navigator.gpu is missing)');
  let reason = null;
  if (backend === 'auto') {
    const adapter = gpu ? await gpu.requestAdapter().catch(() => null) : null;
    if (!adapter) reason = gpu ? 'navigator.gpu offers no adapter' : 'navigator.gpu is missing';
  }
  if (backend === 'webgpu' || (backend === 'auto' && !reason)) return { kind: 'webgpu', threads: 1, reason };
  return { kind: n > 1 ? 'cpuThreads' : 'cpu', threads: n, reason };
}

/** A wasm call whose failure becomes an Error with lopa's message (after `lopa: what: ` when given). */
async function call(what, f) {
  try {
    return await f();
  } catch (e) {
    if (e instanceof WebAssembly.RuntimeError) {
      throw new Error(`lopa: ${what}: internal error in the wasm module (${e.message}); reload the page`);
    }
    const message = e && e.message ? e.message : String(e);
    throw new Error(what ? `lopa: ${what}: ${message}` : message);
  }
}

/**
 * How a method's arguments reach the wasm client and its result comes back, where that is more
 * than passing them through: checks before the call, shapes after it. Every other method of
 * WasmClient is called as it is, so a new one needs no line here.
 */
const METHODS = {
  softPrompt: { result: (data, inner) => ({ data, shape: Array.from(inner.shape) }) },
  embed: {
    args: (texts) => {
      if (!Array.isArray(texts) || texts.some((t) => typeof t !== 'string')) throw new Error('lopa: embed: expected a string or a list of strings');
      return [texts];
    },
    result: (data, inner, [texts]) => ({ data, shape: [texts.length, inner.embeddingSize] }),
  },
  encodeRequest: {
    args: (input, options = {}) => [input, Object.fromEntries(REQUEST_OPTIONS.filter((k) => options[k] !== undefined).map((k) => [k, options[k]]))],
    result: (r) => ({ ...r, body: new TextEncoder().encode(r.body), softPrompt: { ...r.softPrompt, data: Float32Array.from(r.softPrompt.data) } }),
  },
  importAdapter: { args: (bytes) => [new Uint8Array(bytes)] },
};
// Answers read from the server: their errors are the server's messages, without a prefix.
const UNPREFIXED = new Set(['readAnswer', 'readChunk']);
// What a call may name: WasmClient's own methods, never Object's or the lifecycle's.
const RESERVED = new Set(['constructor', 'free', 'load', '__destroy_into_raw']);

/** The ArrayBuffers inside a result, handed over rather than copied when it leaves a worker. */
export function transferables(result) {
  if (ArrayBuffer.isView(result)) return [result.buffer];
  if (!result || typeof result !== 'object') return [];
  return Object.values(result).flatMap((v) => (ArrayBuffer.isView(v) ? [v.buffer] : v && typeof v === 'object' && !Array.isArray(v) ? transferables(v) : []));
}

/** Encoder + generator in this context. */
export class Core {
  constructor(inner, fallbackReason) {
    this.inner = inner;
    this.fallbackReason = fallbackReason;
  }

  /** `pick`: the module, when the caller picked it already (pickModule). */
  static async load({ encoder, adapter, tokenizer, backend = 'auto', threads, onProgress, cache = true, wasm = {}, pick } = {}) {
    const { kind, threads: n, reason } = pick ?? (await pickModule(backend, threads));
    if (kind === 'cpuThreads' && !inWorker) throw new Error('lopa: the threaded CPU module runs in a worker (the page may not block)');
    const WasmClient = await call('load', () => wasmModule(kind, wasm[kind], n));
    // The module downloads the files (progress, the Cache API) as lopa::web does in Rust apps.
    const inner = await call('load', () => WasmClient.load(encoder, tokenizer, adapter, kind === 'webgpu' ? backend : 'cpu', cache, onProgress ?? null));
    return new Core(inner, reason ?? inner.fallbackReason ?? null);
  }

  info() {
    return {
      backend: this.inner.backend,
      threads: this.inner.threads,
      worker: inWorker,
      fallbackReason: this.fallbackReason,
      shape: Array.from(this.inner.shape),
      adapter: this.inner.adapter,
    };
  }

  /** Any method of the wasm client by name, through METHODS where it has an entry. */
  async call(method, ...args) {
    if (!this.inner) throw new Error('lopa: the client is not loaded (or was disposed)');
    if (RESERVED.has(method) || typeof this.inner[method] !== 'function') throw new Error(`lopa: unknown method \`${method}\``);
    const how = METHODS[method] ?? {};
    const input = how.args ? how.args(...args) : args;
    const out = await call(UNPREFIXED.has(method) ? null : method, () => this.inner[method](...input));
    return how.result ? how.result(out, this.inner, input) : out;
  }

  dispose() {
    if (this.inner) this.inner.free();
    this.inner = null;
  }
}
