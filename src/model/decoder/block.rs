//! One transformer block of the decoder: attention with RoPE and grouped-query heads (with
//! per-head q/k norms in qwen3 and gemma3), then a gated MLP (SwiGLU, or GeGLU in gemma3), each
//! behind an RMSNorm with a residual (gemma3 norms their outputs too). Each part loads its own
//! weights (Hugging Face names under its prefix) and has its own `forward`. A LoRA on q/k/v is
//! added inside the projections when one is given.

use super::config::{Activation, DecoderConfig, LayerType};
use crate::error::Result;
use crate::model::lora::LoraLayer;
use crate::model::nn::{attention, float_dtype, gelu_tanh, linear, merge_heads, rms_norm, rms_norm_f32, split_heads};
use crate::model::weights::TensorMap;
use burn::module::Module;
use burn::nn::{Linear, RmsNorm};
use burn::tensor::activation::silu;
use burn::tensor::{Device, FloatDType, Tensor, TensorData};

/// The cached keys and values of one block, `[b, kv_heads, t, head_dim]` each.
pub type LayerCache = Option<(Tensor<4>, Tensor<4>)>;

/// cos/sin `[b, 1, s, head_dim]` for rotate-half RoPE at given positions, shared by every block.
#[derive(Debug, Clone)]
pub struct Rope {
    cos: Tensor<4>,
    sin: Tensor<4>,
}

impl Rope {
    /// The tables for row-major `[b, s]` positions and inverse frequencies `inv` (`head_dim / 2`
    /// values), computed in f64.
    pub fn new(inv: &[f64], positions: &[usize], b: usize, s: usize, device: &Device) -> Self {
        let head_dim = 2 * inv.len();
        let mut cos = Vec::with_capacity(b * s * head_dim);
        let mut sin = Vec::with_capacity(b * s * head_dim);
        for &p in positions {
            for _ in 0..2 {
                for f in inv {
                    let a = p as f64 * f;
                    cos.push(a.cos() as f32);
                    sin.push(a.sin() as f32);
                }
            }
        }
        let mk = |v| Tensor::<4>::from_data(TensorData::new(v, [b, 1, s, head_dim]), device);
        Self { cos: mk(cos), sin: mk(sin) }
    }

    /// The tables in the decoder's compute type.
    pub fn cast(self, dtype: FloatDType) -> Self {
        Self { cos: self.cos.cast(dtype), sin: self.sin.cast(dtype) }
    }

    /// x·cos + rotate_half(x)·sin for `x`: `[b, h, s, hd]`.
    /// The tables of slots `[from, from + n)`.
    pub fn narrow(&self, from: usize, n: usize) -> Self {
        Self { cos: self.cos.clone().narrow(2, from, n), sin: self.sin.clone().narrow(2, from, n) }
    }

    fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let hd = x.dims()[3];
        let x1 = x.clone().narrow(3, 0, hd / 2);
        let x2 = x.clone().narrow(3, hd / 2, hd / 2);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        x * self.cos.clone() + rotated * self.sin.clone()
    }
}

#[derive(Module, Debug)]
pub struct SelfAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    /// Per-head RMSNorm of queries and keys before RoPE (qwen3, gemma3).
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    /// The factor on q·k.
    scale: f64,
}

impl SelfAttention {
    pub fn load(w: &TensorMap, prefix: &str, cfg: &DecoderConfig, device: &Device) -> Result<Self> {
        let (d, hd, h, kv, bias) = (cfg.hidden_size, cfg.head_dim(), cfg.num_attention_heads, cfg.kv_heads(), cfg.qkv_bias());
        let norm = |n: &str| rms_norm(w, &format!("{prefix}.{n}"), hd, cfg.rms_norm_eps, cfg.norm_offset(), device);
        Ok(Self {
            q_proj: linear(w, &format!("{prefix}.q_proj"), d, h * hd, bias, device)?,
            k_proj: linear(w, &format!("{prefix}.k_proj"), d, kv * hd, bias, device)?,
            v_proj: linear(w, &format!("{prefix}.v_proj"), d, kv * hd, bias, device)?,
            o_proj: linear(w, &format!("{prefix}.o_proj"), h * hd, d, cfg.o_bias(), device)?,
            q_norm: if cfg.qk_norm() { Some(norm("q_norm")?) } else { None },
            k_norm: if cfg.qk_norm() { Some(norm("k_norm")?) } else { None },
            heads: h,
            kv_heads: kv,
            head_dim: hd,
            scale: cfg.attention_scale(),
        })
    }

    /// This attention with `m` applied to its four projections (not its norms).
    pub fn map_projections(self, m: &mut impl burn::module::ModuleMapper) -> Self {
        Self { q_proj: self.q_proj.map(m), k_proj: self.k_proj.map(m), v_proj: self.v_proj.map(m), o_proj: self.o_proj.map(m), ..self }
    }

    /// `x`: normed `[b, s, d]` → `[b, s, d]`. `bias` is the additive `[b, 1, s, t]` mask over the
    /// cached and new slots; `cache` receives this call's keys and values after the cached ones.
    pub fn forward(&self, x: Tensor<3>, rope: &Rope, bias: Tensor<4>, cache: Option<&mut LayerCache>, lora: Option<(&LoraLayer, f64)>) -> Tensor<3> {
        let q = with_lora(self.q_proj.forward(x.clone()), &x, lora.map(|(l, s)| (&l.q_proj, s)));
        let q = rope.apply(match &self.q_norm {
            Some(n) => rms_norm_f32(n, split_heads(q, self.heads, self.head_dim)),
            None => split_heads(q, self.heads, self.head_dim),
        });
        let (mut k, mut v) = self.keys_values(x, rope, lora);
        if let Some(c) = cache {
            if let Some((pk, pv)) = c.take() {
                k = Tensor::cat(vec![pk, k], 2);
                v = Tensor::cat(vec![pv, v], 2);
            }
            *c = Some((k.clone(), v.clone()));
        }
        self.o_proj.forward(merge_heads(self.grouped_attention(q, k, v, bias)))
    }

    /// Keys (normed where the model norms them, with RoPE) and values `[b, kv_heads, s,
    /// head_dim]` of normed `x`: what a cache holds for these slots.
    pub fn keys_values(&self, x: Tensor<3>, rope: &Rope, lora: Option<(&LoraLayer, f64)>) -> (Tensor<4>, Tensor<4>) {
        let k = with_lora(self.k_proj.forward(x.clone()), &x, lora.map(|(l, s)| (&l.k_proj, s)));
        let v = with_lora(self.v_proj.forward(x.clone()), &x, lora.map(|(l, s)| (&l.v_proj, s)));
        let k = split_heads(k, self.kv_heads, self.head_dim);
        let k = rope.apply(match &self.k_norm {
            Some(n) => rms_norm_f32(n, k),
            None => k,
        });
        (k, split_heads(v, self.kv_heads, self.head_dim))
    }

    /// Grouped-query attention without copying K/V per query head: the `g` query heads that share
    /// a KV head are stacked along the sequence axis (`[b, kv, g·s, hd]`), so one matmul serves them.
    fn grouped_attention(&self, q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: Tensor<4>) -> Tensor<4> {
        let g = self.heads / self.kv_heads;
        if g == 1 {
            return attention(q, k, v, bias, self.scale);
        }
        let [b, h, s, hd] = q.dims();
        let q = q.reshape([b, self.kv_heads, g * s, hd]);
        let bias = if bias.dims()[2] == 1 { bias } else { bias.repeat_dim(2, g) };
        attention(q, k, v, bias, self.scale).reshape([b, h, s, hd])
    }
}

/// `base + LoRA(x)`: the LoRA's weights are trained in f32 whatever the frozen model runs in.
fn with_lora(base: Tensor<3>, x: &Tensor<3>, pair: Option<(&crate::model::lora::LoraPair, f64)>) -> Tensor<3> {
    match pair {
        Some((p, scale)) => {
            let dtype = float_dtype(&base);
            base + p.delta(x.clone().cast(FloatDType::F32), scale).cast(dtype)
        }
        None => base,
    }
}

/// A gated MLP: down(act(gate(x)) · up(x)), SwiGLU with silu, GeGLU with the tanh GELU.
#[derive(Module, Debug)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
    #[module(skip)]
    act: Activation,
}

impl Mlp {
    pub fn load(w: &TensorMap, prefix: &str, cfg: &DecoderConfig, device: &Device) -> Result<Self> {
        let (d, ff) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate_proj: linear(w, &format!("{prefix}.gate_proj"), d, ff, false, device)?,
            up_proj: linear(w, &format!("{prefix}.up_proj"), d, ff, false, device)?,
            down_proj: linear(w, &format!("{prefix}.down_proj"), ff, d, false, device)?,
            act: cfg.hidden_act,
        })
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = self.gate_proj.forward(x.clone());
        let gate = match self.act {
            Activation::Silu => silu(gate),
            Activation::GeluTanh => gelu_tanh(gate),
        };
        self.down_proj.forward(gate * self.up_proj.forward(x))
    }
}

/// `model.layers.N`: pre-norm attention and MLP, each with a residual. Without sandwich norms
/// `post_attention_layernorm` is the MLP's input norm; with them (gemma3) it norms the attention's
/// output, and `pre_feedforward_layernorm` / `post_feedforward_layernorm` wrap the MLP.
#[derive(Module, Debug)]
pub struct DecoderLayer {
    pub self_attn: SelfAttention,
    pub mlp: Mlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
    pub pre_feedforward_layernorm: Option<RmsNorm>,
    pub post_feedforward_layernorm: Option<RmsNorm>,
    /// Which keys its queries see (the decoder hands it the matching mask and RoPE tables).
    #[module(skip)]
    pub layer_type: LayerType,
}

impl DecoderLayer {
    /// Weights under `prefix` (`model.layers.N`).
    pub fn load(w: &TensorMap, prefix: &str, layer_type: LayerType, cfg: &DecoderConfig, device: &Device) -> Result<Self> {
        let norm = |n: &str| rms_norm(w, &format!("{prefix}.{n}"), cfg.hidden_size, cfg.rms_norm_eps, cfg.norm_offset(), device);
        let sandwich = cfg.sandwich_norms();
        Ok(Self {
            self_attn: SelfAttention::load(w, &format!("{prefix}.self_attn"), cfg, device)?,
            mlp: Mlp::load(w, &format!("{prefix}.mlp"), cfg, device)?,
            input_layernorm: norm("input_layernorm")?,
            post_attention_layernorm: norm("post_attention_layernorm")?,
            pre_feedforward_layernorm: if sandwich { Some(norm("pre_feedforward_layernorm")?) } else { None },
            post_feedforward_layernorm: if sandwich { Some(norm("post_feedforward_layernorm")?) } else { None },
            layer_type,
        })
    }

    /// This layer with its projections' weights cast by `cast` (norms stay f32; a weight already
    /// in the target type is left as it is).
    pub(crate) fn cast(self, cast: &mut super::Cast) -> Self {
        Self { self_attn: self.self_attn.map_projections(cast), mlp: self.mlp.map(cast), ..self }
    }

    /// What a cache would hold for slots whose layer input is `x` (`[b, s, d]`): their keys and
    /// values, so that later slots can be computed without them.
    pub fn keys_values(&self, x: Tensor<3>, rope: &Rope, lora: Option<(&LoraLayer, f64)>) -> LayerCache {
        Some(self.self_attn.keys_values(rms_norm_f32(&self.input_layernorm, x), rope, lora))
    }

    /// `[b, s, d]` → `[b, s, d]`.
    pub fn forward(&self, x: Tensor<3>, rope: &Rope, bias: Tensor<4>, cache: Option<&mut LayerCache>, lora: Option<(&LoraLayer, f64)>) -> Tensor<3> {
        let attn = self.self_attn.forward(rms_norm_f32(&self.input_layernorm, x.clone()), rope, bias, cache, lora);
        match (&self.pre_feedforward_layernorm, &self.post_feedforward_layernorm) {
            (Some(pre), Some(post)) => {
                let x = x + rms_norm_f32(&self.post_attention_layernorm, attn);
                x.clone() + rms_norm_f32(post, self.mlp.forward(rms_norm_f32(pre, x)))
            }
            _ => {
                let x = x + attn;
                x.clone() + self.mlp.forward(rms_norm_f32(&self.post_attention_layernorm, x))
            }
        }
    }
}
