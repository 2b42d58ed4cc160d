//! Building burn `nn` layers from checkpoint tensors (Hugging Face names and layouts), and the
//! attention helpers the encoder and the decoder share.

use crate::error::Result;
use crate::model::int8_linear::Int8Linear;
use crate::model::weights::TensorMap;
use burn::module::Module;
use std::sync::Arc;
use burn::module::Param;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, RmsNorm, RmsNormConfig};
use crate::model::{fast_math, parallel};
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
            (Self::Float(l), true) if is_cpu_f32(&x) => on_host(l.forward(x), gelu_on_pool),
            (Self::Float(l), true) => gelu(l.forward(x)),
            (Self::Int8(q), then_gelu) => {
                let (device, dims) = (x.device(), x.dims());
                q.forward_host(&host_values(x), dims, &device, then_gelu)
            }
        }
    }

    /// Each projection of the same input, `[.., d_in]` → `[.., d_out]`: on the int8 CPU path
    /// the input is read back from its tensor once for all of them (attention's query, key and
    /// value).
    pub fn forward_each<const N: usize, const D: usize>(projections: [&Self; N], x: Tensor<D>) -> [Tensor<D>; N] {
        let int8: Vec<&FrozenInt8> = projections.iter().filter_map(|p| if let Self::Int8(q) = p { Some(q) } else { None }).collect();
        if int8.len() == N {
            let (device, dims, host) = (x.device(), x.dims(), host_values(x));
            return std::array::from_fn(|i| int8[i].forward_host(&host, dims, &device, false));
        }
        projections.map(|p| p.forward(x.clone()))
    }
}

impl FrozenInt8 {
    /// The projection of `x`, host values of a `dims` tensor, as a tensor on `device`.
    fn forward_host<const D: usize>(&self, x: &[f32], mut dims: [usize; D], device: &Device, then_gelu: bool) -> Tensor<D> {
        let out = if then_gelu { self.weights.forward_then(x, fast_math::gelu_in_place) } else { self.weights.forward(x) };
        dims[D - 1] = self.weights.d_out();
        Tensor::from_data(TensorData::new(out, dims), device)
    }
}

/// [`fast_math::gelu_in_place`] on the pool, by bands of values.
fn gelu_on_pool(v: &mut [f32]) {
    // A GELU costs some 30 operations a value.
    let per = v.len().div_ceil(parallel::pieces(30 * v.len()));
    parallel::for_each_piece(v, per, |_, band| fast_math::gelu_in_place(band));
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
    if is_cpu_f32(&q) && k.dims() == v.dims() && k.dims()[..2] == q.dims()[..2] {
        return attention_by_heads(q, k, v, bias, scale as f32);
    }
    let dtype = float_dtype(&q);
    let scores = q.matmul(k.swap_dims(2, 3)) * scale + bias;
    // Softmax sums in f32 whatever the matmuls run in (a no-op cast at f32).
    softmax(scores.cast(FloatDType::F32), 3).cast(dtype).matmul(v)
}

/// [`attention_block`] on the CPU in f32: one piece of work per (batch row, head) on the pool
/// ([`parallel`]), each two `gemm` calls and a softmax, so a head's result does not depend on the
/// threads. Shapes as there; `k` and `v` have `q`'s batch and heads.
fn attention_by_heads(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: Tensor<4>, scale: f32) -> Tensor<4> {
    let ([b, h, s, hd], t, device) = (q.dims(), k.dims()[2], q.device());
    // A bias broadcast along the keys is written out: the softmax takes a value per key.
    let bias = if bias.dims()[3] == t { bias } else { let [bb, bh, bs, _] = bias.dims(); bias.expand([bb, bh, bs, t]) };
    let [bb, bh, bs, bt] = bias.dims();
    let (q, k, v, bias) = (host_values(q), host_values(k), host_values(v), host_values(bias));
    // The bias broadcasts over its size-1 axes.
    let at = |bi: usize, hi: usize| ((if bb == 1 { 0 } else { bi }) * bh + if bh == 1 { 0 } else { hi }) * bs * bt;
    let mut out = vec![0f32; b * h * s * hd];
    // Whole heads a piece; several a piece where one is too little work to wake the pool for.
    let per = (b * h).div_ceil(parallel::pieces(2 * b * h * s * t * hd));
    parallel::for_each_piece(&mut out, per * s * hd, |piece, o| {
        let (mut p, mut sums) = (vec![0f32; s * t], vec![0f32; s]);
        for (j, o) in o.chunks_exact_mut(s * hd).enumerate() {
            let i = piece * per + j;
            let (bi, hi) = (i / h, i % h);
            let (qh, kh, vh) = (&q[i * s * hd..][..s * hd], &k[i * t * hd..][..t * hd], &v[i * t * hd..][..t * hd]);
            // p = q · kᵀ: kᵀ is k read with its strides swapped.
            gemm_into(s, t, hd, &mut p, qh, (1, hd as isize), kh, (hd as isize, 1));
            let bias = &bias[at(bi, hi)..][..bs * t];
            for (r, (row, sum)) in p.chunks_exact_mut(t.max(1)).zip(&mut sums).enumerate() {
                *sum = fast_math::softmax_numerators(row, scale, &bias[if bs == 1 { 0 } else { r } * t..][..t]);
            }
            gemm_into(s, hd, t, o, &p, (1, t as isize), vh, (1, hd as isize));
            // The softmax's division, on the output's rows.
            for (row, sum) in o.chunks_exact_mut(hd.max(1)).zip(&sums) {
                let inv = 1.0 / sum;
                row.iter_mut().for_each(|x| *x *= inv);
            }
        }
    });
    Tensor::from_data(TensorData::new(out, [b, h, s, hd]), &device)
}

/// `out` (`[m, n]`, row-major) = `lhs` (`[m, k]`) · `rhs` (`[k, n]`), each operand given with its
/// (column, row) strides; one thread.
#[allow(clippy::too_many_arguments)]
fn gemm_into(m: usize, n: usize, k: usize, out: &mut [f32], lhs: &[f32], (lcs, lrs): (isize, isize), rhs: &[f32], (rcs, rrs): (isize, isize)) {
    let last = |cs: isize, rs: isize, rows: usize, cols: usize| rows.saturating_sub(1) * rs as usize + cols.saturating_sub(1) * cs as usize;
    assert!(out.len() >= m * n && (m * k == 0 || lhs.len() > last(lcs, lrs, m, k)) && (k * n == 0 || rhs.len() > last(rcs, rrs, k, n)), "gemm operands out of bounds");
    // SAFETY: every element read or written is within the slices (the assert above); `out` is
    // written only.
    unsafe {
        gemm::gemm(m, n, k, out.as_mut_ptr(), 1, n as isize, false, lhs.as_ptr(), lcs, lrs, rhs.as_ptr(), rcs, rrs, 0.0f32, 1.0f32, false, false, false, gemm::Parallelism::None);
    }
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

    /// The CPU attention (per head, on the pool) against burn's ops on the same values: the
    /// same to float rounding, and the same bits on pools of any size.
    #[test]
    fn attention_by_heads_equals_burns_ops_and_does_not_depend_on_the_pool() {
        let d = Device::flex();
        // Enough work for several pieces on a pool of 2 or more.
        let (b, h, s, t, hd) = (2, 4, 40, 48, 32);
        let r = |shape: [usize; 4]| Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &d);
        let (q, k, v) = (r([b, h, s, hd]), r([b, h, t, hd]), r([b, h, t, hd]));
        for bias_shape in [[b, 1, 1, t], [b, 1, s, t], [1, h, s, t], [b, 1, s, 1]] {
            let bias = r(bias_shape) * 3.0;
            let heads = attention_by_heads(q.clone(), k.clone(), v.clone(), bias.clone(), 0.35).into_data().try_to_vec::<f32>().unwrap();
            let scores = q.clone().matmul(k.clone().swap_dims(2, 3)) * 0.35 + bias.clone();
            let burn = softmax(scores, 3).matmul(v.clone()).into_data().try_to_vec::<f32>().unwrap();
            let worst = heads.iter().zip(&burn).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst < 1e-5, "bias {bias_shape:?}: per head differs from burn by {worst}");
            #[cfg(feature = "parallel")]
            for threads in [1, 2, 4] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                assert_eq!(pool.install(|| parallel::pieces(2 * b * h * s * t * hd)) > 1, threads > 1);
                let got = pool.install(|| attention_by_heads(q.clone(), k.clone(), v.clone(), bias.clone(), 0.35)).into_data().try_to_vec::<f32>().unwrap();
                assert!(got.iter().zip(&heads).all(|(a, b)| a.to_bits() == b.to_bits()), "{threads} threads differ");
            }
        }
    }
}
