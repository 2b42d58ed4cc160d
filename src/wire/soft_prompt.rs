//! A soft prompt as it travels, and the rules every client tensor passes before it touches the
//! model (vLLM's CVE-2025-62164 was a crafted prompt tensor): base64 must be canonical, the dtype
//! known, the byte length exact, the shape `[m, d]` with `d` the model width and `m` within the
//! server's limit, and every value finite. Each broken rule is a [`TensorRule`] with a stable code.

use crate::model::SoftPrompt;
use base64::Engine as _;
use half::f16;
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
fn check_shape(shape: &[u64], width: usize, max_rows: usize) -> Result<(usize, usize), TensorRule> {
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
fn check_finite(values: Vec<f32>, rows: usize, width: usize) -> Result<SoftPrompt, TensorRule> {
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


/// Decode vLLM's `prompt_embeds` (base64 of `torch.save` bytes) under the same rules as
/// `soft_prompt`.
#[cfg(feature = "server")]
pub fn decode_prompt_embeds(b64: &str, width: usize, max_rows: usize) -> Result<SoftPrompt, TensorRule> {
    use crate::model::weights::torch::load_tensor;
    // A [max_rows, width] f64 tensor plus a few KiB of archive is the most a valid payload needs.
    let limit = (max_rows * width * 8 + 64 * 1024).div_ceil(3) * 4;
    if b64.len() > limit {
        return Err(TensorRule::TooLong { encoded: b64.len(), m: max_rows, d: width });
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64.as_bytes()).map_err(|e| TensorRule::Base64(e.to_string()))?;
    let (shape, values) = load_tensor(&bytes).map_err(|e| TensorRule::Torch(e.0))?;
    let shape: Vec<u64> = shape.iter().map(|&x| x as u64).collect();
    let (m, d) = check_shape(&shape, width, max_rows)?;
    check_finite(values, m, d)
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
    }
}
