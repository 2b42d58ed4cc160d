//! A linear layer that multiplies int8 weights as integers on the CPU: the browser's encoder with
//! int8 weight files. Weights keep the file's int8 values and per-group scales (see
//! [`crate::model::weights::safetensors`]); each input row is quantized to i16 with its own scale
//! (error ≤ max|row| / 65534, far below the weights' own), and products are summed in i32 per
//! group, then scaled and summed in f32.
//!
//! Why i16 activations: wasm SIMD's `i32x4.dot_i16x8_s` does 8 multiply-adds per instruction,
//! twice f32's 4, and 16-bit activations keep the embeddings as close to f32 activations as the
//! int8 weights allow (8-bit activations, as dynamic q8 quantization uses, move them ~9× further).
//!
//! Shapes: weight `[d_out, d_in]` as in the file; input `[rows, d_in]`, output `[rows, d_out]`.
//! The wasm SIMD kernel and the portable one do the same operations in the same order, lane by
//! lane, so they give the same bits: native tests check what the browser computes.

use crate::model::parallel;
use crate::model::weights::Int8Matrix;
use std::mem::MaybeUninit;

/// Output columns per packed panel: `PANEL / 4` `i32x4` accumulators a row.
const PANEL: usize = 8;
/// Input rows per kernel call.
const ROWS: usize = 4;
/// Largest group whose i32 sums cannot overflow: `group · 127 · 32767 < 2^31`.
const MAX_GROUP: usize = 512;

/// Int8 weights packed for the kernel, with the bias.
#[derive(Debug, Clone)]
pub struct Int8Linear {
    d_in: usize,
    d_out: usize,
    /// Pairs of inputs per group.
    group_pairs: usize,
    groups: usize,
    /// Panel `j`, input pair `p`: 16 values, `[w[8j][2p], w[8j][2p+1], w[8j+1][2p], …]`.
    packed: Vec<i16>,
    /// Panel `j`, group `g`: the 8 columns' scales.
    scales: Vec<f32>,
    bias: Vec<f32>,
}

impl Int8Linear {
    /// Pack `w` (`[d_out, d_in]`) with an optional bias of `d_out`. `None` when the groups do not
    /// suit the kernel (odd, or too long for exact i32 sums): the caller keeps f32 weights.
    pub fn new(w: &Int8Matrix, bias: Option<&[f32]>) -> Option<Self> {
        let (d_out, d_in, group) = (w.rows, w.cols, w.group);
        if group == 0 || d_in == 0 || d_out == 0 || !group.is_multiple_of(2) || group > MAX_GROUP || !d_in.is_multiple_of(group) || bias.is_some_and(|b| b.len() != d_out) {
            return None;
        }
        let (pairs, groups, panels) = (d_in / 2, d_in / group, d_out.div_ceil(PANEL));
        let mut packed = vec![0i16; panels * pairs * 2 * PANEL];
        let mut scales = vec![0f32; panels * groups * PANEL];
        for n in 0..d_out {
            let (j, c) = (n / PANEL, n % PANEL);
            let row = &w.values[n * d_in..(n + 1) * d_in];
            for p in 0..pairs {
                let at = (j * pairs + p) * 2 * PANEL + 2 * c;
                packed[at] = row[2 * p] as i16;
                packed[at + 1] = row[2 * p + 1] as i16;
            }
            for g in 0..groups {
                scales[(j * groups + g) * PANEL + c] = w.scales[n * groups + g];
            }
        }
        let bias = bias.map(<[f32]>::to_vec).unwrap_or_else(|| vec![0.0; d_out]);
        Some(Self { d_in, d_out, group_pairs: group / 2, groups, packed, scales, bias })
    }

    /// Input width.
    pub fn d_in(&self) -> usize {
        self.d_in
    }
    /// Output width.
    pub fn d_out(&self) -> usize {
        self.d_out
    }

    /// `x` (`[rows, d_in]`, row-major) → `[rows, d_out]`. A row with a non-finite value gives NaN.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        self.forward_then(x, |_, _| {})
    }

    /// [`Self::forward`], then `then(first_row, band)` on each band of whole output rows as soon as
    /// it is computed (while it is in cache, and in the same piece of work on the pool: an
    /// activation or a residual LayerNorm costs no second pass or wake-up of the pool).
    pub fn forward_then(&self, x: &[f32], then: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
        // `new` refuses empty weights, so neither width is 0.
        let d_in = self.d_in;
        assert_eq!(x.len() % d_in, 0, "input is not a whole number of rows");
        let (rows, d_out, panels) = (x.len() / d_in, self.d_out, self.d_out.div_ceil(PANEL));
        let pieces = parallel::pieces(rows * d_in * d_out);
        let tiles = rows.div_ceil(ROWS);
        let mut out = Vec::with_capacity(rows * d_out);
        let uninit = &mut out.spare_capacity_mut()[..rows * d_out];
        if pieces == 1 || tiles >= pieces {
            // Each piece whole rows (all of them on one thread): quantized, multiplied and passed
            // to `then` in place.
            let per = if pieces == 1 { rows.max(1) } else { tiles.div_ceil(pieces) * ROWS };
            parallel::for_each_piece(uninit, per * d_out, |i, o| {
                let x = &x[i * per * d_in..][..o.len() / d_out * d_in];
                then(i * per, self.block(x, 0..panels, o, d_out));
            });
        } else {
            // Few rows (a short input): each piece a band of columns of every row, copied in after.
            let per = panels.div_ceil(pieces);
            let bands = parallel::map(panels.div_ceil(per), |i| {
                let band = i * per..panels.min((i + 1) * per);
                let width = (band.end * PANEL).min(d_out) - band.start * PANEL;
                let mut o = Vec::with_capacity(rows * width);
                self.block(x, band, &mut o.spare_capacity_mut()[..rows * width], width);
                // SAFETY: `block` wrote all `rows · width` values.
                unsafe { o.set_len(rows * width) };
                o
            });
            for (i, band) in bands.iter().enumerate() {
                let (from, width) = (i * per * PANEL, band.len() / rows);
                for (o, b) in uninit.chunks_exact_mut(d_out).zip(band.chunks_exact(width)) {
                    for (o, &b) in o[from..from + width].iter_mut().zip(b) {
                        o.write(b);
                    }
                }
            }
            // SAFETY: the bands cover every column of every row.
            then(0, unsafe { assume_init(uninit) });
        }
        // SAFETY: every branch above wrote all `rows · d_out` values.
        unsafe { out.set_len(rows * d_out) };
        out
    }

    /// Every row of `x` in the columns of panels `panels`, into `out`: row-major, `width` values a
    /// row, starting at the panels' first column. Returns `out`, every value written. Each tile of
    /// rows is quantized just before it is multiplied, into a buffer that stays in cache.
    fn block<'o>(&self, x: &[f32], panels: std::ops::Range<usize>, out: &'o mut [MaybeUninit<f32>], width: usize) -> &'o mut [f32] {
        let (pairs, col0, rows) = (self.d_in / 2, panels.start * PANEL, x.len() / self.d_in);
        assert!(x.len() == rows * self.d_in && out.len() == rows * width && (panels.end * PANEL).min(self.d_out) - col0 == width, "block shapes");
        let (mut xq, mut sx) = (vec![0i32; ROWS * pairs], [0f32; ROWS]);
        let mut r0 = 0;
        while r0 < rows {
            let n = (rows - r0).min(ROWS);
            // Each row as i16 pairs, with its scale: its largest magnitude over 32767 (NaN if a
            // value is not finite, which makes the row's outputs NaN).
            for (i, (x, q)) in x[r0 * self.d_in..][..n * self.d_in].chunks_exact(self.d_in).zip(xq.chunks_exact_mut(pairs)).enumerate() {
                let amax = row::amax(x);
                row::quantize(x, if amax > 0.0 { 32767.0 / amax } else { 0.0 }, q);
                sx[i] = amax / 32767.0;
            }
            for j in panels.clone() {
                let w = &self.packed[j * pairs * 2 * PANEL..(j + 1) * pairs * 2 * PANEL];
                let s = &self.scales[j * self.groups * PANEL..(j + 1) * self.groups * PANEL];
                let mut acc = [[0f32; PANEL]; ROWS];
                let (x, gp) = (&xq[..], self.group_pairs);
                match n {
                    4 => tile::<4>(x, pairs, w, s, gp, &mut acc),
                    3 => tile::<3>(x, pairs, w, s, gp, &mut acc),
                    2 => tile::<2>(x, pairs, w, s, gp, &mut acc),
                    _ => tile::<1>(x, pairs, w, s, gp, &mut acc),
                }
                let cols = (self.d_out - j * PANEL).min(PANEL);
                for (i, a) in acc.iter().enumerate().take(n) {
                    let o = &mut out[(r0 + i) * width + j * PANEL - col0..][..cols];
                    for c in 0..cols {
                        o[c].write(a[c] * sx[i] + self.bias[j * PANEL + c]);
                    }
                }
            }
            r0 += n;
        }
        // SAFETY: the loops wrote every row (r0 over 0..rows) in every column of the panels
        // (together exactly `width`, the assert above).
        unsafe { assume_init(out) }
    }
}

/// `v` as initialised values.
///
/// # Safety
/// Every element of `v` must have been written.
unsafe fn assume_init(v: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: MaybeUninit<f32> has f32's layout, and the caller vouches for the values.
    unsafe { &mut *(v as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// One input row's scan and quantization: wasm SIMD in the browser's CPU modules, value by value
/// elsewhere, with the same results (a maximum and saturating conversions do not depend on order).
mod row {
    /// The largest magnitude in `x`, NaN if a value is not finite.
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    pub fn amax(x: &[f32]) -> f32 {
        use core::arch::wasm32::*;
        let (whole, tail) = x.as_chunks::<4>();
        let (mut m, mut finite) = (f32x4_splat(0.0), u32x4_splat(u32::MAX));
        for c in whole {
            // SAFETY: [f32; 4] and v128 are 16 bytes, any bits valid for both.
            let a = f32x4_abs(unsafe { core::mem::transmute::<[f32; 4], v128>(*c) });
            finite = v128_and(finite, f32x4_lt(a, f32x4_splat(f32::INFINITY)));
            m = f32x4_pmax(m, a);
        }
        let lanes = [f32x4_extract_lane::<0>(m), f32x4_extract_lane::<1>(m), f32x4_extract_lane::<2>(m), f32x4_extract_lane::<3>(m)];
        if !u32x4_all_true(finite) || !tail.iter().all(|v| v.is_finite()) {
            return f32::NAN;
        }
        lanes.iter().chain(tail).fold(0f32, |m, v| if v.abs() > m { v.abs() } else { m })
    }

    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    pub fn amax(x: &[f32]) -> f32 {
        // Comparisons, not f32::max: that is a libm call in wasm.
        if x.iter().all(|v| v.is_finite()) { x.iter().fold(0f32, |m, v| if v.abs() > m { v.abs() } else { m }) } else { f32::NAN }
    }

    /// `x · inv` rounded to i16 (saturating; NaN is 0), two a pair: `q[p]`'s low half from
    /// `x[2p]`, its high half from `x[2p + 1]` (the i16 values in memory order).
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    pub fn quantize(x: &[f32], inv: f32, q: &mut [i32]) {
        use core::arch::wasm32::*;
        let (whole, tail) = x.as_chunks::<8>();
        let (q_whole, q_tail) = q.as_chunks_mut::<4>();
        let k = f32x4_splat(inv);
        for (c, q) in whole.iter().zip(q_whole) {
            // SAFETY: [f32; 8] is two v128s, [i32; 4] one.
            let [a, b] = unsafe { core::mem::transmute::<[f32; 8], [v128; 2]>(*c) };
            let round = |v: v128| i32x4_trunc_sat_f32x4(f32x4_nearest(f32x4_mul(v, k)));
            *q = unsafe { core::mem::transmute::<v128, [i32; 4]>(i16x8_narrow_i32x4(round(a), round(b))) };
        }
        pairs(tail, inv, q_tail);
    }

    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    pub fn quantize(x: &[f32], inv: f32, q: &mut [i32]) {
        pairs(x, inv, q);
    }

    fn pairs(x: &[f32], inv: f32, q: &mut [i32]) {
        for (q, v) in q.iter_mut().zip(x.chunks_exact(2)) {
            let lo = (v[0] * inv).round_ties_even() as i16 as u16 as u32;
            let hi = (v[1] * inv).round_ties_even() as i16 as u16 as u32;
            *q = (lo | hi << 16) as i32;
        }
    }
}

/// `R` rows of `xq` (`pairs` i32 each) against one panel: `acc[r][c] = Σ_g scale[g][c] · Σ_{p in g} dot`.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn tile<const R: usize>(xq: &[i32], pairs: usize, w: &[i16], s: &[f32], group_pairs: usize, acc: &mut [[f32; PANEL]; ROWS]) {
    use core::arch::wasm32::*;
    const V: usize = PANEL / 4;
    assert!(xq.len() >= R * pairs && w.len() == pairs * 2 * PANEL && s.len() * group_pairs == pairs * PANEL);
    let mut f = [[f32x4_splat(0.0); V]; R];
    let (wp, sp) = (w.as_ptr() as *const v128, s.as_ptr() as *const v128);
    for g in 0..pairs / group_pairs {
        let mut a = [[i32x4_splat(0); V]; R];
        for p in g * group_pairs..(g + 1) * group_pairs {
            // SAFETY: p < pairs, r < R, and the assert above bounds every index (unaligned loads
            // are allowed in wasm).
            let b: [v128; V] = core::array::from_fn(|v| unsafe { v128_load(wp.add(V * p + v)) });
            for (r, ar) in a.iter_mut().enumerate() {
                let x = unsafe { v128_load32_splat(xq.as_ptr().add(r * pairs + p) as *const u32) };
                for v in 0..V {
                    ar[v] = i32x4_add(ar[v], i32x4_dot_i16x8(x, b[v]));
                }
            }
        }
        for v in 0..V {
            // SAFETY: g < groups, and `s` holds V vectors per group.
            let sv = unsafe { v128_load(sp.add(V * g + v)) };
            for r in 0..R {
                f[r][v] = f32x4_add(f[r][v], f32x4_mul(f32x4_convert_i32x4(a[r][v]), sv));
            }
        }
    }
    for (out, fr) in acc.iter_mut().zip(&f) {
        for (v, fv) in fr.iter().enumerate() {
            // SAFETY: an [f32; PANEL] is V v128s.
            unsafe { v128_store(out.as_mut_ptr().add(4 * v) as *mut v128, *fv) };
        }
    }
}

/// The same, lane by lane.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn tile<const R: usize>(xq: &[i32], pairs: usize, w: &[i16], s: &[f32], group_pairs: usize, acc: &mut [[f32; PANEL]; ROWS]) {
    for g in 0..pairs / group_pairs {
        let mut a = [[0i32; PANEL]; R];
        for p in g * group_pairs..(g + 1) * group_pairs {
            let b = &w[p * 2 * PANEL..(p + 1) * 2 * PANEL];
            for (r, ar) in a.iter_mut().enumerate() {
                let x = xq[r * pairs + p];
                let (lo, hi) = (x as i16 as i32, (x >> 16) as i16 as i32);
                for (c, v) in ar.iter_mut().enumerate() {
                    *v = v.wrapping_add(lo * b[2 * c] as i32 + hi * b[2 * c + 1] as i32);
                }
            }
        }
        for (r, ar) in a.iter().enumerate() {
            for c in 0..PANEL {
                acc[r][c] += ar[c] as f32 * s[g * PANEL + c];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: usize, cols: usize, group: usize, seed: u32) -> Int8Matrix {
        let mut state = seed;
        let mut next = || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            state >> 8
        };
        let values = (0..rows * cols).map(|_| (next() % 255) as i32 - 127).map(|v| v as i8).collect();
        let scales = (0..rows * cols / group).map(|_| (next() % 1000) as f32 / 1e5).collect();
        Int8Matrix { rows, cols, group, values, scales }
    }

    /// f64 reference on the dequantized weights and the unquantized input.
    fn reference(w: &Int8Matrix, bias: &[f32], x: &[f32]) -> Vec<f64> {
        let rows = x.len() / w.cols;
        let mut out = vec![0f64; rows * w.rows];
        for r in 0..rows {
            for n in 0..w.rows {
                let mut acc = bias[n] as f64;
                for k in 0..w.cols {
                    acc += x[r * w.cols + k] as f64 * w.values[n * w.cols + k] as f64 * w.scales[n * (w.cols / w.group) + k / w.group] as f64;
                }
                out[r * w.rows + n] = acc;
            }
        }
        out
    }

    #[test]
    fn int8_linear_matches_dequantized_f64_within_the_activation_step() {
        // 13 outputs (a partial panel), 7 rows (a tile of 4 and one of 3), groups of 64 and a
        // single group a row; an input row with an outlier, a zero row.
        for (d_out, d_in, group) in [(13, 192, 64), (8, 40, 40), (16, 128, 2)] {
            let w = matrix(d_out, d_in, group, 7);
            let bias: Vec<f32> = (0..d_out).map(|i| i as f32 * 0.01 - 0.05).collect();
            let mut x: Vec<f32> = (0..7 * d_in).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect();
            x[d_in + 3] = 40.0;
            x[2 * d_in..3 * d_in].fill(0.0);
            let lin = Int8Linear::new(&w, Some(&bias)).expect("packs");
            let got = lin.forward(&x);
            let want = reference(&w, &bias, &x);
            for r in 0..7 {
                let amax = x[r * d_in..(r + 1) * d_in].iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
                // Each input moves at most half a step (amax / 65534); the weights' L1 bounds the sum.
                let l1: f64 = (0..d_out).map(|n| (0..d_in).map(|k| (w.values[n * d_in + k] as f64 * w.scales[n * (d_in / group) + k / group] as f64).abs()).sum::<f64>()).fold(0.0, f64::max);
                let tol = amax / 65534.0 * l1 + 1e-5;
                for n in 0..d_out {
                    let (g, e) = (got[r * d_out + n] as f64, want[r * d_out + n]);
                    assert!((g - e).abs() <= tol, "{d_out}x{d_in}/{group} row {r} col {n}: {g} vs {e} (tol {tol})");
                }
            }
            // The zero row is exactly the bias.
            assert_eq!(&got[2 * d_out..3 * d_out], &bias[..]);
        }
    }

    #[test]
    fn int8_linear_refuses_groups_it_cannot_sum_exactly_and_poisons_non_finite_rows() {
        assert!(Int8Linear::new(&matrix(4, 30, 15, 1), None).is_none(), "odd groups");
        assert!(Int8Linear::new(&matrix(4, 1024, 1024, 1), None).is_none(), "i32 sums could overflow");
        assert!(Int8Linear::new(&matrix(4, 64, 64, 1), Some(&[0.0; 3])).is_none(), "bias of the wrong width");
        // The extreme values everywhere: the i32 sums of a 512 group stay exact.
        let mut w = matrix(8, 512, 512, 3);
        w.values.fill(-127);
        w.scales.fill(1.0);
        let lin = Int8Linear::new(&w, None).unwrap();
        let out = lin.forward(&vec![-1.0; 512]);
        assert!(out.iter().all(|&v| (v - 127.0 * 512.0).abs() < 1e-2), "{:?}", &out[..2]);
        let mut x = vec![1.0; 2 * 512];
        x[700] = f32::NAN;
        let out = lin.forward(&x);
        assert!(out[..8].iter().all(|v| (v + 127.0 * 512.0).abs() < 1e-2) && out[8..].iter().all(|v| v.is_nan()), "{out:?}");
    }

    /// The pool splits by rows (many rows) or by column bands (few): every split gives the bits of
    /// one thread, and a pool of one runs the plain loop.
    #[cfg(feature = "parallel")]
    #[test]
    fn int8_linear_gives_the_same_bits_on_any_pool() {
        let (d_out, d_in, group) = (203, 384, 64);
        let lin = Int8Linear::new(&matrix(d_out, d_in, group, 11), Some(&vec![0.25; d_out])).unwrap();
        for rows in [1, 3, 9, 64, 131] {
            let x: Vec<f32> = (0..rows * d_in).map(|i| ((i * 53 % 197) as f32 - 98.0) / 31.0).collect();
            let on = |threads: usize| rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| (crate::model::parallel::pieces(rows * d_in * d_out), lin.forward(&x)));
            let (one_piece, one) = on(1);
            assert_eq!(one_piece, 1);
            for threads in [2, 3, 4] {
                let (pieces, got) = on(threads);
                // One row is too little work to split.
                assert_eq!(pieces > 1, rows > 1, "{rows} rows on {threads} threads: {pieces} pieces");
                assert!(got.iter().zip(&one).all(|(a, b)| a.to_bits() == b.to_bits()), "{rows} rows on {threads} threads differ from one thread");
                // `then` runs once on every output value, whichever way the work was split.
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                // It is told each band's first row: adding the row's index marks where it ran.
                let then = pool.install(|| lin.forward_then(&x, |r0, o| o.chunks_exact_mut(d_out).enumerate().for_each(|(r, o)| o.iter_mut().for_each(|v| *v = *v * 2.0 + (r0 + r) as f32))));
                let want = |i: usize| one[i] * 2.0 + (i / d_out) as f32;
                assert!(then.iter().enumerate().all(|(i, a)| a.to_bits() == want(i).to_bits()), "{rows} rows on {threads} threads: then");
            }
        }
    }
}
