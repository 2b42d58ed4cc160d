//! Elementwise f32 functions the CPU path applies to whole buffers: straight-line code that
//! compiles to SIMD (wasm simd128 included), where a libm call per element does not. The tests
//! check them against f64: exp within 3e-7 relative, GELU within 1.5e-6 absolute.

/// Below this, `exp` is 0 in f32 (and a masked attention score, -1e9, lands here).
const EXP_MIN: f32 = -87.33;
const EXP_MAX: f32 = 88.72;

/// `e^x` for every value: `2^n · p(r)` with `r = x - n·ln 2`, `|r| ≤ ln 2 / 2` (Cephes' expf
/// polynomial). 0 below -87.33, +∞ above 88.72, NaN stays NaN.
pub fn exp_in_place(v: &mut [f32]) {
    for x in v.iter_mut() {
        *x = exp(*x);
    }
}

#[inline(always)]
fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let c = x.clamp(EXP_MIN, EXP_MAX);
    let n = (c * std::f32::consts::LOG2_E).round_ties_even();
    let r = c - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // 2^n as the exponent bits; n is within [-126, 128] after the clamp, and 2^128 is split in two.
    let half = (n * 0.5).round_ties_even();
    let scale = |k: f32| f32::from_bits(((k as i32 + 127) << 23) as u32);
    let e = y * scale(half) * scale(n - half);
    if x < EXP_MIN {
        0.0
    } else if x > EXP_MAX {
        f32::INFINITY
    } else if x.is_nan() {
        x
    } else {
        e
    }
}

/// `x · Φ(x) = x/2 · (1 + erf(x/√2))` for every value: BERT's exact GELU.
pub fn gelu_in_place(v: &mut [f32]) {
    for x in v.iter_mut() {
        *x = 0.5 * *x * (1.0 + erf(*x * std::f32::consts::FRAC_1_SQRT_2));
    }
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

/// Softmax over each row of `width` values, in place. A row of -∞/-1e9 except its largest entry
/// gives that entry 1.
pub fn softmax_rows_in_place(v: &mut [f32], width: usize) {
    for row in v.chunks_exact_mut(width.max(1)) {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
        for x in row.iter_mut() {
            *x -= max;
        }
        exp_in_place(row);
        let sum: f32 = row.iter().sum();
        let inv = 1.0 / sum;
        for x in row.iter_mut() {
            *x *= inv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

        let xs: Vec<f32> = (-8_700..=8_800).map(|i| i as f32 * 1e-2).collect();
        let mut e = xs.clone();
        exp_in_place(&mut e);
        let worst = xs.iter().zip(&e).map(|(x, y)| ((*y as f64) / (*x as f64).exp() - 1.0).abs()).fold(0f64, f64::max);
        assert!(worst < 3e-7, "exp: relative {worst:e}");
        let mut edge = [-1e9, -87.4, 88.8, f32::NAN, 0.0, f32::NEG_INFINITY];
        exp_in_place(&mut edge);
        assert_eq!(edge[..3], [0.0, 0.0, f32::INFINITY]);
        assert!(edge[3].is_nan() && edge[4] == 1.0 && edge[5] == 0.0);
    }

    #[test]
    fn softmax_rows_sum_to_one_and_ignore_masked_entries() {
        let mut v = vec![1.0, 2.0, 3.0, -1e9, 0.5, 0.5, -1e9, -1e9];
        softmax_rows_in_place(&mut v, 4);
        let z = 1f64.exp() + 2f64.exp() + 3f64.exp();
        for (got, want) in v[..3].iter().zip([1f64.exp() / z, 2f64.exp() / z, 3f64.exp() / z]) {
            assert!((*got as f64 - want).abs() < 1e-7, "{got} vs {want}");
        }
        assert_eq!(v[3..], [0.0, 0.5, 0.5, 0.0, 0.0]);
    }
}
