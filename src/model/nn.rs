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

    /// The int8 weights, for host code that runs a whole block on the CPU.
    pub fn as_int8(&self) -> Option<&Int8Linear> {
        if let Self::Int8(q) = self { Some(&q.weights) } else { None }
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
        let out = if then_gelu { self.weights.forward_then(x, |_, band| fast_math::gelu_in_place(band)) } else { self.weights.forward(x) };
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
pub fn host_values<const D: usize>(x: Tensor<D>) -> Vec<f32> {
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
/// ([`parallel`]), each [`attend_head`], so a head's result does not depend on the threads. Shapes
/// as there; `k` and `v` have `q`'s batch and heads.
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
        let mut scratch = Scratch::default();
        for (j, o) in o.chunks_exact_mut(s * hd).enumerate() {
            let i = piece * per + j;
            let bias = Rows::from(&bias, at(i / h, i % h), if bs == 1 { 0 } else { t });
            attend_head([s, t, hd], Rows::from(&q, i * s * hd, hd), Rows::columns(&k, i * t * hd, hd), Rows::from(&v, i * t * hd, hd), bias, scale, o, hd, &mut scratch);
        }
    });
    Tensor::from_data(TensorData::new(out, [b, h, s, hd]), &device)
}

/// Self-attention over one sequence's host values, laid out as the projections give and take
/// them: `q`, `k`, `v` and `out` are `[s, heads · head_dim]`, so no head is split out or
/// merged back. `key_bias`: an additive value per key (0 or [`MASKED`]), `s` of them. The queries go
/// in blocks, every head of a block in the same piece of work. A block is a quarter of the
/// sequence, at least 16 queries: tall blocks make faster `gemm` calls, and four still share a
/// short sentence across a pool. The blocks depend on `s` alone, so the `gemm` calls have the same
/// shapes (which pick their kernels) and the result the same bits on any pool.
pub fn self_attention_rows(q: &[f32], k: &[f32], v: &[f32], [heads, hd]: [usize; 2], key_bias: &[f32], scale: f32, out: &mut [f32]) {
    let (s, w) = (key_bias.len(), heads * hd);
    assert!(q.len() == s * w && k.len() == q.len() && v.len() == q.len() && out.len() == q.len(), "attention rows: shapes");
    // The keys as `[heads, hd, s]`: `gemm` reads each head's kᵀ as it is instead of packing the
    // keys anew for each block of queries.
    let mut kt = vec![0f32; s * w];
    let per = heads.div_ceil(parallel::pieces(s * w));
    parallel::for_each_piece(&mut kt, per * hd * s, |piece, kt| {
        for (i, kt) in kt.chunks_exact_mut(hd * s).enumerate() {
            let hi = piece * per + i;
            for (j, row) in k.chunks_exact(w).enumerate() {
                for (d, &x) in row[hi * hd..][..hd].iter().enumerate() {
                    kt[d * s + j] = x;
                }
            }
        }
    });
    let block = s.div_ceil(4).max(16);
    let per = s.div_ceil(block).div_ceil(parallel::pieces(2 * heads * s * s * hd)) * block;
    parallel::for_each_piece(out, per * w, |piece, o| {
        let mut scratch = Scratch::default();
        for (j, o) in o.chunks_mut(block * w).enumerate() {
            let (first, n) = (piece * per + j * block, o.len() / w);
            for hi in 0..heads {
                let queries = Rows::from(q, first * w + hi * hd, w);
                let (keys, values) = (Rows::from(&kt, hi * hd * s, s), Rows::from(v, hi * hd, w));
                attend_head([n, s, hd], queries, keys, values, Rows::from(key_bias, 0, 0), scale, &mut o[hi * hd..], w, &mut scratch);
            }
        }
    });
}

/// A matrix in a host buffer: row `i` starts at `v[i · stride]`, its values `step` apart.
#[derive(Clone, Copy)]
struct Rows<'a> {
    v: &'a [f32],
    stride: usize,
    step: usize,
}

impl<'a> Rows<'a> {
    /// Rows of `v` from index `first` on, each row's values contiguous (the reads are
    /// bounds-checked where they are made).
    fn from(v: &'a [f32], first: usize, stride: usize) -> Self {
        Self { v: &v[first..], stride, step: 1 }
    }

    /// The transpose of [`Rows::from`]'s matrix: its columns as rows.
    fn columns(v: &'a [f32], first: usize, stride: usize) -> Self {
        Self { v: &v[first..], stride: 1, step: stride }
    }
}

/// One piece's buffers for [`attend_head`], kept across its heads.
#[derive(Default)]
struct Scratch {
    scores: Vec<f32>,
    sums: Vec<f32>,
}

/// One head's attention, `m` queries against `t` keys of `hd` values: `out`'s rows (`out_stride`
/// apart, `hd` values each) = softmax(scale · q · kᵀ + bias) · v. `kt` is kᵀ: `hd` rows of `t`.
/// `bias` holds `t` values for each query row (stride 0: one row for all). Two `gemm` calls and a
/// softmax, on one thread.
#[allow(clippy::too_many_arguments)]
fn attend_head([m, t, hd]: [usize; 3], q: Rows, kt: Rows, v: Rows, bias: Rows, scale: f32, out: &mut [f32], out_stride: usize, scratch: &mut Scratch) {
    let Scratch { scores: p, sums } = scratch;
    p.resize(m * t, 0.0);
    sums.resize(m, 0.0);
    gemm_into([m, t, hd], (p, t), q.v, (q.step as isize, q.stride as isize), kt.v, (kt.step as isize, kt.stride as isize));
    for (r, (row, sum)) in p.chunks_exact_mut(t.max(1)).zip(sums.iter_mut()).enumerate() {
        *sum = fast_math::softmax_numerators(row, scale, &bias.v[r * bias.stride..][..t]);
    }
    gemm_into([m, hd, t], (out, out_stride), p, (1, t as isize), v.v, (v.step as isize, v.stride as isize));
    // The softmax's division, on the output's rows.
    for (r, sum) in sums.iter().enumerate() {
        let inv = 1.0 / sum;
        out[r * out_stride..][..hd].iter_mut().for_each(|x| *x *= inv);
    }
}

/// `out` (`[m, n]`, rows `out_stride` apart) = `lhs` (`[m, k]`) · `rhs` (`[k, n]`), each operand
/// given with its (column, row) strides; one thread.
fn gemm_into([m, n, k]: [usize; 3], (out, out_stride): (&mut [f32], usize), lhs: &[f32], (lcs, lrs): (isize, isize), rhs: &[f32], (rcs, rrs): (isize, isize)) {
    let last = |cs: isize, rs: isize, rows: usize, cols: usize| rows.saturating_sub(1) * rs as usize + cols.saturating_sub(1) * cs as usize;
    assert!(
        (m * n == 0 || out.len() > last(1, out_stride as isize, m, n)) && (m * k == 0 || lhs.len() > last(lcs, lrs, m, k)) && (k * n == 0 || rhs.len() > last(rcs, rrs, k, n)),
        "gemm operands out of bounds"
    );
    // SAFETY: every element read or written is within the slices (the assert above); `out` is
    // written only.
    unsafe {
        gemm::gemm(m, n, k, out.as_mut_ptr(), 1, out_stride as isize, false, lhs.as_ptr(), lcs, lrs, rhs.as_ptr(), rcs, rrs, 0.0f32, 1.0f32, false, false, false, gemm::Parallelism::None);
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

    /// Attention over one sequence's `[s, heads · hd]` rows against the per-head layout's attention
    /// on the same values, and the same bits on pools of any size.
    #[test]
    fn self_attention_rows_equals_attention_by_heads_on_any_pool() {
        let d = Device::flex();
        // 150 queries: blocks of 38, the last of 36.
        let (s, heads, hd) = (150, 4, 16);
        let r = || Tensor::<3>::random([1, s, heads * hd], Distribution::Normal(0.0, 1.0), &d);
        let (q, k, v) = (r(), r(), r());
        let mask: Vec<f32> = (0..s).map(|i| if i > 140 { 0.0 } else { 1.0 }).collect();
        let bias = key_padding_bias(&mask, 1, s, &d);
        let split = |x: &Tensor<3>| split_heads(x.clone(), heads, hd);
        let want = host_values(merge_heads(attention_by_heads(split(&q), split(&k), split(&v), bias.clone(), 0.25)));
        let (q, k, v, key_bias) = (host_values(q), host_values(k), host_values(v), host_values(bias));
        let rows = || {
            let mut out = vec![f32::NAN; s * heads * hd];
            self_attention_rows(&q, &k, &v, [heads, hd], &key_bias, 0.25, &mut out);
            out
        };
        let got = rows();
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-6, "rows differ from heads by {worst}");
        #[cfg(feature = "parallel")]
        for threads in [2, 3, 4] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            assert!(pool.install(|| parallel::pieces(2 * heads * s * s * hd)) > 1);
            assert!(pool.install(rows).iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()), "{threads} threads differ");
        }
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
