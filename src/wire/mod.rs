//! The contract between the client and `lopa serve`, apart from both: OpenAI-style completion
//! requests with one extra field, `soft_prompt`, scoring and soft-prompt gradients, their
//! answers, and the error body. It builds everywhere (the browser client writes it; the server
//! reads it).
//!
//! - [`soft_prompt`]: the tensor encoding and the rules every client tensor passes.
//! - [`request`]: request bodies, and [`Request`], what a client sends.
//! - [`response`]: answers and [`ErrorResponse`].

pub mod request;
pub mod response;
pub mod soft_prompt;

pub use request::{CompletionRequest, GradientExample, GradientRequest, Request, ScoreRequest, StopField, MAX_STOPS, MAX_STOP_BYTES};
pub use response::{CompletionChoice, CompletionResponse, ErrorDetail, ErrorResponse, Gradient, GradientResponse, Logprobs, Score, ScoreResponse, Usage};
pub use soft_prompt::{Dtype, TensorRule, WireSoftPrompt};

/// Where gradients are asked for.
pub const GRADIENT_PATH: &str = "/v1/soft_prompt_grad";
/// Where completions are posted.
pub const COMPLETIONS_PATH: &str = "/v1/completions";
/// Where candidates are scored.
pub const SCORE_PATH: &str = "/v1/score";
