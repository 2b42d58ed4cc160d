//! Where the frozen model runs: the embedded [`Engine`] in this process, or vLLM behind this
//! gateway. Each generates, scores and answers health the same way for the routes; both end a
//! generation at its stop strings, where it happens.

use super::engine::{Engine, Submit};
use super::error::ApiError;
use super::stop::StopStrings;
use super::upstream::Vllm;
use crate::model::generate::{Generation, GenerationRequest};
use crate::model::gradient::{GradientRequest, SoftPromptGradient};
use crate::model::sampling::SamplingParams;
use axum::http::StatusCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Where the frozen model runs.
#[derive(Clone)]
pub enum Backend {
    /// In this process ([`Engine`]).
    Embedded(Engine),
    /// A vLLM server behind this gateway.
    Vllm(Arc<Vllm>),
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Embedded(_) => "embedded",
            Backend::Vllm(_) => "vllm",
        }
    }

    /// Start a generation; dropping the receiver cancels it.
    pub(super) fn start(&self, request: GenerationRequest, params: SamplingParams, stops: &StopStrings, tokens: Option<mpsc::UnboundedSender<u32>>) -> Result<oneshot::Receiver<crate::Result<Generation>>, ApiError> {
        match self {
            Backend::Embedded(e) => Ok(e.submit(request, params, stops.clone(), tokens)?),
            Backend::Vllm(v) => Ok(v.start(request, params, stops.strings().to_vec(), tokens)),
        }
    }

    pub(super) async fn score(&self, request: GenerationRequest, candidates: Vec<Vec<u32>>, timeout: Duration) -> Result<Vec<f32>, ApiError> {
        match self {
            Backend::Embedded(e) => await_reply(e.submit_score(request, candidates)?, timeout).await,
            Backend::Vllm(v) => match tokio::time::timeout(timeout, v.score(&request, &candidates)).await {
                Err(_) => Err(ApiError::timeout()),
                Ok(r) => r.map_err(ApiError::from),
            },
        }
    }

    pub(super) async fn gradients(&self, requests: Vec<GradientRequest>, timeout: Duration) -> Result<Vec<SoftPromptGradient>, ApiError> {
        match self {
            Backend::Embedded(e) => await_reply(e.submit_gradients(requests)?, timeout).await,
            Backend::Vllm(_) => Err(ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "gradients_unavailable",
                "soft-prompt gradients need the embedded engine: vLLM has no backward pass (run lopa serve without --upstream)",
            )),
        }
    }

    pub(super) async fn health(&self) -> Result<(), ApiError> {
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

/// Wait for the backend's answer within the request timeout. On timeout the receiver is
/// dropped, which cancels the work.
pub(super) async fn await_reply<T>(rx: oneshot::Receiver<crate::Result<T>>, timeout: Duration) -> Result<T, ApiError> {
    match tokio::time::timeout(timeout, rx).await {
        Err(_) => Err(ApiError::timeout()),
        Ok(Err(_)) => Err(Submit::Stopped.into()),
        Ok(Ok(r)) => r.map_err(ApiError::from),
    }
}

