//! HTTP routes: `POST /v1/completions`, `GET /v1/models`, `GET /health`. Errors are JSON
//! `{"error": {"code", "message"}}` with a 4xx status for anything the client sent wrong.

use super::engine::{Engine, EngineConfig, Submit};
use super::wire::{CompletionRequest, ScoreRequest, TensorRule};
use crate::decoder::FoundationModel;
use crate::generate::{GenerationRequest, SamplingParams};
use crate::tokenizer::Tokenizer;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use burn::tensor::Device;
use serde_json::json;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Server settings (`lopa serve` flags).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub engine: EngineConfig,
    /// Longest accepted soft prompt (rows).
    pub max_soft_prompt_rows: usize,
    /// Largest request body in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Most new tokens per request.
    pub max_tokens_limit: usize,
    /// Time a request may wait for its answer (504 beyond).
    pub request_timeout: Duration,
    /// Origins allowed by CORS (empty: no CORS headers).
    pub cors_origins: Vec<String>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            engine: EngineConfig { max_batch: 16, batch_window: Duration::from_millis(5), queue: 64 },
            max_soft_prompt_rows: 64,
            max_body_bytes: 4 << 20,
            max_tokens_limit: 512,
            request_timeout: Duration::from_secs(120),
            cors_origins: vec![],
        }
    }
}

struct AppState {
    engine: Engine,
    tokenizer: Tokenizer,
    model_id: String,
    width: usize,
    vocab: usize,
    max_context: usize,
    cfg: ServeConfig,
}

/// A 4xx/5xx JSON error.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl From<TensorRule> for ApiError {
    fn from(r: TensorRule) -> Self {
        ApiError::bad(r.code(), r.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": {"code": self.code, "message": self.message}}))).into_response()
    }
}

impl From<Submit> for ApiError {
    fn from(e: Submit) -> Self {
        match e {
            Submit::QueueFull => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "queue_full", "the server is busy; retry later"),
            Submit::Stopped => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stopped", "the model worker has stopped"),
        }
    }
}

/// Wait for the engine's answer within the request timeout.
async fn await_reply<T>(rx: tokio::sync::oneshot::Receiver<crate::Result<T>>, timeout: Duration) -> Result<T, ApiError> {
    match tokio::time::timeout(timeout, rx).await {
        Err(_) => Err(ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout", "the request timed out")),
        Ok(Err(_)) => Err(Submit::Stopped.into()),
        Ok(Ok(Err(e))) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "model_error", e.to_string())),
        Ok(Ok(Ok(v))) => Ok(v),
    }
}

/// The router for a loaded model; the engine thread starts here.
pub fn router(fm: FoundationModel, device: Device, cfg: ServeConfig) -> Router {
    let state = Arc::new(AppState {
        tokenizer: fm.tokenizer.clone(),
        model_id: fm.id.clone(),
        width: fm.decoder.hidden_size(),
        vocab: fm.decoder.vocab_size(),
        max_context: fm.config.max_position_embeddings,
        engine: Engine::start(fm, device, cfg.engine.clone()),
        cfg: cfg.clone(),
    });
    let mut app = Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions))
        .route("/v1/score", post(score))
        .with_state(state)
        .layer(axum::extract::DefaultBodyLimit::max(cfg.max_body_bytes));
    if !cfg.cors_origins.is_empty() {
        let origins: Vec<HeaderValue> = cfg.cors_origins.iter().filter_map(|o| o.parse().ok()).collect();
        app = app.layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(origins)
                .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
                .allow_headers([axum::http::header::CONTENT_TYPE]),
        );
    }
    app
}

async fn models(State(s): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(json!({"object": "list", "data": [{
        "id": s.model_id, "object": "model", "owned_by": "lopa",
        "hidden_size": s.width, "vocab_size": s.vocab, "max_context": s.max_context,
        "max_soft_prompt_rows": s.cfg.max_soft_prompt_rows
    }]}))
}

async fn completions(State(s): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let req: CompletionRequest = serde_json::from_slice(&body).map_err(|e| ApiError::bad("invalid_request", format!("request body: {e}")))?;
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
    let soft = match (&req.soft_prompt, &req.prompt_embeds) {
        (Some(_), Some(_)) => return Err(ApiError::bad("invalid_request", "send soft_prompt or prompt_embeds, not both")),
        (Some(w), None) => Some(w.decode(s.width, s.cfg.max_soft_prompt_rows)?),
        (None, Some(b64)) => Some(super::wire::decode_prompt_embeds(b64, s.width, s.cfg.max_soft_prompt_rows)?),
        (None, None) => None,
    };
    let prompt_ids = s.tokenizer.encode(&req.prompt).map_err(|e| ApiError::bad("prompt", e.to_string()))?;
    let soft_rows = soft.as_ref().map_or(0, |p| p.rows);
    if prompt_ids.is_empty() && soft.is_none() {
        return Err(ApiError::bad("prompt", "the prompt is empty and there is no soft prompt"));
    }
    if soft_rows + prompt_ids.len() + req.max_tokens > s.max_context {
        return Err(ApiError::bad("context_length", format!(
            "{soft_rows} soft-prompt rows + {} prompt tokens + {} new tokens exceed the context of {}",
            prompt_ids.len(), req.max_tokens, s.max_context
        )));
    }
    let params = SamplingParams {
        max_tokens: req.max_tokens,
        temperature,
        top_p,
        stop_token_ids: s.tokenizer.eos_token_ids.clone(),
        seed: req.seed.unwrap_or(0),
    };
    let n_prompt = prompt_ids.len();
    let request = GenerationRequest { prompt_ids, soft_prompt: soft.map(|p| (p.values, p.rows)) };
    if req.stream {
        let (ttx, trx) = tokio::sync::mpsc::unbounded_channel();
        let done = s.engine.submit_streaming(request, params, ttx)?;
        let stops: Vec<String> = req.stop.iter().flat_map(|x| x.strings()).filter(|x| !x.is_empty()).collect();
        return Ok(stream_response(s.clone(), trx, done, stops).into_response());
    }
    let generation = await_reply(s.engine.submit(request, params)?, s.cfg.request_timeout).await?;
    let mut text = s.tokenizer.decode(&generation.tokens).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "decode", e.to_string()))?;
    let mut finish = generation.finish_reason;
    for stop in req.stop.iter().flat_map(|s| s.strings()) {
        if let Some(i) = text.find(&stop).filter(|_| !stop.is_empty()) {
            text.truncate(i);
            finish = "stop";
        }
    }
    let logprobs = req.logprobs.map(|_| {
        let tokens: Vec<String> = generation.tokens.iter().map(|t| s.tokenizer.decode(&[*t]).unwrap_or_default()).collect();
        json!({"tokens": tokens, "token_ids": generation.tokens, "token_logprobs": generation.logprobs})
    });
    let created = now();
    Ok(Json(json!({
        "id": format!("cmpl-{created}-{}", generation.tokens.len()),
        "object": "text_completion",
        "created": created,
        "model": s.model_id,
        "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}],
        "usage": {"prompt_tokens": n_prompt + soft_rows, "completion_tokens": generation.tokens.len(),
                  "total_tokens": n_prompt + soft_rows + generation.tokens.len()}
    }))
    .into_response())
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Where a streamed completion stands (a `Stream` of SSE events).
pub struct StreamState {
    app: Arc<AppState>,
    tokens_rx: tokio::sync::mpsc::UnboundedReceiver<u32>,
    done: Option<tokio::sync::oneshot::Receiver<crate::Result<crate::generate::Generation>>>,
    tokens: Vec<u32>,
    sent: usize,
    stops: Vec<String>,
    /// 0 streaming, 1 final chunk sent, 2 `[DONE]` sent.
    phase: u8,
    finish: &'static str,
    id: String,
}

fn chunk(st: &StreamState, text: &str, finish: Option<&str>) -> axum::response::sse::Event {
    axum::response::sse::Event::default().data(
        json!({"id": st.id, "object": "text_completion", "created": now(), "model": st.app.model_id,
               "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}]})
        .to_string(),
    )
}

/// Server-sent events in OpenAI's format: one chunk per new piece of text, a final chunk with
/// `finish_reason`, then `data: [DONE]`.
fn stream_response(
    app: Arc<AppState>,
    tokens_rx: tokio::sync::mpsc::UnboundedReceiver<u32>,
    done: tokio::sync::oneshot::Receiver<crate::Result<crate::generate::Generation>>,
    stops: Vec<String>,
) -> axum::response::sse::Sse<StreamState> {
    axum::response::sse::Sse::new(StreamState { app, tokens_rx, done: Some(done), tokens: vec![], sent: 0, stops, phase: 0, finish: "length", id: format!("cmpl-{}", now()) })
}

impl futures_core::Stream for StreamState {
    type Item = Result<axum::response::sse::Event, std::convert::Infallible>;

    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Self::Item>> {
        use axum::response::sse::Event;
        use std::task::Poll;
        let st = self.get_mut();
        match st.phase {
            0 => match st.tokens_rx.poll_recv(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(t)) => {
                    st.tokens.push(t);
                    let text = st.app.tokenizer.decode(&st.tokens).unwrap_or_default();
                    // Hold back a piece that ends inside a multi-byte character.
                    if text.ends_with('\u{FFFD}') || text.len() < st.sent || !text.is_char_boundary(st.sent) {
                        return Poll::Ready(Some(Ok(Event::default().comment(""))));
                    }
                    if let Some(cut) = st.stops.iter().filter_map(|s| text.find(s.as_str())).min() {
                        let piece = text[st.sent.min(cut)..cut].to_string();
                        st.finish = "stop";
                        st.phase = 1;
                        return Poll::Ready(Some(Ok(chunk(st, &piece, Some("stop")))));
                    }
                    let piece = text[st.sent..].to_string();
                    st.sent = text.len();
                    Poll::Ready(Some(Ok(chunk(st, &piece, None))))
                }
                Poll::Ready(None) => {
                    // All tokens are in; the generation's own result carries the finish reason.
                    if let Some(done) = st.done.as_mut() {
                        match std::pin::Pin::new(done).poll(cx) {
                            Poll::Pending => return Poll::Pending,
                            Poll::Ready(r) => {
                                if let Ok(Ok(g)) = r {
                                    st.finish = g.finish_reason;
                                }
                                st.done = None;
                            }
                        }
                    }
                    st.phase = 1;
                    let finish = st.finish;
                    Poll::Ready(Some(Ok(chunk(st, "", Some(finish)))))
                }
            },
            1 => {
                st.phase = 2;
                Poll::Ready(Some(Ok(Event::default().data("[DONE]"))))
            }
            _ => Poll::Ready(None),
        }
    }
}

/// Most candidates per score request.
const MAX_CANDIDATES: usize = 64;

async fn score(State(s): State<Arc<AppState>>, body: Bytes) -> Result<Json<serde_json::Value>, ApiError> {
    let req: ScoreRequest = serde_json::from_slice(&body).map_err(|e| ApiError::bad("invalid_request", format!("request body: {e}")))?;
    if req.candidates.is_empty() || req.candidates.len() > MAX_CANDIDATES {
        return Err(ApiError::bad("candidates", format!("candidates must hold 1 to {MAX_CANDIDATES} strings")));
    }
    let soft = req.soft_prompt.as_ref().map(|w| w.decode(s.width, s.cfg.max_soft_prompt_rows)).transpose()?;
    let prompt_ids = s.tokenizer.encode(&req.prompt).map_err(|e| ApiError::bad("prompt", e.to_string()))?;
    if prompt_ids.is_empty() && soft.is_none() {
        return Err(ApiError::bad("prompt", "the prompt is empty and there is no soft prompt"));
    }
    let mut candidates = Vec::with_capacity(req.candidates.len());
    for c in &req.candidates {
        let ids = s.tokenizer.encode(c).map_err(|e| ApiError::bad("candidates", e.to_string()))?;
        if ids.is_empty() {
            return Err(ApiError::bad("candidates", "a candidate is empty"));
        }
        candidates.push(ids);
    }
    let longest = candidates.iter().map(Vec::len).max().unwrap_or(0);
    let soft_rows = soft.as_ref().map_or(0, |p| p.rows);
    if soft_rows + prompt_ids.len() + longest > s.max_context {
        return Err(ApiError::bad("context_length", format!("the prompt and candidates exceed the context of {}", s.max_context)));
    }
    let request = GenerationRequest { prompt_ids, soft_prompt: soft.map(|p| (p.values, p.rows)) };
    let logprobs = await_reply(s.engine.submit_score(request, candidates)?, s.cfg.request_timeout).await?;
    let probs = crate::generate::log_softmax(&logprobs);
    let scores: Vec<serde_json::Value> = req
        .candidates
        .iter()
        .zip(logprobs.iter().zip(&probs))
        .map(|(c, (lp, p))| json!({"text": c, "logprob": lp, "probability": p.exp()}))
        .collect();
    Ok(Json(json!({"object": "score", "model": s.model_id, "scores": scores})))
}

/// Serve on a bound listener until `shutdown` resolves.
pub async fn serve(listener: tokio::net::TcpListener, app: Router, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
