//! The decoder's configuration, read strictly from a Hugging Face `config.json` (transformers 4
//! and 5 layouts) or from GGUF metadata.
//!
//! Field names follow `config.json`. Every field that changes the arithmetic is either
//! implemented or refused with its name and value; fields that do not (token ids, dtype,
//! initialisation, dropout) are ignored. docs/ARCHITECTURES.md has the table per architecture.

use super::fields::{bad, refuse, Fields};
use super::rope::{base_inv_freq, parse_rope_scaling, theta_of, RopeScaling};
use crate::error::{Error, Result};
use serde_json::{json, Value};

/// The decoder families lopa implements (`model_type` in `config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelType {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    /// Gemma 3's text model (`gemma3_text`; a GGUF calls it `gemma3`).
    Gemma3,
}

impl ModelType {
    /// `config.json`'s `model_type` (or a GGUF's `general.architecture`).
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "llama" => Self::Llama,
            "mistral" => Self::Mistral,
            "qwen2" => Self::Qwen2,
            "qwen3" => Self::Qwen3,
            "gemma3_text" => Self::Gemma3,
            "gemma3" => return Err(Error::Config("model_type `gemma3` is the multimodal Gemma 3; lopa runs the text model (`gemma3_text`)".into())),
            other => return Err(Error::Config(format!("model_type `{other}` is not supported (llama, mistral, qwen2, qwen3, gemma3_text)"))),
        })
    }
    /// The name `config.json` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Mistral => "mistral",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
            Self::Gemma3 => "gemma3_text",
        }
    }
    /// The transformers class of the causal LM.
    pub fn hf_architecture(self) -> &'static str {
        match self {
            Self::Llama => "LlamaForCausalLM",
            Self::Mistral => "MistralForCausalLM",
            Self::Qwen2 => "Qwen2ForCausalLM",
            Self::Qwen3 => "Qwen3ForCausalLM",
            Self::Gemma3 => "Gemma3ForCausalLM",
        }
    }
}

/// Which keys a layer's queries see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerType {
    /// Every earlier slot.
    FullAttention,
    /// The last `sliding_window` positions, this one included.
    SlidingAttention,
}

/// The MLP's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `silu` (SwiGLU).
    Silu,
    /// `gelu_pytorch_tanh` (GeGLU with the tanh approximation).
    GeluTanh,
}

impl Activation {
    fn as_str(self) -> &'static str {
        match self {
            Self::Silu => "silu",
            Self::GeluTanh => "gelu_pytorch_tanh",
        }
    }
}

/// A decoder's configuration, field names as in `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    pub model_type: ModelType,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub rms_norm_eps: f64,
    /// RoPE base of full-attention layers.
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    /// RoPE base of sliding-window layers (Gemma 3); `None`: `rope_theta`.
    pub rope_local_base_freq: Option<f64>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Biases on the attention projections (see [`DecoderConfig::qkv_bias`]).
    pub attention_bias: Option<bool>,
    /// Window of [`LayerType::SlidingAttention`] layers.
    pub sliding_window: Option<usize>,
    /// One per layer.
    pub layer_types: Vec<LayerType>,
    /// Attention scores are scaled by `query_pre_attn_scalar^-1/2` (Gemma 3); `None`: `head_dim`.
    pub query_pre_attn_scalar: Option<f64>,
    pub hidden_act: Activation,
}


impl DecoderConfig {
    /// Parse and check a Hugging Face `config.json`.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| Error::Config(format!("decoder config.json: {e}")))?;
        let o = v.as_object().ok_or_else(|| Error::Config("decoder config.json is not an object".into()))?;
        let c = Self::from_fields(&Fields { o })?;
        c.validate()?;
        Ok(c)
    }

    fn from_fields(f: &Fields) -> Result<Self> {
        let mt = ModelType::parse(f.str("model_type")?.ok_or_else(|| Error::Config("config.json has no `model_type`".into()))?)?;
        let gemma = mt == ModelType::Gemma3;
        // Fields that change the arithmetic and that lopa does not implement.
        for k in ["attn_logit_softcapping", "final_logit_softcapping"] {
            if let Some(v) = f.get(k) {
                return Err(refuse(k, v, "logit soft-capping is not implemented"));
            }
        }
        for (k, why) in [
            ("mlp_bias", "biases on the MLP are not implemented"),
            ("use_bidirectional_attention", "lopa's decoder is causal"),
            ("use_sliding_window", "qwen's per-layer sliding window (max_window_layers) is not implemented"),
        ] {
            if f.bool(k)? == Some(true) {
                return Err(refuse(k, f.get(k).expect("read"), why));
            }
        }
        if let Some(v) = f.get("partial_rotary_factor").filter(|v| v.as_f64() != Some(1.0)) {
            return Err(refuse("partial_rotary_factor", v, "RoPE on part of each head is not implemented"));
        }
        if let Some(v) = f.get("quantization_config") {
            return Err(refuse("quantization_config", v, "quantized safetensors are not read; use f32/f16/bf16 weights or a GGUF file"));
        }
        for k in ["num_experts", "num_local_experts", "moe_intermediate_size"] {
            if let Some(v) = f.get(k).filter(|v| v.as_u64() != Some(0)) {
                return Err(refuse(k, v, "mixture-of-experts layers are not implemented"));
            }
        }
        if mt == ModelType::Mistral && f.bool("attention_bias")? == Some(true) {
            return Err(refuse("attention_bias", &json!(true), "mistral has no attention biases"));
        }
        let act_key = if gemma && f.get("hidden_activation").is_some() { "hidden_activation" } else { "hidden_act" };
        let hidden_act = match f.str(act_key)? {
            None if gemma => Activation::GeluTanh,
            None => Activation::Silu,
            Some("silu") if !gemma => Activation::Silu,
            Some("gelu_pytorch_tanh") if gemma => Activation::GeluTanh,
            Some(other) => return Err(refuse(act_key, &json!(other), if gemma { "gemma3 runs gelu_pytorch_tanh" } else { "this architecture runs silu" })),
        };
        let num_hidden_layers = f.need("num_hidden_layers")?;
        let num_attention_heads = f.need("num_attention_heads")?;
        let hidden_size = f.need("hidden_size")?;

        // RoPE: transformers 4 writes rope_theta + rope_scaling (+ gemma3's rope_local_base_freq);
        // transformers 5 writes rope_parameters, per layer type for gemma3.
        let default_theta = if gemma { 1_000_000.0 } else { 10_000.0 };
        let mut rope_theta = f.f64("rope_theta")?.unwrap_or(default_theta);
        let mut rope_local_base_freq = if gemma { Some(f.f64("rope_local_base_freq")?.unwrap_or(10_000.0)) } else { None };
        let mut rope_scaling = f.get("rope_scaling").map(|v| parse_rope_scaling("rope_scaling", v)).transpose()?.flatten();
        if let Some(p) = f.get("rope_parameters") {
            let po = p.as_object().ok_or_else(|| bad("rope_parameters", p, "an object"))?;
            if gemma && (po.contains_key("full_attention") || po.contains_key("sliding_attention")) {
                if let Some(full) = po.get("full_attention").filter(|v| !v.is_null()) {
                    rope_scaling = parse_rope_scaling("rope_parameters.full_attention", full)?;
                    rope_theta = theta_of("rope_parameters.full_attention", full)?.unwrap_or(rope_theta);
                }
                if let Some(local) = po.get("sliding_attention").filter(|v| !v.is_null()) {
                    if parse_rope_scaling("rope_parameters.sliding_attention", local)?.is_some() {
                        return Err(refuse("rope_parameters.sliding_attention", local, "rope scaling on sliding layers is not implemented"));
                    }
                    rope_local_base_freq = theta_of("rope_parameters.sliding_attention", local)?.or(rope_local_base_freq);
                }
            } else {
                rope_scaling = parse_rope_scaling("rope_parameters", p)?;
                rope_theta = theta_of("rope_parameters", p)?.unwrap_or(rope_theta);
                if let Some(v) = po.get("partial_rotary_factor").filter(|v| v.as_f64() != Some(1.0)) {
                    return Err(refuse("rope_parameters.partial_rotary_factor", v, "RoPE on part of each head is not implemented"));
                }
            }
        }

        // Attention windows.
        let sliding_window = f.usize("sliding_window")?;
        let layer_types = match f.get("layer_types") {
            Some(v) => {
                let a = v.as_array().ok_or_else(|| bad("layer_types", v, "a list"))?;
                if a.len() != num_hidden_layers {
                    return Err(Error::Config(format!("`layer_types` has {} entries, num_hidden_layers is {num_hidden_layers}", a.len())));
                }
                a.iter()
                    .map(|t| match t.as_str() {
                        Some("full_attention") => Ok(LayerType::FullAttention),
                        Some("sliding_attention") => Ok(LayerType::SlidingAttention),
                        _ => Err(refuse("layer_types", t, "only full_attention and sliding_attention are implemented")),
                    })
                    .collect::<Result<Vec<_>>>()?
            }
            // Gemma 3 configs on the Hub give the pattern: every n-th layer is global.
            None if gemma => {
                let n = f.usize("sliding_window_pattern")?.or(f.usize("_sliding_window_pattern")?).unwrap_or(6).max(1);
                (0..num_hidden_layers).map(|i| if (i + 1) % n == 0 { LayerType::FullAttention } else { LayerType::SlidingAttention }).collect()
            }
            // Mistral's window applies to every layer.
            None if mt == ModelType::Mistral && sliding_window.is_some() => vec![LayerType::SlidingAttention; num_hidden_layers],
            None => vec![LayerType::FullAttention; num_hidden_layers],
        };
        let sliding_window = if layer_types.contains(&LayerType::SlidingAttention) {
            Some(sliding_window.filter(|&w| w > 0).ok_or_else(|| Error::Config("sliding-window layers need a positive `sliding_window`".into()))?)
        } else if mt == ModelType::Llama {
            if let Some(w) = sliding_window {
                return Err(refuse("sliding_window", &json!(w), "llama has no sliding window"));
            }
            None
        } else {
            // qwen2/qwen3 write a window that applies only with use_sliding_window (refused above).
            None
        };

        Ok(Self {
            model_type: mt,
            vocab_size: f.need("vocab_size")?,
            hidden_size,
            intermediate_size: f.need("intermediate_size")?,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads: f.usize("num_key_value_heads")?,
            head_dim: f.usize("head_dim")?.or(match mt {
                ModelType::Gemma3 => Some(256),
                ModelType::Qwen3 => Some(128),
                _ => None,
            }),
            rms_norm_eps: f.f64("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            rope_local_base_freq,
            max_position_embeddings: f.usize("max_position_embeddings")?.unwrap_or(2048),
            tie_word_embeddings: f.bool("tie_word_embeddings")?.unwrap_or(gemma),
            attention_bias: f.bool("attention_bias")?,
            sliding_window,
            layer_types,
            query_pre_attn_scalar: if gemma { Some(f.f64("query_pre_attn_scalar")?.unwrap_or(256.0)) } else { None },
            hidden_act,
        })
    }

    /// The checks every config passes, however it was made.
    pub(crate) fn validate(&self) -> Result<()> {
        let kv = self.kv_heads();
        if self.num_attention_heads == 0 || kv == 0 || !self.num_attention_heads.is_multiple_of(kv) {
            return Err(Error::Config(format!(
                "num_attention_heads {} must be a positive multiple of num_key_value_heads {kv}",
                self.num_attention_heads
            )));
        }
        if !self.head_dim().is_multiple_of(2) || self.head_dim() == 0 {
            return Err(Error::Config(format!("head_dim {} must be even and positive", self.head_dim())));
        }
        for (k, v) in [("hidden_size", self.hidden_size), ("intermediate_size", self.intermediate_size), ("vocab_size", self.vocab_size), ("num_hidden_layers", self.num_hidden_layers)] {
            if v == 0 {
                return Err(Error::Config(format!("`{k}` must be positive")));
            }
        }
        if self.layer_types.len() != self.num_hidden_layers {
            return Err(Error::Config(format!("{} layer types for {} layers", self.layer_types.len(), self.num_hidden_layers)));
        }
        if !(self.rms_norm_eps > 0.0 && self.rope_theta > 0.0 && self.rope_local_base_freq.is_none_or(|t| t > 0.0)) {
            return Err(Error::Config("rms_norm_eps and the RoPE bases must be positive".into()));
        }
        if let Some(s) = self.query_pre_attn_scalar.filter(|s| *s <= 0.0) {
            return Err(Error::Config(format!("query_pre_attn_scalar {s} must be positive")));
        }
        match &self.rope_scaling {
            Some(RopeScaling::Linear { factor }) | Some(RopeScaling::Llama3 { factor, .. }) if *factor < 1.0 => {
                Err(Error::Config(format!("rope_scaling factor {factor} must be at least 1")))
            }
            Some(RopeScaling::Llama3 { low_freq_factor: l, high_freq_factor: h, original_max_position_embeddings: o, .. }) if !(*l > 0.0 && h > l && *o > 0) => {
                Err(Error::Config(format!("llama3 rope_scaling needs 0 < low_freq_factor {l} < high_freq_factor {h} and original_max_position_embeddings > 0")))
            }
            Some(RopeScaling::FreqFactors(d)) if d.len() != self.head_dim() / 2 || d.iter().any(|x| !(x.is_finite() && *x > 0.0)) => {
                Err(Error::tensor("rope_freqs.weight", format!("needs {} positive values", self.head_dim() / 2)))
            }
            _ => Ok(()),
        }
    }

    /// A LoRA on q/k/v for a decoder of this shape.
    pub fn lora(&self, rank: usize, alpha: f64) -> crate::model::lora::LoraConfig {
        let hd = self.head_dim();
        crate::model::lora::LoraConfig { rank, alpha, num_hidden_layers: self.num_hidden_layers, hidden_size: self.hidden_size, q_dim: self.num_attention_heads * hd, kv_dim: self.kv_heads() * hd }
    }

    /// Key/value heads (GQA).
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }
    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }
    /// Biases on q/k/v: qwen2 always has them; the others when `attention_bias` says so.
    pub fn qkv_bias(&self) -> bool {
        self.attention_bias.unwrap_or(self.model_type == ModelType::Qwen2)
    }
    /// A bias on o_proj: with `attention_bias`, except in qwen2 (whose biases are q/k/v only).
    pub fn o_bias(&self) -> bool {
        self.model_type != ModelType::Qwen2 && self.attention_bias.unwrap_or(false)
    }
    /// Per-head RMSNorm of queries and keys before RoPE (qwen3, gemma3).
    pub fn qk_norm(&self) -> bool {
        matches!(self.model_type, ModelType::Qwen3 | ModelType::Gemma3)
    }
    /// Norms after attention and after the MLP too, four per layer (gemma3).
    pub fn sandwich_norms(&self) -> bool {
        self.model_type == ModelType::Gemma3
    }
    /// Gemma's RMSNorm multiplies by `1 + weight`: the offset added to stored norm weights.
    pub fn norm_offset(&self) -> f32 {
        if self.model_type == ModelType::Gemma3 { 1.0 } else { 0.0 }
    }
    /// Token embeddings are multiplied by this (√hidden_size in gemma3); a soft prompt lives in
    /// the scaled space, as `inputs_embeds` does in transformers and vLLM.
    pub fn embed_scale(&self) -> f32 {
        if self.model_type == ModelType::Gemma3 { (self.hidden_size as f32).sqrt() } else { 1.0 }
    }
    /// The factor on q·k.
    pub fn attention_scale(&self) -> f64 {
        self.query_pre_attn_scalar.unwrap_or(self.head_dim() as f64).powf(-0.5)
    }
    /// RoPE inverse frequencies for a layer of type `t` (`head_dim / 2` values).
    pub fn inv_freq(&self, t: LayerType) -> Result<Vec<f64>> {
        match (t, self.rope_local_base_freq) {
            (LayerType::SlidingAttention, Some(local)) => Ok(base_inv_freq(local, self.head_dim())),
            _ => {
                let mut f = base_inv_freq(self.rope_theta, self.head_dim());
                if let Some(s) = &self.rope_scaling {
                    s.apply(&mut f)?;
                }
                Ok(f)
            }
        }
    }

    /// This config as a Hugging Face `config.json` (what `lopa export-hf` writes).
    pub fn to_hf_json(&self) -> Result<Value> {
        let mut c = json!({
            "architectures": [self.model_type.hf_architecture()],
            "model_type": self.model_type.as_str(),
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.kv_heads(),
            "head_dim": self.head_dim(),
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling.as_ref().map(|s| s.to_hf_json(self.head_dim(), self.rope_theta)).transpose()?,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "torch_dtype": "float32",
        });
        let o = c.as_object_mut().expect("object");
        let act = if self.model_type == ModelType::Gemma3 { "hidden_activation" } else { "hidden_act" };
        o.insert(act.into(), json!(self.hidden_act.as_str()));
        if self.model_type != ModelType::Qwen2 && self.model_type != ModelType::Mistral {
            o.insert("attention_bias".into(), json!(self.attention_bias.unwrap_or(false)));
        }
        if let Some(w) = self.sliding_window {
            o.insert("sliding_window".into(), json!(w));
        }
        if matches!(self.model_type, ModelType::Qwen2 | ModelType::Qwen3) {
            o.insert("use_sliding_window".into(), json!(false));
        }
        if self.layer_types.contains(&LayerType::SlidingAttention) || self.model_type == ModelType::Gemma3 {
            let names: Vec<&str> = self.layer_types.iter().map(|t| if *t == LayerType::FullAttention { "full_attention" } else { "sliding_attention" }).collect();
            o.insert("layer_types".into(), json!(names));
        }
        if let Some(t) = self.rope_local_base_freq {
            o.insert("rope_local_base_freq".into(), json!(t));
        }
        if let Some(s) = self.query_pre_attn_scalar {
            // transformers' config class declares an int.
            o.insert("query_pre_attn_scalar".into(), if s.fract() == 0.0 { json!(s as i64) } else { json!(s) });
        }
        Ok(c)
    }
}
