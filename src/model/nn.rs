//! Building burn `nn` layers from checkpoint tensors (Hugging Face names and layouts), and the
//! attention helpers the encoder and the decoder share.

use crate::error::Result;
use crate::model::int8_linear::Int8Linear;
use crate::model::weights::TensorMap;
use burn::module::Module;
use std::sync::Arc;
use burn::module::Param;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, RmsNorm, RmsNormConfig};
use crate::model::fast_math;
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{DType, Device, FloatDType, Tensor, TensorData};

/// A `torch.nn.Linear` called `{prefix}.weight` (`[d_out, d_in]`) and optionally `{prefix}.bias`.
pub fn linear(w: &TensorMap, prefix: &str, d_in: usize, d_out: usize, bias: bool, device: &Device) -> Result<Linear> {
    let weight = Param::from_tensor(w.linear_weight(&format!("{prefix}.weight"), d_in, d_out, device)?);
    let bias = if bias { Some(Param::from_tensor(w.tensor(&format!("{prefix}.bias"), [d_out], device)?)) } else { None };
    Ok(Linear { weight, bias })
}

/// A projection of a frozen model: burn's [`Linear`], or, on the CPU when the file stored the
/// weight as int8, an [`Int8Linear`] that multiplies the int8 values as integers (and holds no
/// f32 copy). Either way `forward` maps `[.., d_in]` to `[.., d_out]`.
#[derive(Module, Debug)]
pub enum Projection {
    Float(Linear),
    Int8(FrozenInt8),
}

/// Frozen int8 weights: shared and never trained, so they are no module parameters.
#[derive(Module, Debug)]
pub struct FrozenInt8 {
    #[module(skip)]
    weights: Arc<Int8Linear>,
}

impl Projection {
    /// `{prefix}.weight` (`[d_out, d_in]`) and `{prefix}.bias`, as [`linear`] reads them.
    pub fn load(w: &TensorMap, prefix: &str, d_in: usize, d_out: usize, device: &Device) -> Result<Self> {
        let name = format!("{prefix}.weight");
        if is_cpu(device) {
            if let Some(q) = w.int8(&name).filter(|q| q.rows == d_out && q.cols == d_in) {
                let bias = w.expect(&format!("{prefix}.bias"), &[d_out])?;
                if let Some(l) = Int8Linear::new(q, Some(&bias.data)) {
                    return Ok(Self::Int8(FrozenInt8 { weights: Arc::new(l) }));
                }
            }
        }
        Ok(Self::Float(linear(w, prefix, d_in, d_out, true, device)?))
    }

    /// Whether this projection computes on int8 weights.
    pub fn is_int8(&self) -> bool {
        matches!(self, Self::Int8(_))
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.forward_then(x, false)
    }

    /// `gelu(forward(x))` with the exact (erf) GELU.
    pub fn forward_gelu<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.forward_then(x, true)
    }

    fn forward_then<const D: usize>(&self, x: Tensor<D>, then_gelu: bool) -> Tensor<D> {
        match (self, then_gelu) {
            (Self::Float(l), false) => l.forward(x),
            (Self::Float(l), true) if is_cpu_f32(&x) => on_host(l.forward(x), fast_math::gelu_in_place),
            (Self::Float(l), true) => gelu(l.forward(x)),
            (Self::Int8(FrozenInt8 { weights: q }), then_gelu) => {
                let (device, mut dims) = (x.device(), x.dims());
                let mut out = q.forward(&host_values(x));
                if then_gelu {
                    fast_math::gelu_in_place(&mut out);
                }
                dims[D - 1] = q.d_out();
                Tensor::from_data(TensorData::new(out, dims), &device)
            }
        }
    }
}

/// Whether `device` is the plain CPU device. Not an autodiff one: it compares equal to the device it
/// wraps, but host code would cut its graph.
fn is_cpu(device: &Device) -> bool {
    !device.is_autodiff() && *device == Device::flex()
}

/// Whether `x` is f32 on the plain CPU device, where [`on_host`] is a copy each way: cheaper there
/// than burn's elementwise functions, which call libm once per value.
fn is_cpu_f32<const D: usize>(x: &Tensor<D>) -> bool {
    x.dtype() == DType::F32 && is_cpu(&x.device())
}

/// The values of a CPU tensor, which reading cannot fail.
fn host_values<const D: usize>(x: Tensor<D>) -> Vec<f32> {
    crate::device::to_vec(x).expect("a float tensor on the CPU reads back")
}

/// `f` applied to the values of a CPU f32 tensor.
fn on_host<const D: usize>(x: Tensor<D>, f: impl FnOnce(&mut [f32])) -> Tensor<D> {
    let (device, dims) = (x.device(), x.dims());
    let mut v = host_values(x);
    f(&mut v);
    Tensor::from_data(TensorData::new(v, dims), &device)
}

/// A LayerNorm called `{prefix}.weight`/`.bias` (or the older `.gamma`/`.beta`).
pub fn layer_norm(w: &TensorMap, prefix: &str, d: usize, eps: f64, device: &Device) -> Result<LayerNorm> {
    let (g, b) = if w.contains(&format!("{prefix}.gamma")) { ("gamma", "beta") } else { ("weight", "bias") };
    let mut ln = LayerNormConfig::new(d).with_epsilon(eps).init(device);
    ln.gamma = Param::from_tensor(w.tensor(&format!("{prefix}.{g}"), [d], device)?);
    ln.beta = Some(Param::from_tensor(w.tensor(&format!("{prefix}.{b}"), [d], device)?));
    Ok(ln)
}

/// An RMSNorm called `{prefix}.weight`, multiplying by `offset + weight` (Gemma stores the
/// weight less 1).
pub fn rms_norm(w: &TensorMap, prefix: &str, d: usize, eps: f64, offset: f32, device: &Device) -> Result<RmsNorm> {
    let mut n = RmsNormConfig::new(d).with_epsilon(eps).init(device);
    let gamma = w.tensor(&format!("{prefix}.weight"), [d], device)?;
    n.gamma = Param::from_tensor(if offset == 0.0 { gamma } else { gamma + offset });
    Ok(n)
}

/// `[b, s, heads * head_dim]` → `[b, heads, s, head_dim]`.
pub fn split_heads(x: Tensor<3>, heads: usize, head_dim: usize) -> Tensor<4> {
    let [b, s, _] = x.dims();
    x.reshape([b, s, heads, head_dim]).swap_dims(1, 2)
}

/// `[b, heads, s, head_dim]` → `[b, s, heads * head_dim]`.
pub fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let [b, h, s, hd] = x.dims();
    x.swap_dims(1, 2).reshape([b, s, h * hd])
}

/// Queries per block where attention runs in blocks (more than twice this many queries): a layer
/// then holds `[b, h, QUERY_BLOCK, t]` scores at once instead of `[b, h, s, t]`, so a long prompt's
/// memory grows linearly with its length. The soft-prompt gradient recomputes in blocks of it too.
pub const QUERY_BLOCK: usize = 256;

/// Scaled dot-product attention. `q`: `[b, h, s, hd]`, `k`, `v`: `[b, h, t, hd]`,
/// `bias`: additive mask broadcastable to `[b, h, s, t]` (0 = attend, large negative = blocked),
/// `scale`: the factor on q·k (usually `hd^-1/2`). Returns `[b, h, s, hd]`. Each query's row is
/// computed alone, so blocks of queries ([`QUERY_BLOCK`]) give what the whole would.
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: Tensor<4>, scale: f64) -> Tensor<4> {
    let s = q.dims()[2];
    if s <= 2 * QUERY_BLOCK {
        return attention_block(q, k, v, bias, scale);
    }
    let per_query = bias.dims()[2] > 1;
    let blocks = (0..s)
        .step_by(QUERY_BLOCK)
        .map(|from| {
            let n = QUERY_BLOCK.min(s - from);
            let bias = if per_query { bias.clone().narrow(2, from, n) } else { bias.clone() };
            attention_block(q.clone().narrow(2, from, n), k.clone(), v.clone(), bias, scale)
        })
        .collect();
    Tensor::cat(blocks, 2)
}

fn attention_block(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: Tensor<4>, scale: f64) -> Tensor<4> {
    let dtype = float_dtype(&q);
    let scores = q.matmul(k.swap_dims(2, 3)) * scale + bias;
    let t = scores.dims()[3];
    if is_cpu_f32(&scores) {
        return on_host(scores, |s| fast_math::softmax_rows_in_place(s, t)).matmul(v);
    }
    // Softmax sums in f32 whatever the matmuls run in (a no-op cast at f32).
    softmax(scores.cast(FloatDType::F32), 3).cast(dtype).matmul(v)
}

/// The additive value for a blocked attention position: large enough to zero the weight after
/// softmax, finite so that a fully masked (padding) row gives no NaN.
pub const MASKED: f32 = -1e9;

/// An additive key-padding bias `[b, 1, 1, t]` from a 0/1 mask given row-major `[b, t]`.
pub fn key_padding_bias(mask: &[f32], b: usize, t: usize, device: &Device) -> Tensor<4> {
    let v: Vec<f32> = mask.iter().map(|&m| if m > 0.5 { 0.0 } else { MASKED }).collect();
    Tensor::from_data(TensorData::new(v, [b, 1, 1, t]), device)
}

/// GELU with the tanh approximation (`gelu_pytorch_tanh`, `gelu_new`).
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let c = (2.0f64 / std::f64::consts::PI).sqrt();
    let inner = (x.clone() + x.clone().powi_scalar(3) * 0.044715) * c;
    x * 0.5 * (burn::tensor::activation::tanh(inner) + 1.0)
}

/// A float tensor's element type as a cast target.
pub fn float_dtype<const D: usize>(x: &Tensor<D>) -> FloatDType {
    match x.dtype() {
        DType::F16 => FloatDType::F16,
        DType::BF16 => FloatDType::BF16,
        DType::F64 => FloatDType::F64,
        _ => FloatDType::F32,
    }
}

/// An RMSNorm computed in f32 and returned in `x`'s type (half precision overflows the sum of
/// squares).
pub fn rms_norm_f32<const D: usize>(norm: &RmsNorm, x: Tensor<D>) -> Tensor<D> {
    let dtype = float_dtype(&x);
    norm.forward(x.cast(FloatDType::F32)).cast(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};

    #[test]
    fn attention_in_blocks_of_queries_equals_attention_in_one() {
        let d = Device::flex();
        let (b, h, s, t, hd) = (2, 3, 2 * QUERY_BLOCK + 70, 2 * QUERY_BLOCK + 90, 8);
        let r = |shape: [usize; 4]| Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &d);
        let (q, k, v) = (r([b, h, s, hd]), r([b, h, t, hd]), r([b, h, t, hd]));
        // Causal over the last s of t slots, and one padded key in the second row of the batch.
        let mask: Vec<f32> = (0..b * s * t).map(|i| (i / (s * t), (i / t) % s, i % t)).map(|(bi, qi, ki)| if ki > qi + t - s || (bi == 1 && ki == 3) { MASKED } else { 0.0 }).collect();
        let bias = Tensor::<4>::from_data(TensorData::new(mask, [b, 1, s, t]), &d);
        let blocked = attention(q.clone(), k.clone(), v.clone(), bias.clone(), 0.35).into_data().try_to_vec::<f32>().unwrap();
        let whole = attention_block(q, k, v, bias, 0.35).into_data().try_to_vec::<f32>().unwrap();
        let worst = blocked.iter().zip(&whole).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-6, "blocks differ from the whole by {worst}");
        assert_eq!(blocked.len(), b * h * s * hd);
    }
}
