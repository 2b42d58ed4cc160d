//! wasm-bindgen exports for the browser package (`pkg/`): `lopa::web`'s client for JS. It loads
//! as `web::Client` does (downloads with progress, the Cache API, the device), and requests are
//! built and answers read by the same Rust types the server uses (`crate::wire`), passed as JS
//! objects through serde-wasm-bindgen. The JS wrapper (`pkg/index.js`) picks the module and runs
//! the Web Worker. It is built three times: `browser` (CPU only, small), `browser-threads` (the
//! same on a rayon pool of Web Workers) and `browser-webgpu` (WebGPU + CPU). Every failure comes
//! back as a JS `Error` with lopa's message; nothing here reads a tensor synchronously (WebGPU
//! forbids it).

use crate::client::personalize::{LabelledInput, PersonalizeOptions, Personalizer};
use crate::client::{Client, Input, Query, RequestOptions};
use super::{LoadOptions, Progress, Source, Sources};
use crate::wire::GRADIENT_PATH;
use serde::Serialize;
use crate::error::{Error, Result};
use wasm_bindgen::prelude::*;

/// `initThreadPool(n)` (wasm-bindgen-rayon): starts `n` Web Workers sharing this module's memory as
/// rayon's global pool. Called once, from a worker: a page's main thread may not block, and a
/// rayon caller blocks until its pool is done.
#[cfg(feature = "browser-threads")]
pub use wasm_bindgen_rayon::init_thread_pool;

fn js(e: Error) -> JsError {
    JsError::new(&e.to_string())
}

/// A Rust value as a plain JS object (maps as objects, not `Map`).
fn to_js<T: Serialize>(v: &T) -> Result<JsValue, JsError> {
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).map_err(|e| JsError::new(&e.to_string()))
}

/// A JS value as a Rust value, naming the argument in the error.
fn from_js<T: serde::de::DeserializeOwned>(what: &str, v: JsValue) -> Result<T, JsError> {
    serde_wasm_bindgen::from_value(v).map_err(|e| JsError::new(&format!("{what}: {e}")))
}

/// The encoder and a trained generator, ready to make soft prompts.
#[wasm_bindgen]
pub struct WasmClient {
    web: super::Client,
    /// Personalisation in progress (`personalizeStart` … `personalizeFinish`).
    personalizer: Option<Personalizer>,
}

/// What `encodeRequest` returns: the request as it leaves the browser.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Encoded {
    path: &'static str,
    /// `score` (classification) or `completion` (generation).
    kind: &'static str,
    /// The exact JSON body.
    body: String,
    /// The query text the server sees.
    prompt: String,
    /// The soft prompt as the body carries it (values after the wire's dtype).
    soft_prompt: Sent,
}

/// A soft prompt as a request carries it.
#[derive(Serialize)]
struct Sent {
    data: Vec<f32>,
    shape: [usize; 2],
    dtype: &'static str,
}

#[wasm_bindgen]
impl WasmClient {
    /// Load the encoder bundle, `tokenizer.json` and the adapter bundle, each a URL or its bytes
    /// (`Uint8Array`, `ArrayBuffer`). `backend`: `auto` (WebGPU when it works, else CPU), `webgpu`
    /// or `cpu`; `cache`: keep downloads in the Cache API; `onProgress({file, loaded, total, cached})`.
    pub async fn load(encoder: JsValue, tokenizer: JsValue, adapter: JsValue, backend: String, cache: bool, on_progress: Option<js_sys::Function>) -> Result<WasmClient, JsError> {
        let sources = Sources { encoder: source("encoder", encoder)?, tokenizer: source("tokenizer", tokenizer)?, adapter: source("adapter", adapter)? };
        let mut options = LoadOptions::default().backend(backend.parse().map_err(js)?).cache(cache);
        if let Some(f) = on_progress {
            options = options.on_progress(move |p: &Progress| {
                // A throwing callback is the page's affair; the load goes on.
                let _ = f.call1(&JsValue::NULL, &progress_object(p));
            });
        }
        Ok(WasmClient { web: super::Client::load(sources, options).await.map_err(js)?, personalizer: None })
    }

    /// `webgpu` or `cpu`: what actually runs.
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        self.web.backend().name().into()
    }

    /// Threads computing this client's CPU work: the rayon pool's size in the threaded module, 1
    /// in the others (WebGPU's work runs on the GPU).
    #[wasm_bindgen(getter)]
    pub fn threads(&self) -> u32 {
        self.web.threads() as u32
    }

    /// Why `auto` fell back to the CPU, if it did.
    #[wasm_bindgen(getter, js_name = fallbackReason)]
    pub fn fallback_reason(&self) -> Option<String> {
        self.web.fallback_reason().map(str::to_string)
    }

    /// `[m, d]` of every soft prompt this adapter makes.
    #[wasm_bindgen(getter)]
    pub fn shape(&self) -> Vec<u32> {
        let g = &self.client().generator.config;
        vec![g.prompt_len() as u32, g.token_dim as u32]
    }

    /// `adapter.json` as an object (sizes, task with its template and label words, model identities).
    #[wasm_bindgen(getter)]
    pub fn adapter(&self) -> Result<JsValue, JsError> {
        to_js(&self.client().meta)
    }

    /// The soft prompt of `input` (a string, or an object of the task's fields), row-major `[m, d]`.
    #[wasm_bindgen(js_name = softPrompt)]
    pub async fn soft_prompt(&self, input: JsValue) -> Result<Vec<f32>, JsError> {
        Ok(self.run(input).await?.soft_prompt.into_values())
    }

    /// Sentence embeddings of `texts` from the encoder alone (its pooling and normalisation),
    /// row-major `[n, h]`. Texts of different lengths are padded to the longest and masked.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<f32>, JsError> {
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let e = self.client().encoder.embed(&texts, &self.client().device).map_err(js)?;
        crate::device::to_vec_async(e).await.map_err(js)
    }

    /// Width of an embedding (the encoder's hidden size).
    #[wasm_bindgen(getter, js_name = embeddingSize)]
    pub fn embedding_size(&self) -> u32 {
        self.client().encoder.hidden_size() as u32
    }

    /// `{path, kind, body, prompt, softPrompt: {data, shape, dtype}}`: the request that carries the input's soft prompt to `lopa serve`.
    /// `options`: `{dtype, maxTokens, temperature, topP, seed, stop, stream}`.
    #[wasm_bindgen(js_name = encodeRequest)]
    pub async fn encode_request(&self, input: JsValue, options: JsValue) -> Result<JsValue, JsError> {
        let options: RequestOptions = if options.is_undefined() || options.is_null() { RequestOptions::default() } else { from_js("options", options)? };
        let q = self.run(input).await?;
        let req = self.client().request(&q, &options);
        // What the server will read: the values after the wire's rounding (f16 by default).
        let sent = q.sent(options.dtype).map_err(js)?;
        let soft_prompt = Sent { data: sent.values().to_vec(), shape: [sent.rows(), sent.width()], dtype: options.dtype.as_str() };
        to_js(&Encoded { path: req.path(), kind: req.kind(), body: req.body(), prompt: q.prompt, soft_prompt })
    }

    /// `lopa serve`'s answer (HTTP `status`, `body` text) to a request encoded here, read with
    /// the task: `{kind: 'classification', label, labelWord, probabilities}` or
    /// `{kind: 'generation', text, finishReason}`.
    #[wasm_bindgen(js_name = readAnswer)]
    pub fn read_answer(&self, path: String, status: u16, body: String) -> Result<JsValue, JsError> {
        to_js(&self.client().read_answer(&path, status, body.as_bytes()).map_err(js)?)
    }

    /// Start personalising this client's adapter on `examples` (`[{input, label}]`: a label value
    /// of a classifier, or the answer text) with `options` (`{optimizer, learningRate, batchSize,
    /// weightDecay, epsilon, seed, fromScratch}`). The generator trains on this client's device.
    #[wasm_bindgen(js_name = personalizeStart)]
    pub async fn personalize_start(&mut self, examples: JsValue, options: JsValue) -> Result<(), JsError> {
        let examples: Vec<LabelledInput> = from_js("examples must be an array of {input, label}", examples)?;
        let options: PersonalizeOptions = if options.is_undefined() || options.is_null() { PersonalizeOptions::default() } else { from_js("options", options)? };
        let texts = self.client().training_texts(&examples).map_err(js)?;
        let device = self.client().device.clone().autodiff();
        self.personalizer = Some(Personalizer::new_async(self.client(), &texts, options, &device).await.map_err(js)?);
        Ok(())
    }

    /// `{path, body}`: the next step's request to `lopa serve` (soft prompts, prompts, targets).
    #[wasm_bindgen(js_name = personalizeRequest)]
    pub async fn personalize_request(&mut self) -> Result<JsValue, JsError> {
        let p = self.personalizer.as_mut().ok_or_else(|| JsError::new("personalizeStart was not called"))?;
        let request = p.next_request_async().await.map_err(js)?;
        to_js(&serde_json::json!({"path": GRADIENT_PATH, "body": serde_json::to_string(&request).expect("json")}))
    }

    /// Apply `lopa serve`'s answer (HTTP `status`, `body` text) to the last request: one AdamW
    /// step. Returns `{step, loss}`.
    #[wasm_bindgen(js_name = personalizeApply)]
    pub fn personalize_apply(&mut self, status: u16, body: String) -> Result<JsValue, JsError> {
        let p = self.personalizer.as_mut().ok_or_else(|| JsError::new("personalizeStart was not called"))?;
        to_js(&p.apply_http(status, body.as_bytes()).map_err(js)?)
    }

    /// Make the personalised generator this client's: soft prompts from now on come from it.
    #[wasm_bindgen(js_name = personalizeFinish)]
    pub async fn personalize_finish(&mut self) -> Result<(), JsError> {
        let p = self.personalizer.take().ok_or_else(|| JsError::new("personalizeStart was not called"))?;
        let adapter = p.adapter_async().await.map_err(js)?;
        self.use_adapter(adapter)
    }

    /// Replace this client's adapter with one file of that format (from `exportAdapter`), refused
    /// when it was trained with another encoder.
    #[wasm_bindgen(js_name = importAdapter)]
    pub fn import_adapter(&mut self, bytes: Vec<u8>) -> Result<(), JsError> {
        self.personalizer = None;
        self.use_adapter(crate::adapter::Adapter::from_bundle(&bytes).map_err(js)?)
    }

    /// This client's adapter as one file (f32), in the format `lopa export-web` writes: what
    /// `LopaClient.load({adapter})` and `lopa soft-prompt --bundle` read.
    #[wasm_bindgen(js_name = exportAdapter)]
    pub async fn export_adapter(&self) -> Result<Vec<u8>, JsError> {
        Ok(self.web.adapter().await.map_err(js)?.bundle(crate::model::weights::safetensors::StoreAs::F32))
    }

    /// One server-sent event's data of a streamed completion: `{text, finishReason}`.
    #[wasm_bindgen(js_name = readChunk)]
    pub fn read_chunk(&self, data: String) -> Result<JsValue, JsError> {
        to_js(&Client::read_chunk(&data).map_err(js)?)
    }
}

impl WasmClient {
    fn client(&self) -> &Client {
        self.web.inner()
    }

    /// The same encoder with another adapter (refused when trained with another encoder).
    fn use_adapter(&mut self, adapter: crate::adapter::Adapter) -> Result<(), JsError> {
        self.web.use_adapter(adapter).map_err(js)
    }

    async fn run(&self, input: JsValue) -> Result<Query, JsError> {
        let input: Input = from_js("input must be a string or an object of strings", input)?;
        self.client().query_async(&input).await.map_err(js)
    }
}

/// A file's source from JS: a URL (a string or a `URL`) or bytes.
fn source(file: &str, v: JsValue) -> Result<Source, JsError> {
    if let Some(url) = v.as_string() {
        return Ok(Source::Url(url));
    }
    if let Some(bytes) = v.dyn_ref::<js_sys::Uint8Array>() {
        return Ok(Source::Bytes(bytes.to_vec()));
    }
    if v.is_instance_of::<js_sys::ArrayBuffer>() {
        return Ok(Source::Bytes(js_sys::Uint8Array::new(&v).to_vec()));
    }
    if let Some(url) = v.dyn_ref::<web_sys::Url>() {
        return Ok(Source::Url(url.href()));
    }
    let got = if v.is_undefined() { "nothing".to_string() } else { v.js_typeof().as_string().unwrap_or_default() };
    Err(JsError::new(&format!("{file}: expected a URL or bytes, got {got}")))
}

/// `{file, loaded, total, cached}`, as the package's `onProgress` receives it.
fn progress_object(p: &Progress) -> JsValue {
    let o = js_sys::Object::new();
    let set = |k: &str, v: JsValue| {
        let _ = js_sys::Reflect::set(&o, &k.into(), &v);
    };
    set("file", p.file.name().into());
    set("loaded", (p.loaded as f64).into());
    set("total", p.total.map_or(JsValue::NULL, |t| (t as f64).into()));
    set("cached", p.cached.into());
    o.into()
}
