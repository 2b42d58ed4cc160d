//! Elementwise f32 functions the CPU path applies to whole buffers: straight-line code that
//! compiles to SIMD, with `exp` and the softmax written in wasm SIMD for the browser's modules
//! (the compiler leaves their selects and conversions value by value). The tests check them
//! against f64: exp within 3e-7 relative, GELU within 1.5e-6 absolute.

/// Below this, `exp` is 0 in f32 (and a masked attention score, -1e9, lands here); at it, `2^n`
/// is still a normal float (n = -126).
const EXP_MIN: f32 = -87.33;

const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const EXP_P: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5];

/// `1.5 · 2^23`: adding it rounds an f32 below 2^22 in magnitude to an integer (ties to even),
/// which its low mantissa bits then hold.
const ROUNDER: f32 = 12_582_912.0;

/// `e^x` for `x ≤ 0`, all the softmax takes (its scores less their maximum): `2^n · p(r)` with
/// `r = x - n·ln 2`, `|r| ≤ ln 2 / 2` (Cephes' expf polynomial). 0 below -87.33, NaN stays NaN.
/// The `simd` functions do the same operations on four lanes.
#[inline(always)]
fn exp(x: f32) -> f32 {
    // `x < MIN ? MIN : x` keeps NaN (f32::max would not), as wasm's `pmax` does.
    let c = if x < EXP_MIN { EXP_MIN } else { x };
    let t = c * std::f32::consts::LOG2_E + ROUNDER;
    let n = t - ROUNDER;
    let r = c - n * LN2_HI - n * LN2_LO;
    let p = EXP_P[1..].iter().fold(EXP_P[0], |p, &k| p * r + k);
    let y = p * r * r + r + 1.0;
    // 2^n as exponent bits: n is in [-126, 0], a normal float.
    let n = (t.to_bits() as i32).wrapping_sub(ROUNDER.to_bits() as i32);
    let e = y * f32::from_bits((n.wrapping_add(127) << 23) as u32);
    // NaN went through every step.
    if x < EXP_MIN { 0.0 } else { e }
}

/// `x · Φ(x) = x/2 · (1 + erf(x/√2))` for every value: BERT's exact GELU.
pub fn gelu_in_place(v: &mut [f32]) {
    for x in v.iter_mut() {
        *x = 0.5 * *x * (1.0 + erf(*x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// `x + residual`, then LayerNorm over each row of `gamma.len()` values, in place:
/// `(y - mean) / √(var + eps) · gamma + beta` with the biased variance. Two passes over a row (the
/// mean, then the squared deviations: no cancellation), each summing in four lanes.
pub fn add_layer_norm(x: &mut [f32], residual: &[f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let d = gamma.len();
    assert!(d > 0 && beta.len() == d && x.len() == residual.len() && x.len().is_multiple_of(d), "layer norm shapes");
    for (row, res) in x.chunks_exact_mut(d).zip(residual.chunks_exact(d)) {
        row.iter_mut().zip(res).for_each(|(y, r)| *y += r);
        let mean = sum4(row, |v| v) / d as f32;
        let var = sum4(row, |v| (v - mean) * (v - mean)) / d as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((y, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *y = (*y - mean) * inv * g + b;
        }
    }
}

/// `Σ f(v)`, value `i` summed in lane `i % 4` (which the compiler keeps in a SIMD register).
#[inline(always)]
fn sum4(v: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let (whole, tail) = v.as_chunks::<4>();
    let mut s = [0f32; 4];
    for c in whole {
        for l in 0..4 {
            s[l] += f(c[l]);
        }
    }
    tail.iter().fold((s[0] + s[1]) + (s[2] + s[3]), |a, &v| a + f(v))
}

/// erf as a rational function of x on [-4, 4] (±1 outside in f32): Eigen's and XLA's
/// `erf` for float, within 4e-7 absolute.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = -2.726_142_3e-10f32;
    let p = p * x2 + 2.770_681_4e-8;
    let p = p * x2 - 2.101_024e-6;
    let p = p * x2 - 5.692_506_4e-5;
    let p = p * x2 - 7.349_906_3e-4;
    let p = p * x2 - 2.954_6e-3;
    let p = p * x2 - 1.609_603_3e-2;
    let q = -1.456_607_2e-5f32;
    let q = q * x2 - 2.133_740_6e-4;
    let q = q * x2 - 1.682_827e-3;
    let q = q * x2 - 7.373_329e-3;
    let q = q * x2 - 1.426_473_9e-2;
    x * p / q
}

/// Softmax of `scale · x + bias` over `row` but for its division: the row becomes
/// `e^(scale · x + bias - max)` and the sum of those is returned (attention divides its output
/// rows instead, `head_dim` values a row instead of the row's length). `bias` is as long as `row`.
/// A row of -∞/-1e9 except its largest entry gives that entry 1 and the others 0. The sum runs in
/// four lanes (value `i` in lane `i % 4`), so the SIMD and the portable code give the same bits.
pub fn softmax_numerators(row: &mut [f32], scale: f32, bias: &[f32]) -> f32 {
    assert_eq!(row.len(), bias.len(), "a bias value per score");
    let (whole, tail) = row.as_chunks_mut::<4>();
    let (bias_whole, bias_tail) = bias.as_chunks::<4>();
    let mut max4 = [f32::NEG_INFINITY; 4];
    for (x, b) in whole.iter_mut().zip(bias_whole) {
        (*x, max4) = simd::scale_add_max(*x, scale, *b, max4);
    }
    // Comparisons, not f32::max: that is a libm call in wasm (and ignores NaN the same way).
    let mut max = max4.into_iter().fold(f32::NEG_INFINITY, |m, x| if x > m { x } else { m });
    for (x, &b) in tail.iter_mut().zip(bias_tail) {
        *x = *x * scale + b;
        if *x > max {
            max = *x;
        }
    }
    let mut sum4 = [0f32; 4];
    for x in whole.iter_mut() {
        (*x, sum4) = simd::exp_sub_add(*x, max, sum4);
    }
    for (i, x) in tail.iter_mut().enumerate() {
        *x = exp(*x - max);
        sum4[i] += *x;
    }
    (sum4[0] + sum4[1]) + (sum4[2] + sum4[3])
}

/// Four lanes at once: wasm SIMD in the browser's CPU modules, lane by lane elsewhere (where the
/// compiler vectorises it). Both do the same operations in the same order, so native tests check
/// the bits the browser computes.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd {
    use super::{EXP_MIN, EXP_P, LN2_HI, LN2_LO, ROUNDER};
    use core::arch::wasm32::*;

    #[inline(always)]
    fn load(x: [f32; 4]) -> v128 {
        // SAFETY: as in `store`.
        unsafe { core::mem::transmute::<[f32; 4], v128>(x) }
    }
    #[inline(always)]
    fn store(v: v128) -> [f32; 4] {
        // SAFETY: v128 and [f32; 4] are 16 bytes, any bits valid for both.
        unsafe { core::mem::transmute::<v128, [f32; 4]>(v) }
    }

    #[inline(always)]
    fn exp_v(x: v128) -> v128 {
        let splat = f32x4_splat;
        // pmax is `a < b ? b : a`: NaN kept, as the portable code's comparison keeps it.
        let c = f32x4_pmax(x, splat(EXP_MIN));
        let t = f32x4_add(f32x4_mul(c, splat(std::f32::consts::LOG2_E)), splat(ROUNDER));
        let n = f32x4_sub(t, splat(ROUNDER));
        let r = f32x4_sub(f32x4_sub(c, f32x4_mul(n, splat(LN2_HI))), f32x4_mul(n, splat(LN2_LO)));
        let mut p = splat(EXP_P[0]);
        for &k in &EXP_P[1..] {
            p = f32x4_add(f32x4_mul(p, r), splat(k));
        }
        let y = f32x4_add(f32x4_add(f32x4_mul(f32x4_mul(p, r), r), r), splat(1.0));
        let n = i32x4_sub(t, i32x4_splat(ROUNDER.to_bits() as i32));
        let e = f32x4_mul(y, i32x4_shl(i32x4_add(n, i32x4_splat(127)), 23));
        v128_andnot(e, f32x4_lt(x, splat(EXP_MIN)))
    }

    #[cfg(test)]
    pub fn exp(x: [f32; 4]) -> [f32; 4] {
        store(exp_v(load(x)))
    }

    /// `x · scale + bias`, and the running maxima with it.
    #[inline(always)]
    pub fn scale_add_max(x: [f32; 4], scale: f32, bias: [f32; 4], max: [f32; 4]) -> ([f32; 4], [f32; 4]) {
        let y = f32x4_add(f32x4_mul(load(x), f32x4_splat(scale)), load(bias));
        // `max < y ? y : max`: the portable `if y > max`.
        (store(y), store(f32x4_pmax(load(max), y)))
    }

    /// `e^(x - max)`, and the running sums with it.
    #[inline(always)]
    pub fn exp_sub_add(x: [f32; 4], max: f32, sum: [f32; 4]) -> ([f32; 4], [f32; 4]) {
        let e = exp_v(f32x4_sub(load(x), f32x4_splat(max)));
        (store(e), store(f32x4_add(load(sum), e)))
    }
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
mod simd {
    #[cfg(test)]
    pub fn exp(x: [f32; 4]) -> [f32; 4] {
        x.map(super::exp)
    }

    #[inline(always)]
    pub fn scale_add_max(x: [f32; 4], scale: f32, bias: [f32; 4], mut max: [f32; 4]) -> ([f32; 4], [f32; 4]) {
        let y: [f32; 4] = std::array::from_fn(|i| x[i] * scale + bias[i]);
        for (m, &y) in max.iter_mut().zip(&y) {
            if y > *m {
                *m = y;
            }
        }
        (y, max)
    }

    #[inline(always)]
    pub fn exp_sub_add(x: [f32; 4], max: f32, sum: [f32; 4]) -> ([f32; 4], [f32; 4]) {
        let e = x.map(|x| super::exp(x - max));
        (e, std::array::from_fn(|i| sum[i] + e[i]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The residual sum and LayerNorm against burn's LayerNorm on the same sums: rows of 5 (a
    /// tail past the four lanes) and 384, one row far from 0 (where one-pass variance cancels).
    #[test]
    fn add_layer_norm_matches_burns() {
        use burn::nn::LayerNormConfig;
        use burn::tensor::{Tensor, TensorData};
        let device = burn::tensor::Device::flex();
        for d in [5, 384] {
            let rows = 3;
            let x: Vec<f32> = (0..rows * d).map(|i| ((i * 37 % 101) as f32 - 50.0) / 13.0 + if i / d == 2 { 1e3 } else { 0.0 }).collect();
            let res: Vec<f32> = (0..rows * d).map(|i| ((i * 11 % 17) as f32 - 8.0) / 5.0).collect();
            let gamma: Vec<f32> = (0..d).map(|i| 1.0 + i as f32 / d as f32).collect();
            let beta: Vec<f32> = (0..d).map(|i| i as f32 / 7.0 - 0.3).collect();
            let mut ln = LayerNormConfig::new(d).with_epsilon(1e-12).init(&device);
            ln.gamma = burn::module::Param::from_tensor(Tensor::from_data(TensorData::new(gamma.clone(), [d]), &device));
            ln.beta = Some(burn::module::Param::from_tensor(Tensor::from_data(TensorData::new(beta.clone(), [d]), &device)));
            let sum: Vec<f32> = x.iter().zip(&res).map(|(a, b)| a + b).collect();
            let want = ln.forward(Tensor::<2>::from_data(TensorData::new(sum, [rows, d]), &device)).into_data().try_to_vec::<f32>().unwrap();
            let mut got = x.clone();
            add_layer_norm(&mut got, &res, &gamma, &beta, 1e-12);
            let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst < 2e-5, "width {d}: {worst}");
        }
    }

    /// [`exp`] on every value, four lanes at a time as the softmax runs it.
    fn exp_in_place(v: &mut [f32]) {
        let (whole, tail) = v.as_chunks_mut::<4>();
        for x in whole {
            *x = simd::exp(*x);
        }
        for x in tail {
            *x = exp(*x);
        }
    }

    /// erf in f64: its Taylor series up to 2.5, the continued fraction of erfc beyond.
    fn erf64(x: f64) -> f64 {
        let a = x.abs();
        let v = if a <= 2.5 {
            let (mut term, mut sum) = (a, a);
            for n in 1..80 {
                term *= -a * a / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            let mut f = a;
            for k in (1..200).rev() {
                f = a + (k as f64 / 2.0) / f;
            }
            1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / f
        };
        v.copysign(x)
    }

    #[test]
    fn gelu_and_exp_are_within_float32_rounding_of_f64() {
        let xs: Vec<f32> = (-12_000..=12_000).map(|i| i as f32 * 1e-3).collect();
        let mut g = xs.clone();
        gelu_in_place(&mut g);
        // The check of the reference: erf(1) and erfc(3) to 1e-12.
        assert!((erf64(1.0) - 0.842_700_792_949_715).abs() < 1e-12 && (1.0 - erf64(3.0) - 2.209_049_699_858_544e-5).abs() < 1e-12);
        let mut worst = (0f64, 0f32);
        for (x, y) in xs.iter().zip(&g) {
            let x64 = *x as f64;
            let want = 0.5 * x64 * (1.0 + erf64(x64 / 2f64.sqrt()));
            let err = (*y as f64 - want).abs() / want.abs().max(1.0);
            if err > worst.0 {
                worst = (err, *x);
            }
        }
        // The worst case is near x = -5.6, where 1 + erf is ~1e-8: 1.1e-6 there (libm's f32 erf
        // in the same formula: 1.0e-7).
        assert!(worst.0 < 1.5e-6, "gelu: {worst:?}");

        // Down to where e^x leaves the normal floats (its domain is x ≤ 0).
        let xs: Vec<f32> = (-8_733..=0).map(|i| i as f32 * 1e-2).collect();
        let mut e = xs.clone();
        exp_in_place(&mut e);
        let worst = xs.iter().zip(&e).map(|(x, y)| ((*y as f64) / (*x as f64).exp() - 1.0).abs()).fold(0f64, f64::max);
        assert!(worst < 3e-7, "exp: relative {worst:e}");
        let mut edge = [-1e9, -87.4, f32::NAN, 0.0, f32::NEG_INFINITY, -0.0];
        exp_in_place(&mut edge);
        assert_eq!(edge[..2], [0.0, 0.0]);
        assert!(edge[2].is_nan() && edge[3] == 1.0 && edge[4] == 0.0 && edge[5] == 1.0);
    }

    /// [`softmax_numerators`] divided by its sum.
    fn softmax(row: &mut [f32], scale: f32, bias: &[f32]) {
        let sum = softmax_numerators(row, scale, bias);
        row.iter_mut().for_each(|x| *x /= sum);
    }

    #[test]
    fn softmax_sums_to_one_ignores_masked_entries_and_scales_before_the_bias() {
        // 7 values: a chunk of four and a tail of three.
        let mut v = vec![1.0, 2.0, 3.0, -1e9, 0.5, 0.5, 7.0];
        let sum = softmax_numerators(&mut v.clone(), 1.0, &[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1e9]);
        softmax(&mut v, 1.0, &[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1e9]);
        let z = 1f64.exp() + 2f64.exp() + 3f64.exp() + 2.0 * 0.5f64.exp();
        // The numerators are relative to the largest score (3).
        assert!((sum as f64 - z / 3f64.exp()).abs() < 1e-6, "{sum}");
        for (got, want) in v.iter().zip([1f64.exp() / z, 2f64.exp() / z, 3f64.exp() / z, 0.0, 0.5f64.exp() / z, 0.5f64.exp() / z, 0.0]) {
            assert!((*got as f64 - want).abs() < 1e-7, "{got} vs {want}");
        }
        assert_eq!((v[3], v[6]), (0.0, 0.0));
        // A fully masked row is uniform, not NaN; scale applies to the scores, not the bias.
        let mut masked = vec![0.3; 5];
        softmax(&mut masked, 2.0, &[-1e9; 5]);
        assert!(masked.iter().all(|&p| (p - 0.2).abs() < 1e-7), "{masked:?}");
        let mut v = vec![1.0, 0.0];
        softmax(&mut v, 2.0, &[0.0, 1.0]);
        let want = 1.0 / (1.0 + (-1f64).exp());
        assert!((v[0] as f64 - want).abs() < 1e-7, "{v:?}");
        // A NaN score poisons its row.
        let mut v = vec![1.0, f32::NAN, 0.0, 2.0, 3.0];
        softmax(&mut v, 1.0, &[0.0; 5]);
        assert!(v.iter().all(|p| p.is_nan()), "{v:?}");
    }
}
