//! Dequantization of GGML block formats to f32, following ggml-quants.c. Each function takes the
//! raw bytes of whole blocks; callers check that the byte count matches the element count.

use half::f16;

/// GGML tensor types lopa can read, with their GGUF type ids (ggml's own names).
#[allow(non_camel_case_types, missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4_K,
    Q5_K,
    Q6_K,
}

impl GgmlType {
    /// Map a GGUF type id; `Err` carries a printable name for known-but-unsupported ids.
    pub fn from_id(id: u32) -> Result<Self, String> {
        Ok(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            12 => Self::Q4_K,
            13 => Self::Q5_K,
            14 => Self::Q6_K,
            30 => Self::BF16,
            9 => return Err("Q8_1".into()),
            10 => return Err("Q2_K".into()),
            11 => return Err("Q3_K".into()),
            15 => return Err("Q8_K".into()),
            16..=23 => return Err(format!("IQ type {id}")),
            other => return Err(format!("type id {other}")),
        })
    }
    /// (elements per block, bytes per block).
    pub fn block(self) -> (usize, usize) {
        match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::BF16 => (1, 2),
            Self::Q4_0 => (32, 18),
            Self::Q4_1 => (32, 20),
            Self::Q5_0 => (32, 22),
            Self::Q5_1 => (32, 24),
            Self::Q8_0 => (32, 34),
            Self::Q4_K => (256, 144),
            Self::Q5_K => (256, 176),
            Self::Q6_K => (256, 210),
        }
    }
}

fn h(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantize `bytes` (a whole number of blocks of `ty`) to f32.
pub fn dequantize(ty: GgmlType, bytes: &[u8]) -> Vec<f32> {
    let (qk, bs) = ty.block();
    let mut y = Vec::with_capacity(bytes.len() / bs * qk);
    for b in bytes.chunks_exact(bs) {
        match ty {
            GgmlType::F32 => y.push(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            GgmlType::F16 => y.push(h(b, 0)),
            GgmlType::BF16 => y.push(half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            GgmlType::Q4_0 => {
                let d = h(b, 0);
                let qs = &b[2..18];
                y.extend(qs.iter().map(|q| ((q & 0xF) as i32 - 8) as f32 * d));
                y.extend(qs.iter().map(|q| ((q >> 4) as i32 - 8) as f32 * d));
            }
            GgmlType::Q4_1 => {
                let (d, m) = (h(b, 0), h(b, 2));
                let qs = &b[4..20];
                y.extend(qs.iter().map(|q| (q & 0xF) as f32 * d + m));
                y.extend(qs.iter().map(|q| (q >> 4) as f32 * d + m));
            }
            GgmlType::Q5_0 | GgmlType::Q5_1 => {
                let (d, m, off) = if ty == GgmlType::Q5_0 { (h(b, 0), 0.0, 2) } else { (h(b, 0), h(b, 2), 4) };
                let qh = u32::from_le_bytes(b[off..off + 4].try_into().unwrap());
                let qs = &b[off + 4..off + 20];
                let bias = if ty == GgmlType::Q5_0 { 16 } else { 0 };
                let lo = (0..16).map(|j| {
                    let xh = ((qh >> j) << 4) & 0x10;
                    (((qs[j] & 0xF) as u32 | xh) as i32 - bias) as f32 * d + m
                });
                y.extend(lo);
                let hi = (0..16).map(|j| {
                    let xh = (qh >> (j + 12)) & 0x10;
                    (((qs[j] >> 4) as u32 | xh) as i32 - bias) as f32 * d + m
                });
                y.extend(hi);
            }
            GgmlType::Q8_0 => {
                let d = h(b, 0);
                y.extend(b[2..34].iter().map(|&q| q as i8 as f32 * d));
            }
            GgmlType::Q4_K | GgmlType::Q5_K => {
                let (d, dmin) = (h(b, 0), h(b, 2));
                let scales = &b[4..16];
                let (qh, mut ql) = if ty == GgmlType::Q5_K { (&b[16..48], &b[48..176]) } else { (&b[0..0], &b[16..144]) };
                let (mut u1, mut u2) = (1u8, 2u8);
                for is in (0..8).step_by(2) {
                    let (sc1, m1) = scale_min_k4(is, scales);
                    let (sc2, m2) = scale_min_k4(is + 1, scales);
                    let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
                    let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
                    let hb = |l: usize, u: u8| if !qh.is_empty() && qh[l] & u != 0 { 16.0 } else { 0.0 };
                    y.extend((0..32).map(|l| d1 * ((ql[l] & 0xF) as f32 + hb(l, u1)) - m1));
                    y.extend((0..32).map(|l| d2 * ((ql[l] >> 4) as f32 + hb(l, u2)) - m2));
                    ql = &ql[32..];
                    u1 <<= 2;
                    u2 <<= 2;
                }
            }
            GgmlType::Q6_K => {
                let d = h(b, 208);
                for n in 0..2 {
                    let ql = &b[n * 64..n * 64 + 64];
                    let qh = &b[128 + n * 32..128 + n * 32 + 32];
                    let sc = &b[192 + n * 8..192 + n * 8 + 8];
                    let mut out = [0f32; 128];
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                        let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                        out[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                        out[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                        out[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                        out[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
                    }
                    y.extend_from_slice(&out);
                }
            }
        }
    }
    y
}

fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_and_q4_1_by_hand() {
        // Q8_0: scale 0.5, values -2, 0, 3, ...
        let mut b = f16::from_f32(0.5).to_le_bytes().to_vec();
        b.extend((0..32).map(|i| (i as i8 - 2) as u8));
        let y = dequantize(GgmlType::Q8_0, &b);
        assert_eq!(&y[..3], &[-1.0, -0.5, 0.0]);
        // Q4_1: d=2, m=-1; byte 0x5A gives element 0 = 0xA, element 16 = 0x5.
        let mut b = f16::from_f32(2.0).to_le_bytes().to_vec();
        b.extend(f16::from_f32(-1.0).to_le_bytes());
        b.extend([0x5Au8; 16]);
        let y = dequantize(GgmlType::Q4_1, &b);
        assert_eq!((y[0], y[16]), (19.0, 9.0));
    }
}
