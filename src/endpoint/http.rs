//! HTTP routes: `POST /v1/completions`, `POST /v1/score`, `POST /v1/soft_prompt_grad`,
//! `GET /v1/models`, `GET /health`.
//! Errors are JSON `{"error": {"code", "message"}}`: 4xx for anything the client sent wrong
//! (naming the rule or limit), 5xx without internal detail (that goes to the server's log).
//!
//! Every request passes one guard before its route: the `Host` header must be allowed (DNS
//! rebinding), a POST must be `application/json` (a cross-site page can POST `text/plain`
//! without a CORS preflight), and it must get one of `max_concurrent` permits, held until its
//! response (a stream included) ends. Bodies are read within `body_timeout` and `max_body_bytes`;
//! parsing, tensor decoding and tokenization run on blocking threads, off the async workers.

use super::engine::{Engine, EngineConfig, Submit};
use super::upstream::Vllm;
use crate::wire::{CompletionChoice, Dtype, Gradient, GradientRequest, GradientResponse, WireSoftPrompt, COMPLETIONS_PATH, GRADIENT_PATH, SCORE_PATH, CompletionRequest, CompletionResponse, ErrorDetail, ErrorResponse, Logprobs, Score, ScoreRequest, ScoreResponse, TensorRule, Usage, MAX_STOPS, MAX_STOP_BYTES};
use crate::model::decoder::FoundationModel;
use crate::error::Error;
use crate::model::generate::{Generation, GenerationRequest};
use crate::model::sampling::{FinishReason, SamplingParams};
use crate::model::SoftPrompt;
use crate::model::tokenizer::Tokenizer;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use burn::tensor::Device;
use serde_json::json;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

/// Server settings (`lopa serve` flags). `Default` holds every default in one place.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub engine: EngineConfig,
    /// Longest accepted soft prompt (rows).
    pub max_soft_prompt_rows: usize,
    /// Largest request body in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Most new tokens per request.
    pub max_tokens_limit: usize,
    /// Most token positions one request may put through the model: soft prompt + prompt + new
    /// tokens, summed over candidates for `/v1/score`.
    pub max_request_tokens: usize,
    /// Time a request may wait for its answer (504 beyond).
    pub request_timeout: Duration,
    /// Longest a streamed completion may run; it then ends with an error event.
    pub stream_timeout: Duration,
    /// Time a client has to send a request's headers.
    pub header_timeout: Duration,
    /// Time a client has to send a request's body (408 beyond).
    pub body_timeout: Duration,
    /// Requests handled at once (503 beyond); a stream counts until it ends.
    pub max_concurrent: usize,
    /// Open connections at once (further ones are closed at accept).
    pub max_connections: usize,
    /// Most examples in one `/v1/soft_prompt_grad` request.
    pub max_gradient_examples: usize,
    /// Origins allowed by CORS (empty: no CORS headers; `*`: any origin).
    pub cors_origins: Vec<String>,
    /// Accepted `Host` names (without port); `*` accepts any. Empty: loopback names only.
    pub allowed_hosts: Vec<String>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            engine: EngineConfig { max_batch: 16, max_batch_tokens: 16_384, batch_window: Duration::from_millis(5), queue: 64 },
            max_soft_prompt_rows: 64,
            max_body_bytes: 4 << 20,
            max_tokens_limit: 512,
            max_request_tokens: 4096,
            request_timeout: Duration::from_secs(120),
            stream_timeout: Duration::from_secs(300),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_concurrent: 64,
            max_connections: 1024,
            max_gradient_examples: 32,
            cors_origins: vec![],
            allowed_hosts: vec![],
        }
    }
}

/// Names every loopback client may use.
const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

impl ServeConfig {
    /// Check settings that could otherwise fail later; the message says what to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.cors_origins.iter().any(|o| o == "*") && self.cors_origins.len() > 1 {
            return Err("--cors-origin '*' allows every origin; give it alone".into());
        }
        if let Some(bad) = self.cors_origins.iter().find(|o| *o != "*" && !(o.starts_with("http://") || o.starts_with("https://")) || o.parse::<HeaderValue>().is_err()) {
            return Err(format!("--cors-origin `{bad}` is not an origin like http://host:port (or '*')"));
        }
        if self.max_request_tokens > self.engine.max_batch_tokens {
            return Err(format!("--max-request-tokens {} exceeds --max-batch-tokens {}", self.max_request_tokens, self.engine.max_batch_tokens));
        }
        if [self.max_concurrent, self.max_connections, self.max_request_tokens, self.max_tokens_limit, self.max_soft_prompt_rows, self.max_gradient_examples].contains(&0) {
            return Err("limits must be at least 1".into());
        }
        Ok(())
    }

    /// Whether a `Host` header value (host, optional port) is accepted.
    fn host_allowed(&self, host: &str) -> bool {
        let name = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().map(|h| format!("[{h}]")).unwrap_or_default(),
            None => host.rsplit_once(':').map_or(host, |(h, _)| h).to_string(),
        }
        .to_ascii_lowercase();
        self.allowed_hosts.iter().any(|h| h == "*" || h.eq_ignore_ascii_case(&name)) || LOOPBACK_HOSTS.contains(&name.as_str())
    }
}

/// Where the frozen model runs.
#[derive(Clone)]
pub enum Backend {
    /// In this process ([`Engine`]).
    Embedded(Engine),
    /// A vLLM server behind this gateway.
    Vllm(Arc<Vllm>),
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Embedded(_) => "embedded",
            Backend::Vllm(_) => "vllm",
        }
    }

    /// Start a generation; dropping the receiver cancels it.
    fn start(&self, request: GenerationRequest, params: SamplingParams, stops: &[String], tokens: Option<mpsc::UnboundedSender<u32>>) -> Result<oneshot::Receiver<crate::Result<Generation>>, ApiError> {
        match self {
            Backend::Embedded(e) => Ok(match tokens {
                Some(tx) => e.submit_streaming(request, params, tx)?,
                None => e.submit(request, params)?,
            }),
            Backend::Vllm(v) => Ok(v.start(request, params, stops.to_vec(), tokens)),
        }
    }

    async fn score(&self, request: GenerationRequest, candidates: Vec<Vec<u32>>, timeout: Duration) -> Result<Vec<f32>, ApiError> {
        match self {
            Backend::Embedded(e) => await_reply(e.submit_score(request, candidates)?, timeout).await,
            Backend::Vllm(v) => match tokio::time::timeout(timeout, v.score(&request, &candidates)).await {
                Err(_) => Err(ApiError::timeout()),
                Ok(r) => r.map_err(ApiError::from),
            },
        }
    }

    async fn gradients(&self, requests: Vec<crate::model::generate::GradientRequest>, timeout: Duration) -> Result<Vec<crate::model::generate::SoftPromptGradient>, ApiError> {
        match self {
            Backend::Embedded(e) => await_reply(e.submit_gradients(requests)?, timeout).await,
            Backend::Vllm(_) => Err(ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "gradients_unavailable",
                "soft-prompt gradients need the embedded engine: vLLM has no backward pass (run lopa serve without --upstream)",
            )),
        }
    }

    async fn health(&self) -> Result<(), ApiError> {
        match self {
            Backend::Embedded(e) if e.is_alive() => Ok(()),
            Backend::Embedded(_) => Err(Submit::Stopped.into()),
            Backend::Vllm(v) => v.health().await.map_err(|e| {
                eprintln!("lopa: health: {e}");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "upstream_unavailable", "the serving engine does not answer")
            }),
        }
    }
}

/// What the routes know of the frozen model, whichever backend runs it.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub id: String,
    pub tokenizer: Tokenizer,
    pub width: usize,
    pub vocab: usize,
    /// Longest sequence (soft prompt + prompt + new tokens) the backend accepts.
    pub max_context: usize,
}

impl ModelInfo {
    /// What a loaded model tells the routes.
    pub fn of(fm: &FoundationModel) -> Self {
        ModelInfo {
            id: fm.id.clone(),
            tokenizer: fm.tokenizer.clone(),
            width: fm.decoder.hidden_size(),
            vocab: fm.decoder.vocab_size(),
            max_context: fm.config.max_position_embeddings,
        }
    }
}

struct AppState {
    backend: Backend,
    info: ModelInfo,
    cfg: ServeConfig,
    permits: Arc<Semaphore>,
}

/// A 4xx/5xx JSON error.
#[derive(Debug)]
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
    fn timeout() -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout", "the request timed out")
    }
    /// The same refusal, saying which of a request's examples it concerns.
    fn at(mut self, example: usize) -> Self {
        self.message = format!("examples[{example}]: {}", self.message);
        self
    }
    /// A server-side failure: the detail goes to the log, never to the client.
    fn internal(detail: impl std::fmt::Display) -> Self {
        eprintln!("lopa: internal error: {detail}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal server error")
    }
}

impl From<TensorRule> for ApiError {
    fn from(r: TensorRule) -> Self {
        ApiError::bad(r.code(), r.to_string())
    }
}

impl ApiError {
    /// The JSON every refusal carries.
    fn body(self) -> ErrorResponse {
        ErrorResponse { error: ErrorDetail { code: self.code.into(), message: self.message } }
    }

    /// An error event that ends a stream.
    fn event(self) -> axum::response::sse::Event {
        axum::response::sse::Event::default().data(serde_json::to_string(&self.body()).expect("plain JSON values"))
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Input(m) => ApiError::bad("invalid_request", m),
            Error::Upstream { rejected: true, message } => ApiError::bad("upstream_rejected", message),
            Error::Upstream { rejected: false, message } => {
                eprintln!("lopa: upstream: {message}");
                ApiError::new(StatusCode::BAD_GATEWAY, "upstream_unavailable", "the serving engine failed or does not answer")
            }
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

impl From<Submit> for ApiError {
    fn from(e: Submit) -> Self {
        match e {
            Submit::QueueFull => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "queue_full", "the server is busy; retry later"),
            Submit::Stopped => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "engine_stopped", "the model worker has stopped"),
        }
    }
}

/// Wait for the backend's answer within the request timeout. On timeout the receiver is
/// dropped, which cancels the work.
async fn await_reply<T>(rx: oneshot::Receiver<crate::Result<T>>, timeout: Duration) -> Result<T, ApiError> {
    match tokio::time::timeout(timeout, rx).await {
        Err(_) => Err(ApiError::timeout()),
        Ok(Err(_)) => Err(Submit::Stopped.into()),
        Ok(Ok(r)) => r.map_err(ApiError::from),
    }
}

/// The router for a loaded model; the engine thread starts here.
pub fn router(fm: FoundationModel, device: Device, cfg: ServeConfig) -> Router {
    let info = ModelInfo::of(&fm);
    let engine = Engine::start(fm, device, cfg.engine.clone());
    router_with(Backend::Embedded(engine), info, cfg)
}

/// The router over any backend.
pub fn router_with(backend: Backend, info: ModelInfo, cfg: ServeConfig) -> Router {
    let state = Arc::new(AppState { backend, info, permits: Arc::new(Semaphore::new(cfg.max_concurrent)), cfg: cfg.clone() });
    let mut app = Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route(COMPLETIONS_PATH, post(completions))
        .route(SCORE_PATH, post(score))
        .route(GRADIENT_PATH, post(gradients))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state);
    if !cfg.cors_origins.is_empty() {
        let origins = if cfg.cors_origins.iter().any(|o| o == "*") {
            tower_http::cors::AllowOrigin::any()
        } else {
            tower_http::cors::AllowOrigin::list(cfg.cors_origins.iter().filter_map(|o| o.parse().ok()))
        };
        // Outermost, so that the guard's refusals carry CORS headers a page can read.
        app = app.layer(tower_http::cors::CorsLayer::new().allow_origin(origins).allow_methods([Method::GET, Method::POST]).allow_headers([header::CONTENT_TYPE]));
    }
    app
}

/// The checks every request passes before its route (see the module docs).
async fn guard(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).or_else(|| req.uri().authority().map(|a| a.as_str()));
    match host {
        None => return ApiError::bad("host", "the Host header is missing").into_response(),
        Some(h) if !s.cfg.host_allowed(h) => {
            let name: String = h.chars().take(64).collect();
            return ApiError::new(StatusCode::FORBIDDEN, "host_not_allowed", format!("Host `{name}` is not served here (see --allow-host)")).into_response();
        }
        Some(_) => {}
    }
    if req.method() == Method::POST {
        let json = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).and_then(|v| v.split(';').next()).is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "content_type", "requests must be sent as content-type: application/json").into_response();
        }
    }
    // Health and model info are cheap and must answer under load (a load balancer would
    // otherwise pull a server that is only busy).
    if req.method() == Method::GET {
        return next.run(req).await;
    }
    let Ok(permit) = s.permits.clone().try_acquire_owned() else {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "too many requests in flight; retry later").into_response();
    };
    next.run(req).await.map(|body| Body::new(Held { body, _permit: permit }))
}

/// A response body that holds its concurrency permit until the body ends.
struct Held {
    body: Body,
    _permit: OwnedSemaphorePermit,
}

impl axum::body::HttpBody for Held {
    type Data = Bytes;
    type Error = axum::Error;
    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The request body within the size and time limits.
async fn read_body(s: &AppState, req: Request) -> Result<Bytes, ApiError> {
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

/// Run parsing and validation on a blocking thread.
async fn blocking<T: Send + 'static>(s: &Arc<AppState>, body: Bytes, f: fn(&AppState, &[u8]) -> Result<T, ApiError>) -> Result<T, ApiError> {
    let s = s.clone();
    tokio::task::spawn_blocking(move || f(&s, &body)).await.map_err(ApiError::internal)?
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad("invalid_request", format!("request body: {e}")))
}

async fn health(State(s): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    s.backend.health().await?;
    Ok(Json(json!({"status": "ok", "backend": s.backend.name()})))
}

async fn models(State(s): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let i = &s.info;
    Json(json!({"object": "list", "data": [{
        "id": i.id, "object": "model", "owned_by": "lopa", "backend": s.backend.name(),
        "hidden_size": i.width, "vocab_size": i.vocab, "max_context": i.max_context,
        "max_soft_prompt_rows": s.cfg.max_soft_prompt_rows, "max_request_tokens": s.cfg.max_request_tokens
    }]}))
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
struct Completion {
    request: GenerationRequest,
    params: SamplingParams,
    stops: Vec<String>,
    stream: bool,
    logprobs: bool,
    n_prompt: usize,
    soft_rows: usize,
}

fn prepare_completion(s: &AppState, body: &[u8]) -> Result<Completion, ApiError> {
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
        stops,
        stream: req.stream,
        logprobs: req.logprobs.is_some(),
        n_prompt,
        soft_rows,
    })
}

async fn completions(State(s): State<Arc<AppState>>, req: Request) -> Result<Response, ApiError> {
    let body = read_body(&s, req).await?;
    let c = blocking(&s, body, prepare_completion).await?;
    if c.stream {
        let (ttx, trx) = mpsc::unbounded_channel();
        let done = s.backend.start(c.request, c.params, &c.stops, Some(ttx))?;
        return Ok(stream_response(s.clone(), trx, done, c.stops).into_response());
    }
    let generation = await_reply(s.backend.start(c.request, c.params, &c.stops, None)?, s.cfg.request_timeout).await?;
    let tok = &s.info.tokenizer;
    let mut text = tok.decode(&generation.tokens).map_err(ApiError::internal)?;
    let mut finish = generation.finish_reason;
    if let Some(cut) = c.stops.iter().filter_map(|stop| text.find(stop.as_str())).min() {
        text.truncate(cut);
        finish = FinishReason::Stop;
    }
    let n = generation.tokens.len();
    let logprobs = c.logprobs.then(|| Logprobs {
        tokens: generation.tokens.iter().map(|t| tok.decode(&[*t]).unwrap_or_default()).collect(),
        token_ids: generation.tokens,
        token_logprobs: generation.logprobs,
    });
    let created = now();
    let prompt_tokens = c.n_prompt + c.soft_rows;
    Ok(Json(CompletionResponse {
        id: completion_id(),
        object: "text_completion".into(),
        created,
        model: s.info.id.clone(),
        choices: vec![CompletionChoice { index: 0, text, logprobs, finish_reason: Some(finish) }],
        usage: Some(Usage { prompt_tokens, completion_tokens: n, total_tokens: prompt_tokens + n }),
    })
    .into_response())
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A completion id unique to this answer: the server's start time (ns) and a counter, so that
/// neither two answers in one second nor two server runs share one.
fn completion_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static START: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    let start = START.get_or_init(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    format!("cmpl-{start:x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Where a streamed completion stands (a `Stream` of SSE events). Dropping it (the client went
/// away) drops `done`, which cancels the generation.
pub struct StreamState {
    app: Arc<AppState>,
    tokens_rx: mpsc::UnboundedReceiver<u32>,
    done: Option<oneshot::Receiver<crate::Result<Generation>>>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    tokens: Vec<u32>,
    sent: usize,
    stops: Vec<String>,
    phase: Phase,
    finish: FinishReason,
    id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Streaming,
    /// The final chunk is out; `[DONE]` follows.
    Finished,
    Closed,
}

fn chunk(st: &StreamState, text: &str, finish: Option<FinishReason>) -> axum::response::sse::Event {
    let c = CompletionResponse {
        id: st.id.clone(),
        object: "text_completion".into(),
        created: now(),
        model: st.app.info.id.clone(),
        choices: vec![CompletionChoice { index: 0, text: text.into(), logprobs: None, finish_reason: finish }],
        usage: None,
    };
    axum::response::sse::Event::default().data(serde_json::to_string(&c).expect("plain JSON values"))
}

/// Server-sent events in OpenAI's format: one chunk per new piece of text, a final chunk with
/// `finish_reason`, then `data: [DONE]`. Past `stream_timeout` an error event ends the stream.
fn stream_response(app: Arc<AppState>, tokens_rx: mpsc::UnboundedReceiver<u32>, done: oneshot::Receiver<crate::Result<Generation>>, stops: Vec<String>) -> axum::response::sse::Sse<StreamState> {
    let deadline = Box::pin(tokio::time::sleep(app.cfg.stream_timeout));
    axum::response::sse::Sse::new(StreamState { app, tokens_rx, done: Some(done), deadline, tokens: vec![], sent: 0, stops, phase: Phase::Streaming, finish: FinishReason::Length, id: completion_id() })
}

/// The largest char boundary of `s` at or below `i`.
fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl futures_core::Stream for StreamState {
    type Item = Result<axum::response::sse::Event, std::convert::Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        use axum::response::sse::Event;
        let st = self.get_mut();
        match st.phase {
            Phase::Streaming => {
                if st.deadline.as_mut().poll(cx).is_ready() {
                    st.done = None;
                    st.phase = Phase::Closed;
                    let e = ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout", format!("the stream ran past {} s", st.app.cfg.stream_timeout.as_secs()));
                    return Poll::Ready(Some(Ok(e.event())));
                }
                match st.tokens_rx.poll_recv(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Some(t)) => {
                        st.tokens.push(t);
                        let text = st.app.info.tokenizer.decode(&st.tokens).unwrap_or_default();
                        // Hold back a piece that ends inside a multi-byte character.
                        if text.ends_with('\u{FFFD}') || text.len() < st.sent || !text.is_char_boundary(st.sent) {
                            return Poll::Ready(Some(Ok(Event::default().comment(""))));
                        }
                        // Only the new text can complete a stop string: search from the last
                        // (longest stop - 1) bytes already sent.
                        let from = floor_boundary(&text, st.sent.saturating_sub(MAX_STOP_BYTES - 1));
                        if let Some(cut) = st.stops.iter().filter_map(|s| text[from..].find(s.as_str()).map(|i| from + i)).min() {
                            let piece = text[st.sent.min(cut)..cut].to_string();
                            st.finish = FinishReason::Stop;
                            st.phase = Phase::Finished;
                            // The answer is complete: stop the generation.
                            st.done = None;
                            return Poll::Ready(Some(Ok(chunk(st, &piece, Some(FinishReason::Stop)))));
                        }
                        let piece = text[st.sent..].to_string();
                        st.sent = text.len();
                        Poll::Ready(Some(Ok(chunk(st, &piece, None))))
                    }
                    Poll::Ready(None) => {
                        // All tokens are in; the generation's own result carries the finish reason.
                        if let Some(done) = st.done.as_mut() {
                            match Pin::new(done).poll(cx) {
                                Poll::Pending => return Poll::Pending,
                                Poll::Ready(Ok(Ok(g))) => st.finish = g.finish_reason,
                                Poll::Ready(Ok(Err(e))) => {
                                    st.done = None;
                                    st.phase = Phase::Closed;
                                    return Poll::Ready(Some(Ok(ApiError::from(e).event())));
                                }
                                Poll::Ready(Err(_)) => {}
                            }
                            st.done = None;
                        }
                        st.phase = Phase::Finished;
                        let finish = st.finish;
                        Poll::Ready(Some(Ok(chunk(st, "", Some(finish)))))
                    }
                }
            }
            Phase::Finished => {
                st.phase = Phase::Closed;
                Poll::Ready(Some(Ok(Event::default().data("[DONE]"))))
            }
            Phase::Closed => Poll::Ready(None),
        }
    }
}

/// Most candidates per score request.
pub const MAX_CANDIDATES: usize = 64;

/// A score request that passed every rule.
struct Scoring {
    request: GenerationRequest,
    candidates: Vec<Vec<u32>>,
    texts: Vec<String>,
}

fn prepare_score(s: &AppState, body: &[u8]) -> Result<Scoring, ApiError> {
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

async fn score(State(s): State<Arc<AppState>>, req: Request) -> Result<Json<ScoreResponse>, ApiError> {
    let body = read_body(&s, req).await?;
    let sc = blocking(&s, body, prepare_score).await?;
    let logprobs = s.backend.score(sc.request, sc.candidates, s.cfg.request_timeout).await?;
    let probs = crate::model::sampling::log_softmax(&logprobs);
    let scores = sc.texts.into_iter().zip(logprobs.iter().zip(&probs)).map(|(text, (&logprob, p))| Score { text, logprob, probability: p.exp() }).collect();
    Ok(Json(ScoreResponse { object: "score".into(), model: s.info.id.clone(), scores }))
}

/// A gradient request that passed every rule.
struct Gradients {
    requests: Vec<crate::model::generate::GradientRequest>,
    tokens: usize,
}

fn prepare_gradients(s: &AppState, body: &[u8]) -> Result<Gradients, ApiError> {
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
        tokens += positions;
        requests.push(crate::model::generate::GradientRequest { prompt_ids, target_ids, soft_prompt });
    }
    // A backward pass holds every activation: the same token budget as one request elsewhere.
    if tokens > s.cfg.max_request_tokens {
        return Err(ApiError::bad("request_tokens", format!("the examples put {tokens} positions through the model, more than the limit of {}", s.cfg.max_request_tokens)));
    }
    Ok(Gradients { requests, tokens })
}

async fn gradients(State(s): State<Arc<AppState>>, req: Request) -> Result<Json<GradientResponse>, ApiError> {
    let body = read_body(&s, req).await?;
    let g = blocking(&s, body, prepare_gradients).await?;
    let out = s.backend.gradients(g.requests, s.cfg.request_timeout).await?;
    let gradients = out.into_iter().map(|o| Gradient { loss: o.loss, grad: WireSoftPrompt::encode(&o.grad, Dtype::F32) }).collect();
    let usage = Usage { prompt_tokens: g.tokens, completion_tokens: 0, total_tokens: g.tokens };
    Ok(Json(GradientResponse { object: "soft_prompt_grad".into(), model: s.info.id.clone(), gradients, usage }))
}

/// Serve on a bound listener until `shutdown` resolves: at most `max_connections` connections,
/// each with `header_timeout` to send its headers. In-flight requests get 10 s to finish.
pub async fn serve(listener: tokio::net::TcpListener, app: Router, cfg: &ServeConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let connections = Arc::new(Semaphore::new(cfg.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(cfg.header_timeout);
    builder.http2().timer(TokioTimer::new());
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                // Out of file descriptors and the like: back off instead of spinning.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else { continue };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = graceful.watch(builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned());
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_statuses_without_internal_detail() {
        let e = ApiError::from(Error::Backend("wgpu device lost at /root/.cache/lopa/secret".into()));
        assert_eq!((e.status, e.code, e.message.as_str()), (StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal server error"));
        let e = ApiError::from(Error::io("/etc/passwd", std::io::Error::other("denied")));
        assert!(!e.message.contains("passwd"), "{}", e.message);
        let e = ApiError::from(Error::Input("token id 70000 is outside the vocabulary (49152)".into()));
        assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "invalid_request"));
        let e = ApiError::from(Error::Upstream { rejected: true, message: "prompt too long".into() });
        assert_eq!((e.status, e.code, e.message.as_str()), (StatusCode::BAD_REQUEST, "upstream_rejected", "prompt too long"));
        let e = ApiError::from(Error::Upstream { rejected: false, message: "connection refused 10.0.0.7:8000".into() });
        assert_eq!((e.status, e.code), (StatusCode::BAD_GATEWAY, "upstream_unavailable"));
        assert!(!e.message.contains("10.0.0.7"));
    }

    #[test]
    fn host_names_are_matched_without_port_and_case() {
        let cfg = ServeConfig { allowed_hosts: vec!["api.example.com".into()], ..ServeConfig::default() };
        for ok in ["localhost", "localhost:8080", "127.0.0.1:1", "[::1]:8080", "[::1]", "API.example.com:443"] {
            assert!(cfg.host_allowed(ok), "{ok}");
        }
        for bad in ["evil.example", "api.example.com.evil.example", "127.0.0.2", "[::2]:80", "localhost.evil.example:80", ""] {
            assert!(!cfg.host_allowed(bad), "{bad}");
        }
        assert!(ServeConfig { allowed_hosts: vec!["*".into()], ..ServeConfig::default() }.host_allowed("anything.example"));
    }
}
