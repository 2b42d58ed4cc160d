//! The frozen foundation model: a llama / qwen2-family decoder (Touvron et al. 2023,
//! <https://arxiv.org/abs/2302.13971>) that accepts a soft-prompt prefix on its input embeddings,
//! as LoPA requires: input = [Z ; E(x)]. Config names follow Hugging Face `config.json`; the
//! module layout mirrors `model.layers.N.self_attn.q_proj` etc. GGUF files are renamed to that
//! layout and their llama Q/K rows un-permuted, so one RoPE (rotate-half) serves both formats.

use crate::error::{Error, Result};
use crate::model::nn::{attention, linear, merge_heads, rms_norm, split_heads, MASKED};
use crate::model::tokenizer::Tokenizer;
use crate::model::weights::gguf::Gguf;
use crate::model::weights::{safetensors, TensorMap};
use burn::module::{Module, Param};
use burn::nn::{Linear, RmsNorm};
use burn::tensor::activation::silu;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// Hugging Face `LlamaConfig` / `Qwen2Config` fields lopa uses.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DecoderConfig {
    /// `llama` or `qwen2`.
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_ctx")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Biases on q/k/v (qwen2 has them; llama's `attention_bias` defaults to false).
    #[serde(default)]
    pub attention_bias: Option<bool>,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10000.0
}
fn default_ctx() -> usize {
    2048
}

impl DecoderConfig {
    /// A LoRA on q/k/v for a decoder of this shape.
    pub fn lora(&self, rank: usize, alpha: f64) -> crate::model::lora::LoraConfig {
        let hd = self.hidden_size / self.num_attention_heads;
        crate::model::lora::LoraConfig { rank, alpha, num_hidden_layers: self.num_hidden_layers, hidden_size: self.hidden_size, q_dim: self.num_attention_heads * hd, kv_dim: self.kv_heads() * hd }
    }

    /// Parse and check a Hugging Face `config.json`.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let c: Self = serde_json::from_slice(bytes).map_err(|e| Error::Config(format!("decoder config.json: {e}")))?;
        c.validate()?;
        Ok(c)
    }
    fn validate(&self) -> Result<()> {
        if !matches!(self.model_type.as_str(), "llama" | "qwen2" | "mistral") {
            return Err(Error::Config(format!("model_type `{}` is not supported (llama, qwen2, mistral)", self.model_type)));
        }
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
        Ok(())
    }
    /// Key/value heads (GQA).
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }
    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }
    fn qkv_bias(&self) -> bool {
        self.attention_bias.unwrap_or(self.model_type == "qwen2")
    }
}

#[derive(Module, Debug)]
pub struct SelfAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
}

#[derive(Module, Debug)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

#[derive(Module, Debug)]
pub struct DecoderLayer {
    pub self_attn: SelfAttention,
    pub mlp: Mlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
}

/// The decoder. All parameters are frozen (`no_grad`): gradients flow through it into a soft
/// prompt, never into its weights.
#[derive(Module, Debug)]
pub struct Decoder {
    pub embed_tokens: Param<Tensor<2>>,
    pub layers: Vec<DecoderLayer>,
    pub norm: RmsNorm,
    /// `[d, vocab]`; `None` when tied to `embed_tokens`.
    pub lm_head: Option<Param<Tensor<2>>>,
    /// A LoRA on q/k/v (the trainable baseline; `None` for the frozen model).
    pub lora: Option<crate::model::lora::DecoderLora>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    rope_theta: f64,
}

/// Per-layer key/value cache for incremental decoding, with the key mask seen so far.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    /// Row-major `[b, len]` 0/1 mask of cached slots.
    key_mask: Vec<Vec<f32>>,
}

impl KvCache {
    /// An empty cache for `batch` rows.
    pub fn new(decoder: &Decoder, batch: usize) -> Self {
        Self { layers: vec![None; decoder.layers.len()], key_mask: vec![Vec::new(); batch] }
    }
    /// Number of cached slots.
    pub fn len(&self) -> usize {
        self.key_mask.first().map_or(0, Vec::len)
    }
    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Decoder {
    /// Build from tensors with Hugging Face names.
    pub fn from_tensors(cfg: &DecoderConfig, w: &TensorMap, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let (d, hd, h, kv) = (cfg.hidden_size, cfg.head_dim(), cfg.num_attention_heads, cfg.kv_heads());
        let eps = cfg.rms_norm_eps;
        let bias = cfg.qkv_bias();
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let p = format!("model.layers.{i}");
                Ok(DecoderLayer {
                    self_attn: SelfAttention {
                        q_proj: linear(w, &format!("{p}.self_attn.q_proj"), d, h * hd, bias, device)?,
                        k_proj: linear(w, &format!("{p}.self_attn.k_proj"), d, kv * hd, bias, device)?,
                        v_proj: linear(w, &format!("{p}.self_attn.v_proj"), d, kv * hd, bias, device)?,
                        o_proj: linear(w, &format!("{p}.self_attn.o_proj"), h * hd, d, false, device)?,
                    },
                    mlp: Mlp {
                        gate_proj: linear(w, &format!("{p}.mlp.gate_proj"), d, cfg.intermediate_size, false, device)?,
                        up_proj: linear(w, &format!("{p}.mlp.up_proj"), d, cfg.intermediate_size, false, device)?,
                        down_proj: linear(w, &format!("{p}.mlp.down_proj"), cfg.intermediate_size, d, false, device)?,
                    },
                    input_layernorm: rms_norm(w, &format!("{p}.input_layernorm"), d, eps, device)?,
                    post_attention_layernorm: rms_norm(w, &format!("{p}.post_attention_layernorm"), d, eps, device)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let lm_head = if !cfg.tie_word_embeddings && w.contains("lm_head.weight") {
            Some(Param::from_tensor(w.linear_weight("lm_head.weight", d, cfg.vocab_size, device)?))
        } else {
            None
        };
        Ok(Self {
            embed_tokens: Param::from_tensor(w.tensor("model.embed_tokens.weight", [cfg.vocab_size, d], device)?),
            layers,
            norm: rms_norm(w, "model.norm", d, eps, device)?,
            lm_head,
            lora: None,
            heads: h,
            kv_heads: kv,
            head_dim: hd,
            rope_theta: cfg.rope_theta,
        }
        .no_grad())
    }

    /// A decoder of the given shape with random weights (N(0, 0.02²), norms 1): for speed
    /// measurements where the real weights cannot travel.
    pub fn random(cfg: &DecoderConfig, seed: u64, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let mut rng = crate::rng::Rng::new(seed);
        let mut normal = |n: usize| -> Vec<f32> {
            // Box–Muller from the crate's SplitMix64.
            (0..n).map(|_| {
                let u1 = (rng.next_f32() as f64).max(1e-12);
                let u2 = rng.next_f32() as f64;
                ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * 0.02) as f32
            }).collect()
        };
        let (d, hd, h, kv, ff) = (cfg.hidden_size, cfg.head_dim(), cfg.num_attention_heads, cfg.kv_heads(), cfg.intermediate_size);
        let mut w = TensorMap::new();
        let mut put = |name: String, shape: Vec<usize>, data: Vec<f32>| w.insert(name, crate::model::weights::HostTensor { shape, data });
        put("model.embed_tokens.weight".into(), vec![cfg.vocab_size, d], normal(cfg.vocab_size * d));
        put("model.norm.weight".into(), vec![d], vec![1.0; d]);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            for (n, o, inp) in [("self_attn.q_proj", h * hd, d), ("self_attn.k_proj", kv * hd, d), ("self_attn.v_proj", kv * hd, d), ("self_attn.o_proj", d, h * hd), ("mlp.gate_proj", ff, d), ("mlp.up_proj", ff, d), ("mlp.down_proj", d, ff)] {
                put(format!("{p}.{n}.weight"), vec![o, inp], normal(o * inp));
                if cfg.qkv_bias() && n.starts_with("self_attn.") && n != "self_attn.o_proj" {
                    put(format!("{p}.{n}.bias"), vec![o], vec![0.0; o]);
                }
            }
            put(format!("{p}.input_layernorm.weight"), vec![d], vec![1.0; d]);
            put(format!("{p}.post_attention_layernorm.weight"), vec![d], vec![1.0; d]);
        }
        Self::from_tensors(cfg, &w, device)
    }

    /// This decoder with a LoRA on q/k/v (or without any). The weights are shared, not copied.
    pub fn with_lora(&self, lora: Option<crate::model::lora::DecoderLora>) -> Self {
        Self { lora, ..self.clone() }
    }

    /// The shape of SmolLM2-135M (the default frozen model).
    pub fn smollm2_135m_config() -> DecoderConfig {
        DecoderConfig {
            model_type: "llama".into(),
            vocab_size: 49152,
            hidden_size: 576,
            intermediate_size: 1536,
            num_hidden_layers: 30,
            num_attention_heads: 9,
            num_key_value_heads: Some(3),
            head_dim: None,
            rms_norm_eps: 1e-5,
            rope_theta: 100000.0,
            max_position_embeddings: 8192,
            tie_word_embeddings: true,
            attention_bias: Some(false),
        }
    }

    /// Embedding width d.
    pub fn hidden_size(&self) -> usize {
        self.embed_tokens.dims()[1]
    }
    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.embed_tokens.dims()[0]
    }

    /// Standard deviation of the token-embedding table: the scale a soft prompt should start at.
    pub fn embedding_std(&self) -> Result<f64> {
        let v = crate::device::to_vec(self.embed_tokens.val())?;
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        Ok((v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt())
    }

    /// Token embeddings E(x): `[b, s]` ids → `[b, s, d]`.
    pub fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let [b, s] = ids.dims();
        let e = self.embed_tokens.val();
        let d = e.dims()[1];
        e.select(0, ids.reshape([b * s])).reshape([b, s, d])
    }

    /// Logits over the vocabulary for hidden states `[n, d]` → `[n, vocab]`.
    pub fn logits(&self, hidden: Tensor<2>) -> Tensor<2> {
        match &self.lm_head {
            Some(w) => hidden.matmul(w.val()),
            None => hidden.matmul(self.embed_tokens.val().transpose()),
        }
    }

    /// Final-normed hidden states for input embeddings.
    ///
    /// - `embeds`: `[b, s, d]`, the new slots (soft prompt rows and/or token embeddings).
    /// - `positions`: row-major `[b, s]` RoPE positions of those slots.
    /// - `key_mask`: row-major `[b, s]` 0/1; 0 marks padding that no query may attend to.
    /// - `cache`: when given, attends over the cached slots too and appends the new ones.
    ///
    /// Attention is causal in slot order. Returns `[b, s, d]`.
    pub fn forward_embeds(&self, embeds: Tensor<3>, positions: &[usize], key_mask: &[f32], mut cache: Option<&mut KvCache>) -> Result<Tensor<3>> {
        let [b, s, d] = embeds.dims();
        if d != self.hidden_size() {
            return Err(Error::Input(format!("embeddings have width {d}, the model's is {}", self.hidden_size())));
        }
        if positions.len() != b * s || key_mask.len() != b * s {
            return Err(Error::Input(format!("positions/key_mask need {} entries ([{b}, {s}])", b * s)));
        }
        let device = embeds.device();
        let past = cache.as_ref().map_or(0, |c| c.len());
        if let Some(c) = cache.as_ref() {
            if c.key_mask.len() != b {
                return Err(Error::Input(format!("cache holds {} rows, input has {b}", c.key_mask.len())));
            }
        }
        let t = past + s;
        // Additive mask [b, 1, s, t]: causal in slot order and blind to padding keys.
        let mut bias = vec![MASKED; b * s * t];
        for r in 0..b {
            for i in 0..s {
                for j in 0..=past + i {
                    let m = if j < past { cache.as_ref().unwrap().key_mask[r][j] } else { key_mask[r * s + j - past] };
                    if m > 0.5 {
                        bias[(r * s + i) * t + j] = 0.0;
                    }
                }
            }
        }
        let bias = Tensor::<4>::from_data(TensorData::new(bias, [b, 1, s, t]), &device);
        let (cos, sin) = self.rope_tables(positions, b, s, &device);
        let mut x = embeds;
        for (li, l) in self.layers.iter().enumerate() {
            let hn = l.input_layernorm.forward(x.clone());
            let (mut q, mut k, mut v) = (l.self_attn.q_proj.forward(hn.clone()), l.self_attn.k_proj.forward(hn.clone()), l.self_attn.v_proj.forward(hn.clone()));
            if let Some(lora) = &self.lora {
                let (u, s) = (&lora.layers[li], lora.scale);
                (q, k, v) = (q + u.q_proj.delta(hn.clone(), s), k + u.k_proj.delta(hn.clone(), s), v + u.v_proj.delta(hn, s));
            }
            let q = split_heads(q, self.heads, self.head_dim);
            let k = split_heads(k, self.kv_heads, self.head_dim);
            let v = split_heads(v, self.kv_heads, self.head_dim);
            let q = rope(q, cos.clone(), sin.clone());
            let mut k = rope(k, cos.clone(), sin.clone());
            let mut v = v;
            if let Some(c) = cache.as_deref_mut() {
                if let Some((pk, pv)) = c.layers[li].take() {
                    k = Tensor::cat(vec![pk, k], 2);
                    v = Tensor::cat(vec![pv, v], 2);
                }
                c.layers[li] = Some((k.clone(), v.clone()));
            }
            let ctx = merge_heads(self.grouped_attention(q, k, v, bias.clone()));
            x = x + l.self_attn.o_proj.forward(ctx);
            let hn = l.post_attention_layernorm.forward(x.clone());
            let m = &l.mlp;
            x = x + m.down_proj.forward(silu(m.gate_proj.forward(hn.clone())) * m.up_proj.forward(hn));
        }
        if let Some(c) = cache {
            for r in 0..b {
                c.key_mask[r].extend_from_slice(&key_mask[r * s..(r + 1) * s]);
            }
        }
        Ok(self.norm.forward(x))
    }

    /// Logits `[b, m + s, vocab]` for token ids `[b, s]` (no padding) behind an optional soft
    /// prompt `[b, m, d]`. Convenient for tests and scoring; training gathers only the positions
    /// it needs through [`Decoder::forward_embeds`] and [`Decoder::logits`].
    pub fn forward(&self, ids: Tensor<2, Int>, soft_prompt: Option<Tensor<3>>) -> Result<Tensor<3>> {
        let [b, _] = ids.dims();
        let mut e = self.embed(ids);
        if let Some(z) = soft_prompt {
            let [zb, _, zd] = z.dims();
            if zb != b || zd != self.hidden_size() {
                return Err(Error::Input(format!("soft prompt {:?} does not fit batch {b} / width {}", z.dims(), self.hidden_size())));
            }
            e = Tensor::cat(vec![z, e], 1);
        }
        let [_, s, d] = e.dims();
        let positions: Vec<usize> = (0..b).flat_map(|_| 0..s).collect();
        let h = self.forward_embeds(e, &positions, &vec![1.0; b * s], None)?;
        Ok(self.logits(h.reshape([b * s, d])).reshape([b, s, self.vocab_size()]))
    }

    /// Grouped-query attention without copying K/V per query head: the `g` query heads that share
    /// a KV head are stacked along the sequence axis (`[b, kv, g·s, hd]`), so one matmul serves them.
    fn grouped_attention(&self, q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: Tensor<4>) -> Tensor<4> {
        let g = self.heads / self.kv_heads;
        if g == 1 {
            return attention(q, k, v, bias);
        }
        let [b, h, s, hd] = q.dims();
        let q = q.reshape([b, self.kv_heads, g * s, hd]);
        let bias = if bias.dims()[2] == 1 { bias } else { bias.repeat_dim(2, g) };
        attention(q, k, v, bias).reshape([b, h, s, hd])
    }

    /// cos/sin `[b, 1, s, head_dim]` for rotate-half RoPE at the given positions (computed in f64).
    fn rope_tables(&self, positions: &[usize], b: usize, s: usize, device: &Device) -> (Tensor<4>, Tensor<4>) {
        let hd = self.head_dim;
        let half = hd / 2;
        let inv: Vec<f64> = (0..half).map(|i| self.rope_theta.powf(-(2.0 * i as f64) / hd as f64)).collect();
        let mut cos = Vec::with_capacity(b * s * hd);
        let mut sin = Vec::with_capacity(b * s * hd);
        for &p in positions {
            for _ in 0..2 {
                for f in &inv {
                    let a = p as f64 * f;
                    cos.push(a.cos() as f32);
                    sin.push(a.sin() as f32);
                }
            }
        }
        let mk = |v| Tensor::<4>::from_data(TensorData::new(v, [b, 1, s, hd]), device);
        (mk(cos), mk(sin))
    }
}

/// Rotate-half RoPE: x·cos + rotate_half(x)·sin, `x`: `[b, h, s, hd]`.
fn rope(x: Tensor<4>, cos: Tensor<4>, sin: Tensor<4>) -> Tensor<4> {
    let hd = x.dims()[3];
    let x1 = x.clone().narrow(3, 0, hd / 2);
    let x2 = x.clone().narrow(3, hd / 2, hd / 2);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos + rotated * sin
}

/// A decoder with its tokenizer and config: what `lopa serve` and training hold.
#[derive(Debug, Clone)]
pub struct FoundationModel {
    pub decoder: Decoder,
    pub tokenizer: Tokenizer,
    pub config: DecoderConfig,
    /// Identity for adapter compatibility checks: file name and sha256 of the weights.
    pub id: String,
    pub sha256: String,
}

/// GGUF → Hugging Face tensor names and config. Llama Q/K rows are un-permuted.
pub fn gguf_to_hf(g: &Gguf) -> Result<(DecoderConfig, TensorMap)> {
    gguf_to_hf_only(g, &|_| true)
}

/// [`gguf_to_hf`] for the tensors whose Hugging Face name `keep` accepts (the others are never
/// dequantized).
pub fn gguf_to_hf_only(g: &Gguf, keep: &dyn Fn(&str) -> bool) -> Result<(DecoderConfig, TensorMap)> {
    let arch = g.str("general.architecture")?.to_string();
    if !matches!(arch.as_str(), "llama" | "qwen2") {
        return Err(Error::Config(format!("GGUF architecture `{arch}` is not supported (llama, qwen2)")));
    }
    let k = |s: &str| format!("{arch}.{s}");
    let n_head = g.u64(&k("attention.head_count"))? as usize;
    let n_kv = g.get(&k("attention.head_count_kv")).and_then(|v| v.as_u64()).map(|v| v as usize).unwrap_or(n_head);
    let d = g.u64(&k("embedding_length"))? as usize;
    let vocab = match g.get(&k("vocab_size")).and_then(|v| v.as_u64()) {
        Some(v) => v as usize,
        None => g.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()).map(|a| a.len()).ok_or_else(|| Error::Config("GGUF has no vocabulary size".into()))?,
    };
    let head_dim = g.get(&k("attention.key_length")).and_then(|v| v.as_u64()).map(|v| v as usize);
    let has_output = g.tensors.iter().any(|t| t.name == "output.weight");
    let cfg = DecoderConfig {
        model_type: arch.clone(),
        vocab_size: vocab,
        hidden_size: d,
        intermediate_size: g.u64(&k("feed_forward_length"))? as usize,
        num_hidden_layers: g.u64(&k("block_count"))? as usize,
        num_attention_heads: n_head,
        num_key_value_heads: Some(n_kv),
        head_dim,
        rms_norm_eps: g.f64(&k("attention.layer_norm_rms_epsilon"))?,
        rope_theta: g.get(&k("rope.freq_base")).and_then(|v| v.as_f64()).unwrap_or(10000.0),
        max_position_embeddings: g.get(&k("context_length")).and_then(|v| v.as_u64()).unwrap_or(2048) as usize,
        tie_word_embeddings: !has_output,
        attention_bias: Some(g.tensors.iter().any(|t| t.name.ends_with("attn_q.bias"))),
    };
    cfg.validate()?;
    let hd = cfg.head_dim();
    let mut map = TensorMap::new();
    for info in &g.tensors {
        let Some(name) = hf_name(&info.name).filter(|n| keep(n)) else { continue };
        let mut t = g.tensor(info);
        if arch == "llama" && (name.ends_with("q_proj.weight") || name.ends_with("k_proj.weight")) {
            let heads = if name.ends_with("q_proj.weight") { n_head } else { n_kv };
            if t.shape.len() != 2 || t.shape[0] != heads * hd {
                return Err(Error::tensor(&info.name, format!("expected {} rows ({heads} heads x {hd}), found shape {:?}", heads * hd, t.shape)));
            }
            t.data = unpermute_rows(&t.data, heads, hd, t.shape[1]);
        }
        map.insert(name, t);
    }
    Ok((cfg, map))
}

/// Undo llama.cpp's convert permutation: GGUF row `h·hd + 2j + s` holds HF row `h·hd + s·hd/2 + j`.
fn unpermute_rows(data: &[f32], heads: usize, hd: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; data.len()];
    let half = hd / 2;
    for h in 0..heads {
        for j in 0..half {
            for s in 0..2 {
                let src = (h * hd + 2 * j + s) * cols;
                let dst = (h * hd + s * half + j) * cols;
                out[dst..dst + cols].copy_from_slice(&data[src..src + cols]);
            }
        }
    }
    out
}

fn hf_name(gguf: &str) -> Option<String> {
    Some(match gguf {
        "token_embd.weight" => "model.embed_tokens.weight".into(),
        "output_norm.weight" => "model.norm.weight".into(),
        "output.weight" => "lm_head.weight".into(),
        _ => {
            let rest = gguf.strip_prefix("blk.")?;
            let (i, rest) = rest.split_once('.')?;
            let (part, kind) = rest.rsplit_once('.')?;
            let hf = match part {
                "attn_norm" => "input_layernorm",
                "ffn_norm" => "post_attention_layernorm",
                "attn_q" => "self_attn.q_proj",
                "attn_k" => "self_attn.k_proj",
                "attn_v" => "self_attn.v_proj",
                "attn_output" => "self_attn.o_proj",
                "ffn_gate" => "mlp.gate_proj",
                "ffn_up" => "mlp.up_proj",
                "ffn_down" => "mlp.down_proj",
                _ => return None,
            };
            format!("model.layers.{i}.{hf}.{kind}")
        }
    })
}

/// A checkpoint read from disk or memory: config, the tensors asked for, tokenizer, identity.
struct Checkpoint {
    config: DecoderConfig,
    tensors: TensorMap,
    tokenizer: Tokenizer,
    id: String,
    sha256: String,
}

/// The Hugging Face name of the token-embedding table.
pub const EMBED_TOKENS: &str = "model.embed_tokens.weight";

impl Checkpoint {
    fn from_gguf_bytes(bytes: &[u8], id: &str, keep: &dyn Fn(&str) -> bool) -> Result<Self> {
        let g = Gguf::parse(bytes)?;
        let (config, tensors) = gguf_to_hf_only(&g, keep)?;
        let tokenizer = Tokenizer::from_gguf(&g)?;
        Ok(Self { config, tensors, tokenizer, id: id.to_string(), sha256: crate::model::weights::sha256_hex(bytes) })
    }

    fn from_hf_shards(config: &[u8], shards: &[&[u8]], tokenizer: &[u8], id: &str, keep: &dyn Fn(&str) -> bool) -> Result<Self> {
        let config = DecoderConfig::from_json(config)?;
        let mut w = TensorMap::new();
        let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
        for shard in shards {
            sha2::Digest::update(&mut hasher, shard);
            let part = safetensors::parse_only(shard, keep)?.tensors;
            for name in part.names().map(str::to_string).collect::<Vec<_>>() {
                if w.contains(&name) {
                    return Err(Error::tensor(&name, "appears in two shards"));
                }
                let t = part.get(&name).expect("listed").clone();
                w.insert(name, t);
            }
        }
        let sha256: String = sha2::Digest::finalize(hasher).iter().map(|b| format!("{b:02x}")).collect();
        let mut tokenizer = Tokenizer::from_json_bytes(tokenizer, config.max_position_embeddings)?;
        // HF keeps stop tokens in generation_config.json; these names cover llama/qwen2/SmolLM.
        tokenizer.eos_token_ids = ["<|endoftext|>", "<|im_end|>", "</s>"].iter().filter_map(|t| tokenizer.token_to_id(t)).collect();
        Ok(Self { config, tensors: w, tokenizer, id: id.to_string(), sha256 })
    }

    /// A `.gguf` file or a Hugging Face directory (`model.safetensors`, or the shards listed in
    /// `model.safetensors.index.json`).
    fn read(path: &std::path::Path, keep: &dyn Fn(&str) -> bool) -> Result<Self> {
        let id = path.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        if !path.is_dir() {
            return Self::from_gguf_bytes(&crate::error::read_file(path)?, &id, keep);
        }
        let read = |n: &str| crate::error::read_file(path.join(n));
        let shards: Vec<Vec<u8>> = if path.join("model.safetensors").exists() {
            vec![read("model.safetensors")?]
        } else {
            let index: serde_json::Value = serde_json::from_slice(&read("model.safetensors.index.json")?)
                .map_err(|e| Error::Config(format!("model.safetensors.index.json: {e}")))?;
            let mut files: Vec<String> = index["weight_map"]
                .as_object()
                .ok_or_else(|| Error::Config("model.safetensors.index.json has no weight_map".into()))?
                .values()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            files.sort();
            files.dedup();
            if files.iter().any(|f| f.contains('/') || f.contains("..")) {
                return Err(Error::Config("model.safetensors.index.json names a file outside the model folder".into()));
            }
            files.iter().map(|f| read(f)).collect::<Result<_>>()?
        };
        let refs: Vec<&[u8]> = shards.iter().map(Vec::as_slice).collect();
        Self::from_hf_shards(&read("config.json")?, &refs, &read("tokenizer.json")?, &id, keep)
    }

    fn into_model(self, device: &Device) -> Result<FoundationModel> {
        let decoder = Decoder::from_tensors(&self.config, &self.tensors, device)?;
        Ok(FoundationModel { decoder, tokenizer: self.tokenizer, config: self.config, id: self.id, sha256: self.sha256 })
    }
}

impl FoundationModel {
    /// Load a GGUF file held in memory (weights + tokenizer from its metadata).
    pub fn from_gguf_bytes(bytes: &[u8], id: &str, device: &Device) -> Result<Self> {
        Checkpoint::from_gguf_bytes(bytes, id, &|_| true)?.into_model(device)
    }

    /// Load Hugging Face files held in memory: `config.json`, `model.safetensors`, `tokenizer.json`.
    pub fn from_hf_bytes(config: &[u8], weights: &[u8], tokenizer: &[u8], id: &str, device: &Device) -> Result<Self> {
        Self::from_hf_shards(config, &[weights], tokenizer, id, device)
    }

    /// Like [`Self::from_hf_bytes`] for a checkpoint split into several safetensors shards.
    pub fn from_hf_shards(config: &[u8], shards: &[&[u8]], tokenizer: &[u8], id: &str, device: &Device) -> Result<Self> {
        Checkpoint::from_hf_shards(config, shards, tokenizer, id, &|_| true)?.into_model(device)
    }

    /// Load a `.gguf` file or a Hugging Face directory (`model.safetensors`, or the shards listed
    /// in `model.safetensors.index.json`).
    pub fn load(path: impl AsRef<std::path::Path>, device: &Device) -> Result<Self> {
        Checkpoint::read(path.as_ref(), &|_| true)?.into_model(device)
    }

    /// The checkpoint's tensors in Hugging Face layout (f32, Q/K un-permuted) with its config and
    /// tokenizer: what `lopa export-hf` writes.
    pub fn read_hf_tensors(path: impl AsRef<std::path::Path>) -> Result<(DecoderConfig, TensorMap, Tokenizer)> {
        let c = Checkpoint::read(path.as_ref(), &|_| true)?;
        Ok((c.config, c.tensors, c.tokenizer))
    }
}

/// What a gateway in front of another serving engine holds of the frozen model: its tokenizer
/// and token-embedding table (`[vocab, d]`, row-major f32), never its layers.
#[derive(Debug, Clone)]
pub struct TokenEmbedding {
    pub config: DecoderConfig,
    pub tokenizer: Tokenizer,
    pub table: Vec<f32>,
    pub id: String,
    pub sha256: String,
}

impl TokenEmbedding {
    /// Read only the embedding table (and tokenizer, config) of a `.gguf` file or HF directory.
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let mut c = Checkpoint::read(path.as_ref(), &|n| n == EMBED_TOKENS)?;
        let (vocab, d) = (c.config.vocab_size, c.config.hidden_size);
        let t = c.tensors.remove(EMBED_TOKENS).ok_or_else(|| Error::tensor(EMBED_TOKENS, "missing"))?;
        if t.shape != [vocab, d] {
            return Err(Error::tensor(EMBED_TOKENS, format!("shape {:?}, config needs [{vocab}, {d}]", t.shape)));
        }
        Ok(Self { config: c.config, tokenizer: c.tokenizer, table: t.data, id: c.id, sha256: c.sha256 })
    }

    /// Rows of the table for `ids`, concatenated (`[ids.len(), d]`). Ids must be in range.
    pub fn rows(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let d = self.config.hidden_size;
        let mut out = Vec::with_capacity(ids.len() * d);
        for &t in ids {
            let row = self.table.get(t as usize * d..(t as usize + 1) * d).ok_or_else(|| Error::Input(format!("token id {t} is outside the vocabulary ({})", self.config.vocab_size)))?;
            out.extend_from_slice(row);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_names_map_to_hf() {
        assert_eq!(hf_name("blk.3.attn_q.weight").unwrap(), "model.layers.3.self_attn.q_proj.weight");
        assert_eq!(hf_name("blk.0.ffn_norm.weight").unwrap(), "model.layers.0.post_attention_layernorm.weight");
        assert_eq!(hf_name("token_embd.weight").unwrap(), "model.embed_tokens.weight");
        assert!(hf_name("rope_freqs.weight").is_none());
    }

    #[test]
    fn unpermute_inverts_the_converter_permutation() {
        // One head, hd = 4, one column: HF rows [a0 a1 | b0 b1] are stored as [a0 b0 a1 b1].
        assert_eq!(unpermute_rows(&[0., 2., 1., 3.], 1, 4, 1), vec![0., 1., 2., 3.]);
    }
}
