//! The routes: `POST /v1/completions`, `POST /v1/score`, `POST /v1/soft_prompt_grad`,
//! `GET /v1/models`, `GET /health`, each behind the [`guard`](super::guard).

use super::backend::{await_reply, Backend};
use super::config::ServeConfig;
use super::engine::Engine;
use super::error::ApiError;
use super::guard::guard;
use super::info::ModelInfo;
use super::state::AppState;
use super::stream::{completion_id, now, stream_response};
use super::validate::{prepare_completion, prepare_gradients, prepare_score, read_body};
use crate::model::decoder::FoundationModel;
use crate::model::sampling::FinishReason;
use crate::wire::{CompletionChoice, CompletionResponse, Dtype, Gradient, GradientResponse, Logprobs, Score, ScoreResponse, Usage, WireSoftPrompt, COMPLETIONS_PATH, GRADIENT_PATH, SCORE_PATH};
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use burn::tensor::Device;
use serde_json::json;
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};

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

/// Run parsing and validation on a blocking thread.
async fn blocking<T: Send + 'static>(s: &Arc<AppState>, body: Bytes, f: fn(&AppState, &[u8]) -> Result<T, ApiError>) -> Result<T, ApiError> {
    let s = s.clone();
    tokio::task::spawn_blocking(move || f(&s, &body)).await.map_err(ApiError::internal)?
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
    if let Some(cut) = c.stops.clone().find(&text) {
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

async fn score(State(s): State<Arc<AppState>>, req: Request) -> Result<Json<ScoreResponse>, ApiError> {
    let body = read_body(&s, req).await?;
    let sc = blocking(&s, body, prepare_score).await?;
    let logprobs = s.backend.score(sc.request, sc.candidates, s.cfg.request_timeout).await?;
    let probs = crate::model::sampling::log_softmax(&logprobs);
    let scores = sc.texts.into_iter().zip(logprobs.iter().zip(&probs)).map(|(text, (&logprob, p))| Score { text, logprob, probability: p.exp() }).collect();
    Ok(Json(ScoreResponse { object: "score".into(), model: s.info.id.clone(), scores }))
}

async fn gradients(State(s): State<Arc<AppState>>, req: Request) -> Result<Json<GradientResponse>, ApiError> {
    let body = read_body(&s, req).await?;
    let g = blocking(&s, body, prepare_gradients).await?;
    let out = s.backend.gradients(g.requests, s.cfg.request_timeout).await?;
    let gradients = out.into_iter().map(|o| Gradient { loss: o.loss, grad: WireSoftPrompt::encode(&o.grad, Dtype::F32) }).collect();
    let usage = Usage { prompt_tokens: g.tokens, completion_tokens: 0, total_tokens: g.tokens };
    Ok(Json(GradientResponse { object: "soft_prompt_grad".into(), model: s.info.id.clone(), gradients, usage }))
}

