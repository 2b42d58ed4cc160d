//! The wire format of `lopa serve` (shared by the server and the browser client): OpenAI-style completion requests with one extra field,
//! `soft_prompt`, and its strict validation. Every tensor that arrives from a client is checked
//! before it touches the model (vLLM's CVE-2025-62164 was a crafted prompt tensor): base64 must be
//! canonical, the dtype known, the byte length exact, the shape `[m, d]` with `d` the model width
//! and `m` within the server's limit, and every value finite.

use base64::Engine as _;
use half::f16;
use crate::model::sampling::FinishReason;
use crate::model::SoftPrompt;
use serde::{Deserialize, Serialize};

/// A soft prompt as it travels: `data` is base64 of little-endian `dtype` values, row-major.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireSoftPrompt {
    pub shape: Vec<u64>,
    pub dtype: String,
    pub data: String,
}

/// Why a client tensor was refused. `code()` is the stable name sent back to clients.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TensorRule {
    #[error("soft_prompt.dtype `{0}` is not supported (f32, f16)")]
    Dtype(String),
    #[error("soft_prompt.shape must be [m, d], got {0:?}")]
    Rank(Vec<u64>),
    #[error("soft_prompt.shape [m, {got}]: d must equal the model width {want}")]
    Width { got: u64, want: usize },
    #[error("soft_prompt.shape [{got}, d]: m must be between 1 and {max}")]
    Rows { got: u64, max: usize },
    #[error("soft_prompt.data is not valid base64: {0}")]
    Base64(String),
    #[error("soft_prompt.data holds {got} bytes, shape and dtype need exactly {want}")]
    ByteLength { got: usize, want: usize },
    #[error("soft_prompt.data is encoded as {encoded} base64 characters, more than a [{m}, {d}] tensor needs")]
    TooLong { encoded: usize, m: usize, d: usize },
    #[error("soft_prompt value at flat index {0} is not finite")]
    NonFinite(usize),
    #[error("{0}")]
    Torch(String),
}

impl TensorRule {
    /// A stable machine-readable name for the rule.
    pub fn code(&self) -> &'static str {
        match self {
            TensorRule::Dtype(_) => "soft_prompt_dtype",
            TensorRule::Rank(_) => "soft_prompt_rank",
            TensorRule::Width { .. } => "soft_prompt_width",
            TensorRule::Rows { .. } => "soft_prompt_rows",
            TensorRule::Base64(_) => "soft_prompt_base64",
            TensorRule::ByteLength { .. } => "soft_prompt_byte_length",
            TensorRule::TooLong { .. } => "soft_prompt_too_long",
            TensorRule::NonFinite(_) => "soft_prompt_non_finite",
            TensorRule::Torch(_) => "prompt_embeds_format",
        }
    }
}

/// The element types a soft prompt travels as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Dtype {
    /// Half the bytes; what clients send by default.
    #[default]
    F16,
    F32,
}

impl Dtype {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Dtype::F16 => "f16",
            Dtype::F32 => "f32",
        }
    }

    /// The wire name, or the refusal every client tensor with another name gets (`float32` and
    /// `float16` are accepted as aliases).
    pub fn parse(name: &str) -> Result<Self, TensorRule> {
        match name {
            "f32" | "float32" => Ok(Dtype::F32),
            "f16" | "float16" => Ok(Dtype::F16),
            other => Err(TensorRule::Dtype(other.chars().take(32).collect())),
        }
    }

    /// Bytes per value.
    pub fn size(self) -> usize {
        match self {
            Dtype::F16 => 2,
            Dtype::F32 => 4,
        }
    }
}

/// The rules every client tensor shares: `[m, d]` with `d` the model width and `1 ≤ m ≤ max_rows`.
pub(crate) fn check_shape(shape: &[u64], width: usize, max_rows: usize) -> Result<(usize, usize), TensorRule> {
    let [m, d] = shape[..] else {
        return Err(TensorRule::Rank(shape.iter().take(8).copied().collect()));
    };
    if d != width as u64 {
        return Err(TensorRule::Width { got: d, want: width });
    }
    if m == 0 || m > max_rows as u64 {
        return Err(TensorRule::Rows { got: m, max: max_rows });
    }
    Ok((m as usize, d as usize))
}

/// Finite values only.
pub(crate) fn check_finite(values: Vec<f32>, rows: usize, width: usize) -> Result<SoftPrompt, TensorRule> {
    let z = SoftPrompt::new(values, rows, width).map_err(|e| TensorRule::Torch(e.to_string()))?;
    match z.first_non_finite() {
        Some(i) => Err(TensorRule::NonFinite(i)),
        None => Ok(z),
    }
}

impl WireSoftPrompt {
    /// Encode a soft prompt for the wire.
    pub fn encode(z: &SoftPrompt, dtype: Dtype) -> Self {
        let values = z.values();
        let bytes: Vec<u8> = match dtype {
            Dtype::F16 => values.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect(),
            Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        WireSoftPrompt {
            shape: vec![z.rows() as u64, z.width() as u64],
            dtype: dtype.as_str().into(),
            data: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }

    /// Check every rule, in an order that never decodes or allocates more than the shape allows.
    pub fn decode(&self, width: usize, max_rows: usize) -> Result<SoftPrompt, TensorRule> {
        let dtype = Dtype::parse(&self.dtype)?;
        let size = dtype.size();
        let (m, d) = check_shape(&self.shape, width, max_rows)?;
        let want = m * d * size;
        // Refuse oversized payloads before decoding them.
        let max_encoded = want.div_ceil(3) * 4;
        if self.data.len() > max_encoded {
            return Err(TensorRule::TooLong { encoded: self.data.len(), m, d });
        }
        let bytes = base64::engine::general_purpose::STANDARD.decode(self.data.as_bytes()).map_err(|e| TensorRule::Base64(e.to_string()))?;
        if bytes.len() != want {
            return Err(TensorRule::ByteLength { got: bytes.len(), want });
        }
        let values: Vec<f32> = match dtype {
            Dtype::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::F16 => bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        };
        check_finite(values, m, d)
    }
}

impl TryFrom<String> for Dtype {
    type Error = TensorRule;
    fn try_from(name: String) -> Result<Self, TensorRule> {
        Dtype::parse(&name)
    }
}

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

/// Where gradients are asked for.
pub const GRADIENT_PATH: &str = "/v1/soft_prompt_grad";
/// Where completions are posted.
pub const COMPLETIONS_PATH: &str = "/v1/completions";
/// Where candidates are scored.
pub const SCORE_PATH: &str = "/v1/score";

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

    /// The JSON body.
    pub fn body(&self) -> String {
        serde_json::to_string(self).expect("plain JSON values")
    }
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

    fn wire(shape: Vec<u64>, dtype: &str, data: String) -> WireSoftPrompt {
        WireSoftPrompt { shape, dtype: dtype.into(), data }
    }

    #[test]
    fn f32_and_f16_round_trip() {
        let v: Vec<f32> = (0..12).map(|i| i as f32 * 0.25 - 1.0).collect();
        let z = SoftPrompt::new(v.clone(), 3, 4).unwrap();
        assert_eq!(WireSoftPrompt::encode(&z, Dtype::F32).decode(4, 64).unwrap(), z);
        // These values are exact in f16.
        assert_eq!(WireSoftPrompt::encode(&z, Dtype::F16).decode(4, 64).unwrap().values(), v);
    }

    #[test]
    fn every_rule_has_its_error() {
        let sp = |v: &[f32]| SoftPrompt::new(v.to_vec(), 2, 4).unwrap();
        let ok = WireSoftPrompt::encode(&sp(&[0.5; 8]), Dtype::F32);
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let cases: Vec<(WireSoftPrompt, &str, &str)> = vec![
            (wire(vec![2, 4], "bf16", ok.data.clone()), "soft_prompt_dtype", "soft_prompt.dtype `bf16` is not supported (f32, f16)"),
            (wire(vec![8], "f32", ok.data.clone()), "soft_prompt_rank", "soft_prompt.shape must be [m, d], got [8]"),
            (wire(vec![2, 5], "f32", ok.data.clone()), "soft_prompt_width", "soft_prompt.shape [m, 5]: d must equal the model width 4"),
            (wire(vec![0, 4], "f32", String::new()), "soft_prompt_rows", "soft_prompt.shape [0, d]: m must be between 1 and 64"),
            (wire(vec![u64::MAX, 4], "f32", String::new()), "soft_prompt_rows", "soft_prompt.shape [18446744073709551615, d]: m must be between 1 and 64"),
            (wire(vec![2, 4], "f32", "@@@@".into()), "soft_prompt_base64", ""),
            (wire(vec![2, 4], "f32", b64(&[0u8; 28])), "soft_prompt_byte_length", "soft_prompt.data holds 28 bytes, shape and dtype need exactly 32"),
            (wire(vec![2, 4], "f32", "A".repeat(1000)), "soft_prompt_too_long", "soft_prompt.data is encoded as 1000 base64 characters, more than a [2, 4] tensor needs"),
            (WireSoftPrompt::encode(&sp(&[0.5, 1.0, f32::NAN, 0.0, 0.0, 0.0, 0.0, 0.0]), Dtype::F32), "soft_prompt_non_finite", "soft_prompt value at flat index 2 is not finite"),
            (WireSoftPrompt::encode(&sp(&[0.5, 1.0, 1e6, 0.0, 0.0, 0.0, 0.0, 0.0]), Dtype::F16), "soft_prompt_non_finite", "soft_prompt value at flat index 2 is not finite"),
        ];
        for (w, code, msg) in cases {
            let e = w.decode(4, 64).unwrap_err();
            assert_eq!(e.code(), code, "{e}");
            if !msg.is_empty() {
                assert_eq!(e.to_string(), msg);
            }
        }
    }

    #[test]
    fn random_and_truncated_inputs_never_panic() {
        // A property test without a framework: thousands of random shapes, dtypes and payloads.
        let mut rng = crate::rng::Rng::new(99);
        let ok = WireSoftPrompt::encode(&SoftPrompt::new((0..40).map(|i| i as f32).collect(), 10, 4).unwrap(), Dtype::F32);
        for i in 0..5000 {
            let r = rng.next_u64();
            let shape: Vec<u64> = (0..(r % 4)).map(|_| match rng.next_u64() % 4 { 0 => 4, 1 => 10, 2 => rng.next_u64(), _ => rng.next_u64() % 100 }).collect();
            let data = match i % 3 {
                0 => ok.data[..(rng.next_u64() as usize % (ok.data.len() + 1))].to_string(),
                1 => (0..(rng.next_u64() % 200)).map(|_| (32 + (rng.next_u64() % 95) as u8) as char).collect(),
                _ => base64::engine::general_purpose::STANDARD.encode((0..(rng.next_u64() % 200)).map(|_| rng.next_u64() as u8).collect::<Vec<_>>()),
            };
            let dtype = ["f32", "f16", "x", ""][(r >> 8) as usize % 4];
            let _ = wire(shape, dtype, data).decode(4, 64);
        }
        // Request bodies: random bytes and truncated JSON are errors, not panics.
        let body = br#"{"prompt":"hi","max_tokens":4,"soft_prompt":{"shape":[10,4],"dtype":"f32","data":"AAAA"}}"#;
        for n in 0..body.len() {
            let _ = serde_json::from_slice::<CompletionRequest>(&body[..n]);
        }
        assert!(serde_json::from_slice::<CompletionRequest>(body).is_ok());
        assert!(serde_json::from_slice::<CompletionRequest>(br#"{"prompt":"hi","adapter":{}}"#).is_err(), "unknown fields are refused");
    }
}
