//! The answers of `lopa serve`, and the error body every refusal carries.

use super::soft_prompt::WireSoftPrompt;
use crate::model::sampling::FinishReason;
use serde::{Deserialize, Serialize};

/// `POST /v1/soft_prompt_grad` answer: one entry per example, in the request's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GradientResponse {
    /// `soft_prompt_grad`.
    pub object: String,
    pub model: String,
    pub gradients: Vec<Gradient>,
    pub usage: Usage,
}

/// An example's loss (mean negative log-likelihood of the target's tokens, nats) and
/// dLoss/dZ (`[m, d]`, always f32).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gradient {
    pub loss: f32,
    pub grad: WireSoftPrompt,
}


/// `POST /v1/completions` answer (and, with `usage` absent, each streamed chunk).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionResponse {
    pub id: String,
    /// `text_completion`.
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// The one choice of a completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionChoice {
    pub index: usize,
    pub text: String,
    /// Present when the request asked for `logprobs`.
    pub logprobs: Option<Logprobs>,
    /// `null` in streamed chunks before the last.
    pub finish_reason: Option<FinishReason>,
}

/// Each new token with its log-probability under the unscaled model distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Logprobs {
    pub tokens: Vec<String>,
    pub token_ids: Vec<u32>,
    pub token_logprobs: Vec<f32>,
}

/// Token counts; soft-prompt rows count as prompt tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

/// `POST /v1/score` answer: one entry per candidate, in the request's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreResponse {
    /// `score`.
    pub object: String,
    pub model: String,
    pub scores: Vec<Score>,
}

/// One candidate's score: `logprob` summed over its tokens; `probability` normalised over the
/// candidates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub text: String,
    pub logprob: f32,
    pub probability: f32,
}

/// Every refusal, and an error that ends a stream: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub error: ErrorDetail,
}

/// A stable code (the refusal table's) and a message for people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}
