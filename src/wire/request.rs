//! The request bodies of `lopa serve`: OpenAI's completion fields lopa honours plus
//! `soft_prompt`, scoring, and soft-prompt gradients. The client writes them, the server reads
//! them: one type for both, refusing unknown fields.

use super::soft_prompt::WireSoftPrompt;
use super::{COMPLETIONS_PATH, SCORE_PATH};
use serde::{Deserialize, Serialize};

/// `POST /v1/completions` body (OpenAI fields lopa honours, plus `soft_prompt`). The client
/// writes it, the server reads it: one type for both.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompletionRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Text after the soft prompt (may be empty when a soft prompt or `prompt_embeds` is given).
    #[serde(default)]
    pub prompt: String,
    /// vLLM's field: base64 of `torch.save(tensor)` bytes, shape `[m, d]`, fp32/fp16/bf16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_embeds: Option<String>,
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopField>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u32>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_prompt: Option<WireSoftPrompt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

fn default_max_tokens() -> usize {
    16
}

impl Default for CompletionRequest {
    fn default() -> Self {
        serde_json::from_str("{}").expect("every field has a default")
    }
}

/// `POST /v1/score` body: which continuation of `prompt` is most likely behind the soft prompt.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub prompt: String,
    /// Continuations to compare, e.g. label words `[" great", " terrible"]`.
    pub candidates: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_prompt: Option<WireSoftPrompt>,
}

/// `POST /v1/soft_prompt_grad` body: examples to differentiate through the frozen model, so a
/// client can train its own generator. The server keeps nothing of them after answering.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GradientRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub examples: Vec<GradientExample>,
}

/// One example: `target` (a label word or a short continuation) should follow `prompt` behind
/// `soft_prompt`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GradientExample {
    pub prompt: String,
    pub target: String,
    pub soft_prompt: WireSoftPrompt,
}

/// A request for `lopa serve`: what [`crate::client::Client::request`] builds.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Request {
    Score(ScoreRequest),
    Completion(CompletionRequest),
}

impl Request {
    /// Where it is POSTed.
    pub fn path(&self) -> &'static str {
        match self {
            Request::Score(_) => SCORE_PATH,
            Request::Completion(_) => COMPLETIONS_PATH,
        }
    }

    /// `score` or `completion`.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Score(_) => "score",
            Request::Completion(_) => "completion",
        }
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        serde_json::to_string(self).expect("plain JSON values")
    }
}


/// Most stop strings per request.
pub const MAX_STOPS: usize = 4;
/// Longest stop string, in bytes.
pub const MAX_STOP_BYTES: usize = 64;

/// OpenAI's `stop`: one string or a list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StopField {
    One(String),
    Many(Vec<String>),
}

impl StopField {
    /// The stop strings.
    pub fn strings(&self) -> Vec<String> {
        match self {
            StopField::One(s) => vec![s.clone()],
            StopField::Many(v) => v.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_and_truncated_bodies_are_errors_not_panics() {
        let body = br#"{"prompt":"hi","max_tokens":4,"soft_prompt":{"shape":[10,4],"dtype":"f32","data":"AAAA"}}"#;
        for n in 0..body.len() {
            let _ = serde_json::from_slice::<CompletionRequest>(&body[..n]);
        }
        assert!(serde_json::from_slice::<CompletionRequest>(body).is_ok());
        assert!(serde_json::from_slice::<CompletionRequest>(br#"{"prompt":"hi","adapter":{}}"#).is_err(), "unknown fields are refused");
    }
}
