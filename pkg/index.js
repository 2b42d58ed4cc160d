// lopa: LoPA soft prompts computed in the browser. The encoder and the task adapter run here
// (WebGPU, or the CPU through wasm); only the soft prompt and the query go to `lopa serve`.
import { Core, inWorker, pickModule } from './core.js';

/** Runs Core inside a Web Worker and forwards calls to it. */
class WorkerCore {
  constructor(worker, onProgress) {
    this.worker = worker;
    this.pending = new Map();
    this.next = 0;
    worker.onmessage = ({ data }) => {
      if (data.progress) return onProgress && onProgress(data.progress);
      const p = this.pending.get(data.id);
      if (!p) return;
      this.pending.delete(data.id);
      data.error !== undefined ? p.reject(new Error(data.error)) : p.resolve(data.result);
    };
    worker.onerror = (e) => {
      for (const p of this.pending.values()) p.reject(new Error(`lopa: the worker failed: ${e.message}`));
      this.pending.clear();
    };
  }
  call(method, ...args) {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, method, args });
    });
  }
}

/**
 * Split an OpenAI-style server-sent-event stream into its data payloads; readChunk reads each
 * (the wasm module's wire types), onText gets each text piece.
 */
async function readEvents(response, readChunk, onText) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let text = '';
  let finishReason = null;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split('\n')) {
        if (!line.startsWith('data: ')) continue;
        const payload = line.slice(6);
        if (payload === '[DONE]') return { text, finishReason };
        const chunk = await readChunk(payload);
        const piece = chunk.text;
        finishReason = chunk.finishReason ?? finishReason;
        if (piece) {
          text += piece;
          onText && onText(piece);
        }
      }
    }
  }
  return { text, finishReason };
}

export class LopaClient {
  constructor(core, info) {
    this.core = core;
    this.info = info;
  }

  /**
   * Load the encoder, its tokenizer and a task adapter (URLs or bytes) and pick a backend.
   * Options: backend ('auto' | 'webgpu' | 'cpu'), threads (the CPU module's threads; default: the
   * logical cores up to 8 where the page is cross-origin isolated, else 1), onProgress({file,
   * loaded, total, cached}), worker (run in a Web Worker; the threaded CPU module always does, so
   * on a page it is the default there, and `worker: false` keeps one thread on the page), cache
   * (Cache API, default true), wasm ({cpu, cpuThreads, webgpu}: module URLs).
   */
  static async load(options = {}) {
    let { worker, ...rest } = options;
    if (!inWorker && worker !== true) {
      if (worker === false && options.threads > 1) throw new Error('lopa: threads need a worker (the page may not block); leave `worker` unset');
      rest.pick = await pickModule(options.backend ?? 'auto', worker === false ? 1 : options.threads);
      worker = rest.pick.kind === 'cpuThreads';
    }
    if (worker) {
      const worker_ = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
      const core = new WorkerCore(worker_, options.onProgress);
      delete rest.onProgress;
      try {
        const info = await core.call('load', rest);
        return new LopaClient(core, info);
      } catch (e) {
        worker_.terminate();
        throw e;
      }
    }
    const core = await Core.load(rest);
    return new LopaClient(core, core.info());
  }

  /** 'webgpu' or 'cpu': the backend that actually runs. */
  get backend() {
    return this.info.backend;
  }
  /** Threads computing on the CPU: the pool of the threaded module, else 1. */
  get threads() {
    return this.info.threads;
  }
  /** Whether the model runs in a Web Worker. */
  get worker() {
    return this.info.worker;
  }
  /** Why 'auto' fell back to the CPU (null when it did not). */
  get fallbackReason() {
    return this.info.fallbackReason;
  }
  /** [m, d] of every soft prompt. */
  get shape() {
    return this.info.shape;
  }
  /** The adapter's metadata: method, sizes, task (template, label words), model identities. */
  get adapter() {
    return this.info.adapter;
  }

  #live() {
    if (!this.core) throw new Error('lopa: this client was disposed');
    return this.core;
  }
  #run(method, ...args) {
    return this.#live().call(method, ...args);
  }

  /** Soft prompts computed on this device so far (by softPrompt, encodeRequest and complete): a
   * page can show that the work happened here. */
  computations = 0;

  /** The soft prompt of a text (or of an object of the task's fields): {data, shape: [m, d]}. */
  softPrompt(input) {
    this.computations++;
    return this.#run('softPrompt', input);
  }

  /**
   * Sentence embeddings from the encoder alone (no adapter): a text or a list of texts gives
   * {data (row-major Float32Array), shape: [n, h]}. A list runs as one batch.
   */
  embed(texts) {
    return this.#run('embed', typeof texts === 'string' ? [texts] : texts);
  }

  /**
   * The exact request that would leave the browser for this input: {path, kind ('score' |
   * 'completion'), body (Uint8Array of JSON), prompt, softPrompt: {data, shape, dtype} (the values
   * as the body carries them)}. Options: dtype ('f16' default | 'f32'), maxTokens, temperature, topP, seed,
   * stop, stream.
   */
  encodeRequest(input, options = {}) {
    const { onToken, signal, ...rest } = options;
    this.computations++;
    return this.#run('encodeRequest', input, rest);
  }

  /**
   * Compute the soft prompt here and ask `lopa serve` at endpointUrl. Classification adapters
   * return {kind: 'classification', label, labelWord, probabilities}; generation adapters
   * {kind: 'generation', text, finishReason} (streamed through options.onToken when given).
   * Every result also has `request`: {path, bytes}.
   */
  async complete(endpointUrl, input, options = {}) {
    const req = await this.encodeRequest(input, { ...options, stream: !!options.onToken || undefined });
    return this.send(endpointUrl, req, options);
  }

  /**
   * Send a request made by encodeRequest (so that a page can show it, then send exactly it,
   * computing the soft prompt once) and read the answer as complete() does. A request encoded
   * with {stream: true} is read as server-sent events, each piece passed to options.onToken.
   */
  async send(endpointUrl, req, options = {}) {
    const url = endpointUrl.replace(/\/+$/, '') + req.path;
    let response;
    try {
      response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: req.body, signal: options.signal });
    } catch (e) {
      throw new Error(`lopa: could not reach ${url} (${e.message})`);
    }
    const request = { path: req.path, bytes: req.body.length };
    if (response.ok && (response.headers.get('content-type') || '').startsWith('text/event-stream')) {
      const events = await readEvents(response, (data) => this.#run('readChunk', data), options.onToken || (() => {}));
      return { kind: 'generation', ...events, request };
    }
    // The label order, probabilities and refusals are read by the wasm module's wire types.
    const answer = await this.#run('readAnswer', req.path, response.status, await response.text());
    return { ...answer, request };
  }

  /**
   * Personalise this client's adapter on the user's own labelled examples, here: the generator
   * trains on this device, and `lopa serve` at endpointUrl answers only dLoss/dZ
   * (`/v1/soft_prompt_grad`). Each step sends the examples' prompt text, their target (label word
   * or answer) and soft prompts; never the adapter. examples: [{input, label}] (a label value of
   * a classifier, or the answer text). Options: steps (32), learningRate (1e-3), batchSize (8),
   * weightDecay (0), seed (0), fromScratch (fresh weights of the adapter's shape instead of its
   * trained ones), onStep({step, loss, seconds}), signal (an AbortSignal: stops
   * between steps, keeping the steps done). When it ends, soft prompts come from the personalised
   * adapter; exportAdapter() returns it as one file. Returns {steps, loss}.
   */
  async personalize(endpointUrl, examples, options = {}) {
    const { steps = 32, onStep, signal, optimizer, learningRate, batchSize, weightDecay, epsilon, seed, fromScratch } = options;
    const train = Object.fromEntries(Object.entries({ optimizer, learningRate, batchSize, weightDecay, epsilon, seed, fromScratch }).filter(([, v]) => v !== undefined));
    await this.#run('personalizeStart', examples, train);
    let last = { step: 0, loss: null };
    try {
      for (let i = 0; i < steps && !(signal && signal.aborted); i++) {
        const t0 = performance.now();
        const req = await this.#run('personalizeRequest');
        const url = endpointUrl.replace(/\/+$/, '') + req.path;
        let response;
        try {
          response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: req.body, signal });
        } catch (e) {
          if (signal && signal.aborted) break;
          throw new Error(`lopa: could not reach ${url} (${e.message})`);
        }
        last = await this.#run('personalizeApply', response.status, await response.text());
        onStep && onStep({ ...last, seconds: (performance.now() - t0) / 1000 });
      }
    } finally {
      await this.#run('personalizeFinish');
    }
    return { steps: last.step, loss: last.loss };
  }

  /**
   * Replace this client's adapter with one file of that format (from exportAdapter or
   * loadSavedAdapter); an adapter trained with another encoder is refused.
   */
  async importAdapter(bytes) {
    await this.#run('importAdapter', bytes);
    this.info = this.core instanceof WorkerCore ? await this.core.call('info') : this.core.info();
  }

  /** This client's adapter (personalised or not) as one file, as `lopa export-web` writes it: Uint8Array. */
  exportAdapter() {
    return this.#run('exportAdapter');
  }

  /** Free the model (GPU buffers included) and stop the worker. */
  async dispose() {
    const core = this.core;
    this.core = null;
    if (!core) return;
    if (core instanceof WorkerCore) {
      await core.call('dispose').catch(() => {});
      core.worker.terminate();
    } else {
      core.dispose();
    }
  }
}

/**
 * Keep an adapter file on this device only, in the origin-private file system: saveAdapter(name,
 * bytes) and loadSavedAdapter(name) (Uint8Array, or null when there is none). Load a client with
 * it: LopaClient.load({..., adapter: bytes}).
 */
export async function saveAdapter(name, bytes) {
  const dir = await adapterDir();
  const file = await dir.getFileHandle(fileName(name), { create: true });
  const w = await file.createWritable();
  await w.write(bytes);
  await w.close();
}

export async function loadSavedAdapter(name) {
  const dir = await adapterDir();
  try {
    const file = await dir.getFileHandle(fileName(name));
    return new Uint8Array(await (await file.getFile()).arrayBuffer());
  } catch (e) {
    if (e && e.name === 'NotFoundError') return null;
    throw e;
  }
}

async function adapterDir() {
  if (!globalThis.navigator || !navigator.storage || !navigator.storage.getDirectory) throw new Error('lopa: this browser has no origin-private file system');
  return (await navigator.storage.getDirectory()).getDirectoryHandle('lopa-adapters', { create: true });
}

function fileName(name) {
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(name)) throw new Error(`lopa: adapter name \`${name}\` must be 1 to 64 letters, digits, '_', '.' or '-'`);
  return `${name}.safetensors`;
}
