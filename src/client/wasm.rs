//! wasm-bindgen exports for the browser package (`pkg/`). The JS wrapper (`pkg/index.js`) adds
//! downloads with progress, the Cache API and the Web Worker; this module holds the model. It is
//! built twice: `browser` (CPU only, small) and `browser-webgpu` (WebGPU + CPU).
//! Every failure comes back as a JS `Error` with lopa's message; nothing here reads a tensor
//! synchronously (WebGPU forbids it).

use crate::client::{Client, Input, Query, RequestOptions};
use crate::error::{Error, Result};
use burn::tensor::Device;
use wasm_bindgen::prelude::*;

#[cfg(feature = "browser-webgpu")]
thread_local! {
    /// A page can initialise burn's WebGPU runtime once; later clients reuse the device.
    static WEBGPU: std::cell::RefCell<Option<Device>> = const { std::cell::RefCell::new(None) };
}

fn js(e: Error) -> JsError {
    JsError::new(&e.to_string())
}

/// This module was built without WebGPU (the CPU module of the package).
#[cfg(not(feature = "browser-webgpu"))]
async fn webgpu() -> Result<Device> {
    Err(Error::Backend("this is the CPU build of lopa (lopa_cpu_bg.wasm); WebGPU needs lopa_bg.wasm".into()))
}

/// Open WebGPU and check it with one small kernel read back asynchronously.
#[cfg(feature = "browser-webgpu")]
async fn webgpu() -> Result<Device> {
    if let Some(d) = WEBGPU.with(|w| w.borrow().clone()) {
        return Ok(d);
    }
    let device = Device::wgpu_options().init_async().await.map_err(|e| Error::Backend(format!("WebGPU: {e}")))?;
    let x = burn::tensor::Tensor::<1>::from_floats([1.0, 2.0], &device);
    let s = (x.clone() * x).sum().into_data_async().await.map_err(|e| Error::Backend(format!("WebGPU: {e:?}")))?;
    let s = s.try_to_vec::<f32>().map_err(|e| Error::Backend(format!("WebGPU: {e:?}")))?;
    if s != [5.0] {
        return Err(Error::Backend(format!("WebGPU: a test kernel returned {s:?}, not [5.0]")));
    }
    WEBGPU.with(|w| *w.borrow_mut() = Some(device.clone()));
    Ok(device)
}

/// The encoder and a trained generator, ready to make soft prompts.
#[wasm_bindgen]
pub struct WasmClient {
    client: Client,
    backend: String,
    fallback_reason: Option<String>,
}

#[wasm_bindgen]
impl WasmClient {
    /// Load from the bytes of the encoder bundle, `tokenizer.json` and the adapter bundle.
    /// `backend`: `auto` (WebGPU when it works, else CPU), `webgpu` or `cpu`.
    pub async fn load(encoder: Vec<u8>, tokenizer: Vec<u8>, adapter: Vec<u8>, backend: String) -> Result<WasmClient, JsError> {
        let (device, backend, fallback_reason) = match backend.as_str() {
            "cpu" => (Device::flex(), "cpu", None),
            "webgpu" => (webgpu().await.map_err(js)?, "webgpu", None),
            "auto" => match webgpu().await {
                Ok(d) => (d, "webgpu", None),
                Err(e) => (Device::flex(), "cpu", Some(e.to_string())),
            },
            other => return Err(JsError::new(&format!("unknown backend `{other}` (auto, webgpu, cpu)"))),
        };
        let client = Client::from_bundles(&encoder, &tokenizer, &adapter, &device).map_err(js)?;
        Ok(WasmClient { client, backend: backend.into(), fallback_reason })
    }

    /// `webgpu` or `cpu`: what actually runs.
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        self.backend.clone()
    }

    /// Why `auto` fell back to the CPU, if it did.
    #[wasm_bindgen(getter, js_name = fallbackReason)]
    pub fn fallback_reason(&self) -> Option<String> {
        self.fallback_reason.clone()
    }

    /// `[m, d]` of every soft prompt this adapter makes.
    #[wasm_bindgen(getter)]
    pub fn shape(&self) -> Vec<u32> {
        let g = &self.client.generator.config;
        vec![g.prompt_len() as u32, g.token_dim as u32]
    }

    /// `adapter.json` (method, sizes, task with its template and label words, model identities).
    #[wasm_bindgen(getter, js_name = adapterJson)]
    pub fn adapter_json(&self) -> String {
        serde_json::to_string(&self.client.meta).expect("json")
    }

    /// The soft prompt of `input_json` (a JSON string, or an object of the task's fields),
    /// row-major `[m, d]`.
    #[wasm_bindgen(js_name = softPrompt)]
    pub async fn soft_prompt(&self, input_json: String) -> Result<Vec<f32>, JsError> {
        Ok(self.run(&input_json).await?.soft_prompt.into_values())
    }

    /// The JSON `{path, body, prompt, softPrompt}` of the request that carries the input's soft
    /// prompt to `lopa serve`. `options_json`: `{dtype, maxTokens, temperature, topP, seed, stop, stream}`.
    #[wasm_bindgen(js_name = encodeRequest)]
    pub async fn encode_request(&self, input_json: String, options_json: String) -> Result<String, JsError> {
        let options: RequestOptions = serde_json::from_str(&options_json).map_err(|e| JsError::new(&format!("options: {e}")))?;
        let q = self.run(&input_json).await?;
        let req = self.client.request(&q, &options);
        Ok(serde_json::json!({"path": req.path(), "body": req.body(), "prompt": q.prompt}).to_string())
    }
}

impl WasmClient {
    async fn run(&self, input_json: &str) -> Result<Query, JsError> {
        let input: Input = serde_json::from_str(input_json).map_err(|e| JsError::new(&format!("input must be a string or an object of strings: {e}")))?;
        self.client.query_async(&input).await.map_err(js)
    }
}
