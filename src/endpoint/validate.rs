//! Request bodies read within `body_timeout` and `max_body_bytes`, and every rule a request
//! passes before it reaches a backend: sampling ranges, stop strings, soft-prompt tensors, and
//! the token budget (soft prompt + prompt + new tokens, summed over candidates or examples).
//! Parsing, tensor decoding and tokenization run on blocking threads, off the async workers.

use super::error::ApiError;
use super::state::AppState;
use super::stop::StopStrings;
use crate::model::generate::GenerationRequest;
use crate::model::gradient::GradientRequest as ModelGradientRequest;
use crate::model::sampling::SamplingParams;
use crate::model::SoftPrompt;
use crate::wire::{CompletionRequest, GradientRequest, ScoreRequest, MAX_STOPS, MAX_STOP_BYTES};
use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{header, StatusCode};

/// The request body within the size and time limits.
pub(super) async fn read_body(s: &AppState, req: Request) -> Result<Bytes, ApiError> {
    let limit = s.cfg.max_body_bytes;
    let too_large = || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", format!("the request body exceeds {limit} bytes"));
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(s.cfg.body_timeout, axum::body::to_bytes(req.into_body(), limit)).await {
        Err(_) => Err(ApiError::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", format!("the request body did not arrive within {} s", s.cfg.body_timeout.as_secs()))),
        Ok(Err(e)) if std::error::Error::source(&e).is_some_and(|c| c.is::<http_body_util::LengthLimitError>()) => Err(too_large()),
        Ok(Err(_)) => Err(ApiError::bad("body", "the request body could not be read")),
        Ok(Ok(b)) => Ok(b),
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad("invalid_request", format!("request body: {e}")))
}

/// Prompt text longer than this many bytes per allowed token is refused before tokenization
/// (a token is at most a few dozen bytes of ordinary text).
const BYTES_PER_TOKEN_BOUND: usize = 32;

/// Tokenize a request's text (`field`: "prompt" or "candidates") within the token budget.
fn token_ids(s: &AppState, text: &str, field: &'static str) -> Result<Vec<u32>, ApiError> {
    let limit = s.cfg.max_request_tokens;
    if text.len() > limit * BYTES_PER_TOKEN_BOUND {
        return Err(ApiError::bad("request_tokens", format!("a {field} text is {} bytes, more than {limit} tokens can be", text.len())));
    }
    s.info.tokenizer.encode(text).map_err(|e| ApiError::bad(field, e.to_string()))
}

/// A completion request that passed every rule.
pub(super) struct Completion {
    pub request: GenerationRequest,
    pub params: SamplingParams,
    pub stops: StopStrings,
    pub stream: bool,
    pub logprobs: bool,
    pub n_prompt: usize,
    pub soft_rows: usize,
}

pub(super) fn prepare_completion(s: &AppState, body: &[u8]) -> Result<Completion, ApiError> {
    let req: CompletionRequest = parse(body)?;
    if req.max_tokens == 0 || req.max_tokens > s.cfg.max_tokens_limit {
        return Err(ApiError::bad("max_tokens", format!("max_tokens must be between 1 and {}", s.cfg.max_tokens_limit)));
    }
    let temperature = req.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::bad("temperature", "temperature must be between 0 and 2"));
    }
    let top_p = req.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::bad("top_p", "top_p must be in (0, 1]"));
    }
    let stops = req.stop.as_ref().map(|x| x.strings()).unwrap_or_default();
    if stops.len() > MAX_STOPS || stops.iter().any(|x| x.is_empty() || x.len() > MAX_STOP_BYTES) {
        return Err(ApiError::bad("stop", format!("stop takes at most {MAX_STOPS} strings of 1 to {MAX_STOP_BYTES} bytes")));
    }
    let (width, max_rows) = (s.info.width, s.cfg.max_soft_prompt_rows);
    let soft = match (&req.soft_prompt, &req.prompt_embeds) {
        (Some(_), Some(_)) => return Err(ApiError::bad("invalid_request", "send soft_prompt or prompt_embeds, not both")),
        (Some(w), None) => Some(w.decode(width, max_rows)?),
        (None, Some(b64)) => Some(crate::wire::soft_prompt::decode_prompt_embeds(b64, width, max_rows)?),
        (None, None) => None,
    };
    let ids = token_ids(s, &req.prompt, "prompt")?;
    let soft_rows = soft.as_ref().map_or(0, SoftPrompt::rows);
    if ids.is_empty() && soft.is_none() {
        return Err(ApiError::bad("prompt", "the prompt is empty and there is no soft prompt"));
    }
    let total = soft_rows + ids.len() + req.max_tokens;
    if total > s.cfg.max_request_tokens {
        return Err(ApiError::bad("request_tokens", format!(
            "{soft_rows} soft-prompt rows + {} prompt tokens + {} new tokens exceed the limit of {} tokens per request",
            ids.len(), req.max_tokens, s.cfg.max_request_tokens
        )));
    }
    if total > s.info.max_context {
        return Err(ApiError::bad("context_length", format!(
            "{soft_rows} soft-prompt rows + {} prompt tokens + {} new tokens exceed the context of {}",
            ids.len(), req.max_tokens, s.info.max_context
        )));
    }
    let params = SamplingParams {
        max_tokens: req.max_tokens,
        temperature,
        top_p,
        stop_token_ids: s.info.tokenizer.eos_token_ids.clone(),
        seed: req.seed.unwrap_or(0),
    };
    let n_prompt = ids.len();
    Ok(Completion {
        request: GenerationRequest { prompt_ids: ids, soft_prompt: soft },
        params,
        stops: StopStrings::new(stops),
        stream: req.stream,
        logprobs: req.logprobs.is_some(),
        n_prompt,
        soft_rows,
    })
}

/// Most candidates per score request.
pub const MAX_CANDIDATES: usize = 64;

/// A score request that passed every rule.
pub(super) struct Scoring {
    pub request: GenerationRequest,
    pub candidates: Vec<Vec<u32>>,
    pub texts: Vec<String>,
}

pub(super) fn prepare_score(s: &AppState, body: &[u8]) -> Result<Scoring, ApiError> {
    let req: ScoreRequest = parse(body)?;
    if req.candidates.is_empty() || req.candidates.len() > MAX_CANDIDATES {
        return Err(ApiError::bad("candidates", format!("candidates must hold 1 to {MAX_CANDIDATES} strings")));
    }
    let soft = req.soft_prompt.as_ref().map(|w| w.decode(s.info.width, s.cfg.max_soft_prompt_rows)).transpose()?;
    let ids = token_ids(s, &req.prompt, "prompt")?;
    if ids.is_empty() && soft.is_none() {
        return Err(ApiError::bad("prompt", "the prompt is empty and there is no soft prompt"));
    }
    let soft_rows = soft.as_ref().map_or(0, SoftPrompt::rows);
    let limit = s.cfg.max_request_tokens;
    // Every candidate is a row of soft prompt + prompt + candidate: the budget counts them all.
    let mut total = 0usize;
    let mut candidates = Vec::with_capacity(req.candidates.len());
    for c in &req.candidates {
        let cids = token_ids(s, c, "candidates")?;
        if cids.is_empty() {
            return Err(ApiError::bad("candidates", "a candidate is empty"));
        }
        if soft_rows + ids.len() + cids.len() > s.info.max_context {
            return Err(ApiError::bad("context_length", format!("the prompt and a candidate exceed the context of {}", s.info.max_context)));
        }
        total += soft_rows + ids.len() + cids.len();
        if total > limit {
            return Err(ApiError::bad("request_tokens", format!("the candidates with the prompt exceed the limit of {limit} tokens per request")));
        }
        candidates.push(cids);
    }
    Ok(Scoring { request: GenerationRequest { prompt_ids: ids, soft_prompt: soft }, candidates, texts: req.candidates })
}

/// A gradient request that passed every rule.
pub(super) struct Gradients {
    pub requests: Vec<ModelGradientRequest>,
    pub tokens: usize,
}

pub(super) fn prepare_gradients(s: &AppState, body: &[u8]) -> Result<Gradients, ApiError> {
    let req: GradientRequest = parse(body)?;
    let max = s.cfg.max_gradient_examples;
    if req.examples.is_empty() || req.examples.len() > max {
        return Err(ApiError::bad("examples", format!("examples must hold between 1 and {max} entries")));
    }
    let mut requests = Vec::with_capacity(req.examples.len());
    let mut tokens = 0;
    for (i, ex) in req.examples.iter().enumerate() {
        let soft_prompt = ex.soft_prompt.decode(s.info.width, s.cfg.max_soft_prompt_rows).map_err(|e| ApiError::from(e).at(i))?;
        let prompt_ids = token_ids(s, &ex.prompt, "prompt")?;
        let target_ids = token_ids(s, &ex.target, "target")?;
        if target_ids.is_empty() {
            return Err(ApiError::bad("target", format!("examples[{i}].target is empty")));
        }
        let positions = soft_prompt.rows() + prompt_ids.len() + target_ids.len();
        if positions > s.info.max_context {
            return Err(ApiError::bad("context_length", format!("examples[{i}]: {positions} positions exceed the context of {}", s.info.max_context)));
        }
        // What the backward pass holds grows with layers, heads and positions, not only tokens:
        // an example that alone would exceed the budget is refused before any work.
        if let Some(cost) = &s.info.gradient_cost {
            let (need, limit) = (cost.bytes(1, positions, target_ids.len()), s.cfg.engine.max_gradient_bytes);
            if need > limit {
                return Err(ApiError::bad("gradient_memory", format!("examples[{i}]: its backward pass would hold {} MiB for {positions} positions, more than the limit of {} MiB (--max-gradient-mb)", need >> 20, limit >> 20)));
            }
        }
        tokens += positions;
        requests.push(ModelGradientRequest { prompt_ids, target_ids, soft_prompt });
    }
    // Every position costs compute: the same token budget as one request elsewhere.
    if tokens > s.cfg.max_request_tokens {
        return Err(ApiError::bad("request_tokens", format!("the examples put {tokens} positions through the model, more than the limit of {}", s.cfg.max_request_tokens)));
    }
    Ok(Gradients { requests, tokens })
}

