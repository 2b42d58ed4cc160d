//! The client side of LoPA: everything that runs on the user's device. The sentence encoder and
//! the trained generator turn an input into its soft prompt, and the request for `lopa serve`
//! carries only that soft prompt and the query; the adapter's weights never leave the device.
//! The browser (`crate::web`) and native callers share this one mechanism.

#[cfg(feature = "personalize")]
pub mod personalize;

use crate::adapter::{check_identity, Adapter, AdapterMeta};
use crate::model::encoder::SentenceEncoder;
use crate::error::{Error, Result};
use crate::model::generator::{GeneratorConfig, PromptGenerator};
use crate::task::{TaskKind, TaskSpec};
use crate::wire::{self, CompletionRequest, CompletionResponse, Dtype, ErrorResponse, Request, ScoreRequest, ScoreResponse, StopField, WireSoftPrompt};
use crate::model::sampling::FinishReason;
use crate::model::SoftPrompt;
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

/// What leaves the device for one input: the query text (the task's template filled with the
/// input) and its soft prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub prompt: String,
    pub soft_prompt: SoftPrompt,
}

impl Query {
    /// The soft prompt's values as the server reads them (after the wire's dtype: f16 rounds,
    /// and a value past f16's range is refused as the server would refuse it).
    pub fn sent(&self, dtype: Dtype) -> Result<SoftPrompt> {
        let z = &self.soft_prompt;
        WireSoftPrompt::encode(z, dtype).decode(z.width(), z.rows()).map_err(|rule| Error::Input(rule.to_string()))
    }
}

/// Options of a request to `lopa serve` (camelCase, as the JS API passes them).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestOptions {
    /// How the soft prompt travels: `f16` (default, half the bytes) or `f32`.
    pub dtype: Dtype,
    pub max_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub seed: Option<u64>,
    pub stop: Option<Vec<String>>,
    pub stream: bool,
}

/// What `lopa serve` answered, read against the adapter's task.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Answer {
    /// The most probable label, its label word, and every label's probability.
    #[serde(rename_all = "camelCase")]
    Classification { label: String, label_word: String, probabilities: BTreeMap<String, f32> },
    #[serde(rename_all = "camelCase")]
    Generation { text: String, finish_reason: Option<FinishReason> },
}

/// One piece of a streamed completion.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Chunk {
    pub text: String,
    pub finish_reason: Option<FinishReason>,
}

/// The JSON body of an answer with HTTP `status`, or the server's error message.
pub(crate) fn parse_answer<T: serde::de::DeserializeOwned>(status: u16, body: &[u8]) -> Result<T> {
    if let Ok(r) = serde_json::from_slice::<ErrorResponse>(body) {
        return Err(Error::Endpoint(r.error.message));
    }
    if !(200..300).contains(&status) {
        return Err(Error::Endpoint(format!("HTTP {status}")));
    }
    serde_json::from_slice(body).map_err(|e| Error::Endpoint(format!("an answer this client cannot read ({e})")))
}

/// The text and finish reason of a completion's (or a streamed chunk's) one choice.
fn first_choice(r: CompletionResponse) -> Result<Chunk> {
    let c = r.choices.into_iter().next().ok_or_else(|| Error::Endpoint("an answer with no choice".into()))?;
    Ok(Chunk { text: c.text, finish_reason: c.finish_reason })
}

/// Whether an adapter can run on the client with this encoder: it makes soft prompts (LoRA
/// changes the server's model) and was trained with this encoder. Gives its generator's config.
pub fn check_runs_on_client<'a>(meta: &'a AdapterMeta, encoder: &SentenceEncoder) -> Result<&'a GeneratorConfig> {
    let Some(generator) = meta.adaptation.generator() else {
        return Err(Error::Config(format!("a `{}` adapter changes the server's model; it cannot run on the client as a soft prompt", meta.adaptation.kind().name())));
    };
    match &meta.encoder {
        Some(want) => check_identity("encoder", want, &encoder.id, &encoder.sha256)?,
        None if generator.method.uses_encoder() => return Err(Error::Config("adapter.json records no encoder, but its method needs one".into())),
        None => {}
    }
    Ok(generator)
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
        let generator = PromptGenerator::from_tensors(check_runs_on_client(&meta, &encoder)?, &adapter.weights, device)?;
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
        let names = task.input_columns();
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
        let c = &self.generator.config;
        let features = if c.method.uses_encoder() { self.encoder.embed(&[encoder_text.as_str()], &self.device)? } else { Tensor::zeros([1, c.encoder_dim], &self.device) };
        Ok((self.generator.forward(features)?, prompt))
    }

    fn finite(soft_prompt: SoftPrompt, prompt: String) -> Result<Query> {
        match soft_prompt.first_non_finite() {
            Some(i) => Err(Error::Backend(format!("the soft prompt has a non-finite value at flat index {i}"))),
            None => Ok(Query { prompt, soft_prompt }),
        }
    }

    /// The query of an input, its soft prompt read back to the host (native backends).
    pub fn query(&self, input: &Input) -> Result<Query> {
        let (z, prompt) = self.soft_prompt_tensor(input)?;
        Self::finite(SoftPrompt::from_tensor(z)?, prompt)
    }

    /// The same with an async read (required on WebGPU).
    pub async fn query_async(&self, input: &Input) -> Result<Query> {
        let (z, prompt) = self.soft_prompt_tensor(input)?;
        Self::finite(SoftPrompt::from_tensor_async(z).await?, prompt)
    }

    /// The request that carries a query to `lopa serve`: `/v1/score` with the label words (in
    /// label order) for classification, `/v1/completions` for generation.
    pub fn request(&self, query: &Query, options: &RequestOptions) -> Request {
        let soft_prompt = Some(WireSoftPrompt::encode(&query.soft_prompt, options.dtype));
        let task = self.task();
        match task.kind {
            TaskKind::Classification => Request::Score(ScoreRequest {
                model: None,
                prompt: query.prompt.clone(),
                candidates: task.labels().iter().map(|l| task.label_words[*l].clone()).collect(),
                soft_prompt,
            }),
            TaskKind::Generation => Request::Completion(CompletionRequest {
                prompt: query.prompt.clone(),
                max_tokens: options.max_tokens.unwrap_or(64),
                temperature: options.temperature,
                top_p: options.top_p,
                seed: options.seed,
                stop: options.stop.clone().map(StopField::Many),
                stream: options.stream,
                soft_prompt,
                ..Default::default()
            }),
        }
    }

    /// Read `lopa serve`'s answer (HTTP `status`, `body`) to a request this client built and
    /// posted to `path`: the label probabilities in the task's label order (the order of the
    /// request's candidates), or the completion.
    pub fn read_answer(&self, path: &str, status: u16, body: &[u8]) -> Result<Answer> {
        match path {
            wire::SCORE_PATH => {
                let r: ScoreResponse = parse_answer(status, body)?;
                let task = self.task();
                let labels = task.labels();
                if r.scores.len() != labels.len() {
                    return Err(Error::Endpoint(format!("{} scores for {} candidates", r.scores.len(), labels.len())));
                }
                let probabilities: BTreeMap<String, f32> = labels.iter().zip(&r.scores).map(|(l, s)| (l.to_string(), s.probability)).collect();
                let best = labels.iter().zip(&r.scores).fold((labels[0], f32::NEG_INFINITY), |b, (l, s)| if s.probability > b.1 { (l, s.probability) } else { b }).0;
                Ok(Answer::Classification { label: best.to_string(), label_word: task.label_words[best].clone(), probabilities })
            }
            wire::COMPLETIONS_PATH => {
                let Chunk { text, finish_reason } = first_choice(parse_answer(status, body)?)?;
                Ok(Answer::Generation { text, finish_reason })
            }
            other => Err(Error::Input(format!("`{other}` is not a path this client posts to"))),
        }
    }

    /// Read one server-sent event's data of a streamed completion (not `[DONE]`).
    pub fn read_chunk(data: &str) -> Result<Chunk> {
        first_choice(parse_answer(200, data.as_bytes())?)
    }
}
