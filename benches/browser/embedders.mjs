// Runs in the page (compare.mjs serves it at /bench/embedders.mjs): one way to load each library
// as a sentence embedder, for the per-configuration runs and the paired run alike.

/**
 * Load `cfg` ({lib: 'lopa'|'tjs', weights, device, count}) and return
 * {embed(texts) -> number[], info, loadMs}; `probe` is one text whose soft prompt (lopa) or token
 * count (transformers.js) goes into `info`.
 */
export async function load(cfg, probe) {
  const t0 = performance.now();
  if (cfg.lib === 'lopa') {
    const { LopaClient } = await import('/pkg/index.js');
    const dir = cfg.weights === 'f32' ? '/lopa-f32' : '/lopa-int8';
    const client = await LopaClient.load({ encoder: `${dir}/encoder.safetensors`, tokenizer: `${dir}/tokenizer.json`, adapter: `${dir}/adapters/sst2.safetensors`, backend: cfg.device, cache: false });
    const loadMs = performance.now() - t0;
    // The trained adapter's soft prompt, to measure what int8 weights do to it.
    const sp = await client.softPrompt(probe);
    return {
      embed: async (texts) => Array.from((await client.embed(texts)).data),
      info: { backend: client.backend, threads: client.threads, worker: client.worker, soft_prompt: Array.from(sp.data) },
      loadMs,
    };
  }
  const T = await import('/bench/node_modules/@huggingface/transformers/dist/transformers.min.js');
  T.env.allowRemoteModels = false;
  T.env.allowLocalModels = true;
  T.env.localModelPath = '/onnx/';
  T.env.useBrowserCache = false;
  const ort = '/bench/node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.asyncify';
  T.env.backends.onnx.wasm.wasmPaths = { mjs: `${ort}.mjs`, wasm: `${ort}.wasm` };
  // On an isolated page onnxruntime-web picks its own count unless told; 'lopa': the count
  // lopa's package picks by default there.
  if (cfg.count === 'lopa') T.env.backends.onnx.wasm.numThreads = Math.min(8, navigator.hardwareConcurrency);
  const extractor = await T.pipeline('feature-extraction', 'minilm', { dtype: cfg.weights, device: cfg.device });
  const loadMs = performance.now() - t0;
  const tok = extractor.tokenizer(probe);
  return {
    embed: async (texts) => {
      const out = await extractor(texts, { pooling: 'mean', normalize: true });
      if (out.dims[0] !== texts.length) throw new Error(`dims ${out.dims}`);
      return Array.from(out.data);
    },
    // onnxruntime-web writes the count it chose back into env once its backend is initialised.
    info: { backend: cfg.device, threads: T.env.backends.onnx.wasm.numThreads ?? null, first_input_tokens: tok.input_ids.dims[1] },
    loadMs,
  };
}

/** {median_ms, p90_ms} of a list of times. */
export function stats(times) {
  const s = [...times].sort((a, b) => a - b);
  return { median_ms: +s[s.length >> 1].toFixed(2), p90_ms: +s[Math.min(s.length - 1, Math.floor(s.length * 0.9))].toFixed(2) };
}

/** The median of a list of numbers. */
export const median = (v) => [...v].sort((a, b) => a - b)[v.length >> 1];
