//! The frozen foundation model: a llama-family decoder (Touvron et al. 2023,
//! <https://arxiv.org/abs/2302.13971>; also mistral, qwen2, qwen3 and gemma3) that accepts a
//! soft-prompt prefix on its input embeddings, as LoPA requires: input = [Z ; E(x)]. Config names follow Hugging Face `config.json`; the
//! module layout mirrors `model.layers.N.self_attn.q_proj` etc.
//!
//! - [`block`]: one transformer block (attention, MLP), each part with its own `load` and `forward`;
//! - [`cache`]: the key/value cache of incremental decoding;
//! - [`checkpoint`]: GGUF and Hugging Face files to tensors under Hugging Face names;
//! - [`config`]: `config.json` / GGUF metadata, read strictly.

pub mod block;
pub mod cache;
pub mod checkpoint;
pub mod config;
mod fields;
pub mod rope;

pub use block::DecoderLayer;
pub use cache::KvCache;
pub use config::{Activation, DecoderConfig, LayerType, ModelType};
pub use rope::RopeScaling;
pub use checkpoint::{gguf_to_hf, gguf_to_hf_only, FoundationModel, TokenEmbedding, EMBED_TOKENS};

use crate::error::{Error, Result};
use crate::model::nn::{float_dtype, rms_norm, rms_norm_f32, MASKED};
use crate::model::weights::TensorMap;
use block::Rope;
use burn::module::{Module, Param};
use burn::nn::RmsNorm;
use burn::tensor::{Device, FloatDType, Int, Tensor, TensorData};
use burn::module::ModuleMapper;
use serde::{Deserialize, Serialize};

/// The arithmetic the frozen decoder runs in. In half precision its matmuls and weights are
/// half; norms, softmax and the logits stay f32, and so does anything trained (a soft prompt's
/// generator, a LoRA): the decoder takes f32 embeddings and returns f32 logits either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    F16,
    Bf16,
}

impl Precision {
    pub fn dtype(self) -> FloatDType {
        match self {
            Precision::F32 => FloatDType::F32,
            Precision::F16 => FloatDType::F16,
            Precision::Bf16 => FloatDType::BF16,
        }
    }

    /// The name the CLI and config files use.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        }
    }

    /// Refuses a type the device cannot compute in. Some backends store and convert a half type
    /// without arithmetic in it (bf16 on Vulkan and WebGPU), and computing in it there gives
    /// garbage, not an error.
    pub fn check(self, device: &Device) -> Result<()> {
        if self == Precision::F32 || device.supports_dtype(self.dtype()) {
            return Ok(());
        }
        Err(Error::Config(format!("--precision {}: this device stores the type but has no arithmetic in it; use {} there", self.name(), if device.supports_dtype(FloatDType::F16) { "f16 or f32" } else { "f32" })))
    }
}

/// A checkpoint's tensors whose names a filter accepts (see [`Decoder::assemble`]).
pub type TensorSource<'a> = dyn FnMut(&dyn Fn(&str) -> bool) -> Result<TensorMap> + 'a;

/// Casts a module's float parameters to one type.
pub(crate) struct Cast(pub FloatDType);

impl burn::module::ModuleMapper for Cast {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let dtype = self.0;
        if param.val().dtype() == dtype.into() {
            return param;
        }
        param.map(|t| t.cast(dtype))
    }
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
    /// RoPE inverse frequencies of full-attention and sliding-window layers.
    #[module(skip)]
    inv_freq: (Vec<f64>, Vec<f64>),
    /// Token embeddings are multiplied by this (gemma3: √d).
    #[module(skip)]
    embed_scale: f32,
    /// The window of sliding-attention layers.
    #[module(skip)]
    sliding_window: Option<usize>,
}

impl Decoder {
    /// Build from tensors with Hugging Face names.
    pub fn from_tensors(cfg: &DecoderConfig, w: &TensorMap, device: &Device) -> Result<Self> {
        Self::assemble(cfg, &mut |keep| Ok(w.subset(keep)), Precision::F32, device)
    }

    /// Build in `precision` from `tensors(keep)`, the checkpoint's tensors whose names `keep`
    /// accepts. It is asked for one layer, then the embedding table, then the output layer, each
    /// cast as soon as it is built: at most one of them exists in f32 at a time.
    pub fn assemble(cfg: &DecoderConfig, tensors: &mut TensorSource, precision: Precision, device: &Device) -> Result<Self> {
        cfg.validate()?;
        precision.check(device)?;
        let d = cfg.hidden_size;
        let mut cast = Cast(precision.dtype());
        let layers = cfg
            .layer_types
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let prefix = format!("model.layers.{i}.");
                let w = tensors(&|n| n.starts_with(&prefix))?;
                Ok(DecoderLayer::load(&w, &format!("model.layers.{i}"), *t, cfg, device)?.cast(&mut cast))
            })
            .collect::<Result<Vec<_>>>()?;
        let embed = tensors(&|n| n == EMBED_TOKENS)?.take_tensor(EMBED_TOKENS, [cfg.vocab_size, d], device)?;
        let embed_tokens = cast.map_float(Param::from_tensor(embed));
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            let mut w = tensors(&|n| n == "lm_head.weight")?;
            // A checkpoint without an output layer ties it to the embeddings.
            if w.contains("lm_head.weight") { Some(cast.map_float(Param::from_tensor(w.take_linear_weight("lm_head.weight", d, cfg.vocab_size, device)?))) } else { None }
        };
        Ok(Self {
            embed_tokens,
            layers,
            norm: rms_norm(&tensors(&|n| n == "model.norm.weight")?, "model.norm", d, cfg.rms_norm_eps, cfg.norm_offset(), device)?,
            lm_head,
            lora: None,
            inv_freq: (cfg.inv_freq(LayerType::FullAttention)?, cfg.inv_freq(LayerType::SlidingAttention)?),
            embed_scale: cfg.embed_scale(),
            sliding_window: cfg.sliding_window,
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
        // Norms multiply by 1 (gemma3 stores that as 0).
        let one = 1.0 - cfg.norm_offset();
        put("model.embed_tokens.weight".into(), vec![cfg.vocab_size, d], normal(cfg.vocab_size * d));
        put("model.norm.weight".into(), vec![d], vec![one; d]);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            for (n, o, inp) in [("self_attn.q_proj", h * hd, d), ("self_attn.k_proj", kv * hd, d), ("self_attn.v_proj", kv * hd, d), ("self_attn.o_proj", d, h * hd), ("mlp.gate_proj", ff, d), ("mlp.up_proj", ff, d), ("mlp.down_proj", d, ff)] {
                put(format!("{p}.{n}.weight"), vec![o, inp], normal(o * inp));
                let bias = if n == "self_attn.o_proj" { cfg.o_bias() } else { cfg.qkv_bias() && n.starts_with("self_attn.") };
                if bias {
                    put(format!("{p}.{n}.bias"), vec![o], vec![0.0; o]);
                }
            }
            let mut norms = vec![("input_layernorm", d), ("post_attention_layernorm", d)];
            if cfg.sandwich_norms() {
                norms.extend([("pre_feedforward_layernorm", d), ("post_feedforward_layernorm", d)]);
            }
            if cfg.qk_norm() {
                norms.extend([("self_attn.q_norm", hd), ("self_attn.k_norm", hd)]);
            }
            for (n, width) in norms {
                put(format!("{p}.{n}.weight"), vec![width], vec![one; width]);
            }
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
            model_type: ModelType::Llama,
            vocab_size: 49152,
            hidden_size: 576,
            intermediate_size: 1536,
            num_hidden_layers: 30,
            num_attention_heads: 9,
            num_key_value_heads: Some(3),
            head_dim: None,
            rms_norm_eps: 1e-5,
            rope_theta: 100000.0,
            rope_scaling: None,
            rope_local_base_freq: None,
            max_position_embeddings: 8192,
            tie_word_embeddings: true,
            attention_bias: Some(false),
            sliding_window: None,
            layer_types: vec![LayerType::FullAttention; 30],
            query_pre_attn_scalar: None,
            hidden_act: Activation::Silu,
        }
    }

    /// The decoder with its weights in `precision` (norm weights and a LoRA stay f32).
    pub fn with_precision(mut self, precision: Precision) -> Self {
        let mut cast = Cast(precision.dtype());
        self.embed_tokens = cast.map_float(self.embed_tokens);
        self.lm_head = self.lm_head.map(|w| cast.map_float(w));
        self.layers = std::mem::take(&mut self.layers).into_iter().map(|l| l.cast(&mut cast)).collect();
        self.no_grad()
    }

    /// The type its matmuls run in.
    pub fn precision(&self) -> Precision {
        match float_dtype(&self.embed_tokens.val()) {
            FloatDType::F16 => Precision::F16,
            FloatDType::BF16 => Precision::Bf16,
            _ => Precision::F32,
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

    /// Standard deviation of the token embeddings as the layers see them (the table times the
    /// embedding scale): the scale a soft prompt should start at.
    pub fn embedding_std(&self) -> Result<f64> {
        let v = crate::device::to_vec(self.embed_tokens.val())?;
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        Ok((v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt() * self.embed_scale as f64)
    }

    /// Token embeddings E(x): `[b, s]` ids → `[b, s, d]`, scaled as the model scales them.
    pub fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let [b, s] = ids.dims();
        let e = self.embed_tokens.val();
        let d = e.dims()[1];
        let x = e.select(0, ids.reshape([b * s])).reshape([b, s, d]).cast(FloatDType::F32);
        if self.embed_scale == 1.0 { x } else { x * self.embed_scale }
    }

    /// The factor on token embeddings (√d in gemma3, else 1).
    pub fn embed_scale(&self) -> f32 {
        self.embed_scale
    }

    /// Logits over the vocabulary for hidden states `[n, d]` → `[n, vocab]`.
    pub fn logits(&self, hidden: Tensor<2>) -> Tensor<2> {
        let dtype = self.precision().dtype();
        let hidden = hidden.cast(dtype);
        match &self.lm_head {
            Some(w) => hidden.matmul(w.val()),
            None => hidden.matmul(self.embed_tokens.val().transpose()),
        }
        .cast(FloatDType::F32)
    }

    /// Final-normed hidden states for input embeddings.
    ///
    /// - `embeds`: `[b, s, d]`, the new slots (soft prompt rows and/or token embeddings).
    /// - `positions`: row-major `[b, s]` RoPE positions of those slots.
    /// - `key_mask`: row-major `[b, s]` 0/1; 0 marks padding that no query may attend to.
    /// - `cache`: when given, attends over the cached slots too and appends the new ones.
    ///
    /// Attention is causal in slot order; sliding-window layers also drop keys `sliding_window` or
    /// more positions before the query's. Returns `[b, s, d]`.
    pub fn forward_embeds(&self, embeds: Tensor<3>, positions: &[usize], key_mask: &[f32], mut cache: Option<&mut KvCache>) -> Result<Tensor<3>> {
        let [b, s, d] = embeds.dims();
        if d != self.hidden_size() {
            return Err(Error::Input(format!("embeddings have width {d}, the model's is {}", self.hidden_size())));
        }
        if positions.len() != b * s || key_mask.len() != b * s {
            return Err(Error::Input(format!("positions/key_mask need {} entries ([{b}, {s}])", b * s)));
        }
        let device = embeds.device();
        if let Some(c) = cache.as_ref() {
            if c.key_mask.len() != b {
                return Err(Error::Input(format!("cache holds {} rows, input has {b}", c.key_mask.len())));
            }
        }
        let pass = self.pass(positions, key_mask, b, s, cache.as_deref(), &device);
        let mut x = embeds.cast(self.precision().dtype());
        for (li, layer) in self.layers.iter().enumerate() {
            let lora = self.lora.as_ref().map(|l| (&l.layers[li], l.scale));
            let slot = cache.as_deref_mut().map(|c| &mut c.layers[li]);
            let (bias, rope) = pass.for_layer(layer.layer_type);
            x = layer.forward(x, rope, bias.clone(), slot, lora);
        }
        if let Some(c) = cache {
            for r in 0..b {
                c.key_mask[r].extend_from_slice(&key_mask[r * s..(r + 1) * s]);
                c.positions[r].extend_from_slice(&positions[r * s..(r + 1) * s]);
            }
        }
        Ok(self.final_norm(x))
    }

    /// The masks and rotary tables of a pass over `[b, s]` new slots after what `cache` holds.
    /// Additive masks `[b, 1, s, t]`: causal in slot order and blind to padding keys (finite in
    /// f16); a sliding-window layer's also blind to keys `window` or more positions back.
    pub fn pass(&self, positions: &[usize], key_mask: &[f32], b: usize, s: usize, cache: Option<&KvCache>, device: &Device) -> Pass {
        let past = cache.map_or(0, KvCache::len);
        let t = past + s;
        let dtype = self.precision().dtype();
        let masked = if dtype == FloatDType::F16 { -60_000.0 } else { MASKED };
        let key = |r: usize, j: usize| -> (f32, usize) {
            match cache {
                Some(c) if j < past => (c.key_mask[r][j], c.positions[r][j]),
                _ => (key_mask[r * s + j - past], positions[r * s + j - past]),
            }
        };
        let mask = |window: Option<usize>| {
            let mut bias = vec![masked; b * s * t];
            for r in 0..b {
                for i in 0..s {
                    let pos = positions[r * s + i];
                    for j in 0..=past + i {
                        let (m, kp) = key(r, j);
                        if m > 0.5 && window.is_none_or(|w| pos < kp + w) {
                            bias[(r * s + i) * t + j] = 0.0;
                        }
                    }
                }
            }
            Tensor::<4>::from_data(TensorData::new(bias, [b, 1, s, t]), device).cast(dtype)
        };
        let sliding = self.layers.iter().any(|l| l.layer_type == LayerType::SlidingAttention);
        Pass {
            full: (mask(None), Rope::new(&self.inv_freq.0, positions, b, s, device).cast(dtype)),
            local: sliding.then(|| (mask(self.sliding_window), Rope::new(&self.inv_freq.1, positions, b, s, device).cast(dtype))),
        }
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Layer `li` of a pass without a cache, for the query slots `[from, from + n)` only: `x` is
    /// the layer's whole input `[b, s, d]` (run precision); the slots before `from` enter as keys
    /// and values. Returns `[b, n, d]`. Computing a layer in blocks of queries keeps what a
    /// backward pass holds linear in the positions.
    pub fn layer_queries(&self, li: usize, x: Tensor<3>, pass: &Pass, from: usize, n: usize) -> Tensor<3> {
        let layer = &self.layers[li];
        let lora = self.lora.as_ref().map(|l| (&l.layers[li], l.scale));
        let (bias, rope) = pass.for_layer(layer.layer_type);
        let mut prefix = (from > 0).then(|| layer.keys_values(x.clone().narrow(1, 0, from), &rope.narrow(0, from), lora));
        let bias = bias.clone().narrow(2, from, n).narrow(3, 0, from + n);
        layer.forward(x.narrow(1, from, n), &rope.narrow(from, n), bias, prefix.as_mut(), lora)
    }

    /// The final norm, in f32.
    pub fn final_norm(&self, x: Tensor<3>) -> Tensor<3> {
        rms_norm_f32(&self.norm, x.cast(FloatDType::F32))
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
}

/// What every layer of one forward pass shares: the additive masks `[b, 1, s, t]` and rotary
/// tables, for full-attention layers and, where the model has them, sliding-window ones.
pub struct Pass {
    full: (Tensor<4>, Rope),
    local: Option<(Tensor<4>, Rope)>,
}

impl Pass {
    fn for_layer(&self, t: LayerType) -> &(Tensor<4>, Rope) {
        match (&self.local, t) {
            (Some(local), LayerType::SlidingAttention) => local,
            _ => &self.full,
        }
    }
}
