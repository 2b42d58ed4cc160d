//! The client side of LoPA: everything that runs on the user's device. The sentence encoder and
//! the trained generator turn an input into its soft prompt, and the request for `lopa serve`
//! carries only that soft prompt and the query; the adapter's weights never leave the device.
//! The browser package (`crate::wasm`) and native callers share this one mechanism.

use crate::adapter::{check_identity, Adapter, AdapterMeta};
use crate::encoder::SentenceEncoder;
use crate::error::{Error, Result};
use crate::generator::PromptGenerator;
use crate::tasks::{TaskKind, TaskSpec};
use crate::wire::WireSoftPrompt;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An input: one text for tasks with one field, or the task's named fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Input {
    Text(String),
    Fields(BTreeMap<String, String>),
}

/// A soft prompt on the host: `values` is row-major `[rows, width]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SoftPrompt {
    pub values: Vec<f32>,
    pub rows: usize,
    pub width: usize,
    /// The text sent with it (the task template filled with the input).
    pub prompt: String,
}

/// Options of a request to `lopa serve` (camelCase, as the JS API passes them).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestOptions {
    /// `f16` (default, half the bytes) or `f32`.
    pub dtype: Option<String>,
    pub max_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub seed: Option<u64>,
    pub stop: Option<Vec<String>>,
    pub stream: bool,
}

/// One HTTP request for `lopa serve`: POST `body` (JSON) to `path`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientRequest {
    pub path: String,
    pub body: String,
}

/// Whether an adapter can run on the client with this encoder: it makes soft prompts (LoRA
/// changes the server's model) and was trained with this encoder.
pub fn check_runs_on_client(meta: &AdapterMeta, encoder: &SentenceEncoder) -> Result<()> {
    let method = meta.generator.method;
    if method.needs_server_weights() {
        return Err(Error::Config(format!("a `{}` adapter changes the server's model; it cannot run on the client as a soft prompt", method.name())));
    }
    match &meta.encoder {
        Some(want) => check_identity("encoder", want, &encoder.id, &encoder.sha256),
        None if method.uses_encoder() => Err(Error::Config("adapter.json records no encoder, but its method needs one".into())),
        None => Ok(()),
    }
}

/// Encoder + generator + the adapter's task, on one device.
#[derive(Debug, Clone)]
pub struct Client {
    pub encoder: SentenceEncoder,
    pub generator: PromptGenerator,
    pub meta: AdapterMeta,
    pub device: Device,
}

impl Client {
    /// Pair an encoder with an adapter, refusing an adapter trained with another encoder.
    pub fn new(encoder: SentenceEncoder, adapter: Adapter, device: &Device) -> Result<Self> {
        let meta = adapter.meta;
        check_runs_on_client(&meta, &encoder)?;
        let generator = PromptGenerator::from_tensors(&meta.generator, &adapter.weights, device)?;
        Ok(Self { encoder, generator, meta, device: device.clone() })
    }

    /// Load from the three browser files: encoder bundle, `tokenizer.json`, adapter bundle.
    pub fn from_bundles(encoder: &[u8], tokenizer: &[u8], adapter: &[u8], device: &Device) -> Result<Self> {
        let adapter = Adapter::from_bundle(adapter)?;
        Self::new(SentenceEncoder::from_bundle(encoder, tokenizer, device)?, adapter, device)
    }

    /// The adapter's task.
    pub fn task(&self) -> &TaskSpec {
        &self.meta.task
    }

    /// The row an input stands for. A plain text fills a task with one field.
    pub fn fields(&self, input: &Input) -> Result<BTreeMap<String, String>> {
        let task = self.task();
        let mut names = TaskSpec::placeholders(&task.template);
        names.extend(TaskSpec::placeholders(&task.encoder_template));
        names.sort();
        names.dedup();
        match input {
            Input::Text(t) if names.len() == 1 => Ok(BTreeMap::from([(names[0].clone(), t.clone())])),
            Input::Text(_) => Err(Error::Input(format!("task `{}` takes the fields {{{}}}: pass an object, not a string", task.name, names.join(", ")))),
            Input::Fields(f) => match names.iter().find(|n| !f.contains_key(*n)) {
                Some(missing) => Err(Error::Input(format!("task `{}` needs the field `{missing}`", task.name))),
                None => Ok(f.clone()),
            },
        }
    }

    /// The soft prompt `[1, m, d]` for an input, on the device, and the prompt text.
    pub fn soft_prompt_tensor(&self, input: &Input) -> Result<(Tensor<3>, String)> {
        let (prompt, encoder_text) = self.task().render(&self.fields(input)?);
        let features = if self.meta.generator.method.uses_encoder() {
            self.encoder.embed(&[encoder_text.as_str()], &self.device)?
        } else {
            Tensor::zeros([1, self.meta.generator.encoder_dim], &self.device)
        };
        Ok((self.generator.forward(features)?, prompt))
    }

    fn to_host(&self, values: Vec<f32>, prompt: String) -> Result<SoftPrompt> {
        let width = self.meta.generator.token_dim;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::Backend(format!("the soft prompt has a non-finite value at flat index {i}")));
        }
        Ok(SoftPrompt { rows: values.len() / width, width, values, prompt })
    }

    /// The soft prompt of an input, read back to the host (native backends).
    pub fn soft_prompt(&self, input: &Input) -> Result<SoftPrompt> {
        let (z, prompt) = self.soft_prompt_tensor(input)?;
        self.to_host(crate::device::to_vec(z)?, prompt)
    }

    /// The same with an async read (required on WebGPU).
    pub async fn soft_prompt_async(&self, input: &Input) -> Result<SoftPrompt> {
        let (z, prompt) = self.soft_prompt_tensor(input)?;
        let data = z.into_data_async().await.map_err(|e| Error::Backend(format!("{e:?}")))?;
        self.to_host(data.try_to_vec::<f32>().map_err(|e| Error::Backend(format!("{e:?}")))?, prompt)
    }

    /// The request that carries `soft_prompt` to `lopa serve`: `/v1/score` with the label words
    /// for classification, `/v1/completions` for generation.
    pub fn request(&self, soft_prompt: &SoftPrompt, options: &RequestOptions) -> Result<ClientRequest> {
        let f16 = match options.dtype.as_deref() {
            None | Some("f16") => true,
            Some("f32") => false,
            Some(other) => return Err(Error::Input(format!("dtype `{other}` is not supported (f16, f32)"))),
        };
        let wire = WireSoftPrompt::encode(&soft_prompt.values, soft_prompt.rows, f16);
        let task = self.task();
        let (path, body) = match task.kind {
            TaskKind::Classification => {
                let candidates: Vec<&str> = task.labels().iter().map(|l| task.label_words[*l].as_str()).collect();
                ("/v1/score", serde_json::json!({"prompt": soft_prompt.prompt, "candidates": candidates, "soft_prompt": wire}))
            }
            TaskKind::Generation => {
                let mut body = serde_json::json!({"prompt": soft_prompt.prompt, "soft_prompt": wire, "max_tokens": options.max_tokens.unwrap_or(64), "stream": options.stream});
                let o = body.as_object_mut().expect("object");
                for (k, v) in [("temperature", options.temperature.map(f64::from)), ("top_p", options.top_p.map(f64::from))] {
                    if let Some(v) = v {
                        o.insert(k.into(), v.into());
                    }
                }
                if let Some(seed) = options.seed {
                    o.insert("seed".into(), seed.into());
                }
                if let Some(stop) = &options.stop {
                    o.insert("stop".into(), stop.clone().into());
                }
                ("/v1/completions", body)
            }
        };
        Ok(ClientRequest { path: path.into(), body: body.to_string() })
    }
}
