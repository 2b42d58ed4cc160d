//! The safetensors format (<https://github.com/huggingface/safetensors>): an 8-byte little-endian
//! header length, a JSON header mapping names to `{dtype, shape, data_offsets}`, then raw data.
//! Read from bytes (the browser has no filesystem) and written for adapters and exports.
//!
//! Int8 storage ([`StoreAs::Int8`], the browser's default download): each matrix of at least
//! [`INT8_MIN_VALUES`] values is stored as `I8` with the same name and shape, plus a tensor
//! `{name}.int8_scale` of shape `[rows, groups]` (f16): row `r`, columns `g·k .. (g+1)·k` with
//! `k = cols / groups` are `q · scale[r, g]` (symmetric). lopa writes groups of [`INT8_GROUP`]
//! columns (per row when the width is not a multiple): one scale per row alone let the outliers of
//! BERT's feed-forward output rows cost ten times the error. Everything else is stored as f16.
//! [`parse`] dequantizes such pairs to f32; an `I8` tensor without scales is an integer buffer
//! and is skipped like the other integer types.

use super::{checked_numel, HostTensor, Int8Matrix, TensorMap};
use crate::error::{Error, Result};
use half::{bf16, f16};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

const FORMAT: &str = "safetensors";
/// Headers larger than this are refused before any allocation (the reference library uses 100 MB).
pub const MAX_HEADER_BYTES: u64 = 100 * 1024 * 1024;

/// Element type of a stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// 64-bit float.
    F64,
    /// Signed bytes: int8 weights when a `{name}.int8_scale` tensor comes with them.
    I8,
    /// Other integer types are recognised and skipped (e.g. BERT's `position_ids` buffer).
    Int(usize),
}

impl Dtype {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "F32" => Dtype::F32,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            "F64" => Dtype::F64,
            "I64" | "U64" => Dtype::Int(8),
            "I32" | "U32" => Dtype::Int(4),
            "I16" | "U16" => Dtype::Int(2),
            "I8" => Dtype::I8,
            "U8" | "BOOL" => Dtype::Int(1),
            _ => return None,
        })
    }
    fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::F64 => 8,
            Dtype::I8 => 1,
            Dtype::Int(n) => n,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::F64 => "F64",
            Dtype::I8 => "I8",
            Dtype::Int(_) => "INT",
        }
    }
}

/// A parsed safetensors file: float tensors decoded to f32, plus the `__metadata__` strings.
#[derive(Debug, Default)]
pub struct Safetensors {
    /// The float tensors.
    pub tensors: TensorMap,
    /// `__metadata__` entries.
    pub metadata: BTreeMap<String, String>,
}

/// Suffix of the scales of an int8 tensor.
pub const INT8_SCALE: &str = ".int8_scale";
/// Columns that share one int8 scale.
pub const INT8_GROUP: usize = 64;
/// [`StoreAs::Int8`] quantizes matrices with at least this many values; smaller tensors (biases,
/// norms, a task prompt) are a rounding error of the download and stay f16.
pub const INT8_MIN_VALUES: usize = 16384;

/// Parse a safetensors file from memory. Float tensors (F32, F16, BF16, F64) are decoded to f32,
/// int8 tensors with their scales dequantized to f32; other integer tensors are validated and skipped.
pub fn parse(bytes: &[u8]) -> Result<Safetensors> {
    parse_only(bytes, &|_| true)
}

/// [`parse`] decoding only the tensors whose name `keep` accepts (all are still validated).
pub fn parse_only(bytes: &[u8], keep: &dyn Fn(&str) -> bool) -> Result<Safetensors> {
    if bytes.len() < 8 {
        return Err(Error::format(FORMAT, format!("file is {} bytes, shorter than the 8-byte header length", bytes.len())));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    let available = (bytes.len() - 8) as u64;
    if n > MAX_HEADER_BYTES {
        return Err(Error::format(FORMAT, format!("header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit")));
    }
    if n > available {
        return Err(Error::format(FORMAT, format!("header length {n} runs past the end of the file ({available} bytes after the length)")));
    }
    let header = &bytes[8..8 + n as usize];
    let data = &bytes[8 + n as usize..];
    let header: Map<String, Value> = match serde_json::from_slice(header) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(Error::format(FORMAT, "header is not a JSON object")),
        Err(e) => return Err(Error::format(FORMAT, format!("header is not valid JSON: {e}"))),
    };
    let mut out = Safetensors::default();
    // Int8 tensors wait for their scales, which may come later in the header.
    let mut int8: Vec<(String, Vec<usize>, &[u8])> = Vec::new();
    for (name, info) in header {
        if name == "__metadata__" {
            if let Value::Object(m) = info {
                for (k, v) in m {
                    if let Value::String(s) = v {
                        out.metadata.insert(k, s);
                    }
                }
            }
            continue;
        }
        let bad = |p: String| Error::tensor(&name, p);
        let dtype_s = info.get("dtype").and_then(Value::as_str).ok_or_else(|| bad("missing `dtype`".into()))?;
        let dtype = Dtype::parse(dtype_s).ok_or_else(|| bad(format!("unknown dtype `{dtype_s}`")))?;
        let shape: Vec<usize> = info
            .get("shape")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("missing `shape`".into()))?
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("`shape` must be a list of non-negative integers".into()))?;
        let offsets: Vec<u64> = info
            .get("data_offsets")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        let [begin, end] = offsets[..] else {
            return Err(bad("`data_offsets` must be two non-negative integers".into()));
        };
        if begin > end || end > data.len() as u64 {
            return Err(bad(format!("data_offsets [{begin}, {end}] lie outside the {}-byte data section", data.len())));
        }
        let numel = checked_numel(&name, &shape)?;
        let expected = numel.checked_mul(dtype.size()).ok_or_else(|| bad("byte size overflows".into()))?;
        if (end - begin) as usize != expected {
            return Err(bad(format!(
                "shape {shape:?} with dtype {} needs {expected} bytes, data_offsets give {}",
                dtype.name(),
                end - begin
            )));
        }
        // A scale is kept or dropped with its tensor.
        if !keep(name.strip_suffix(INT8_SCALE).unwrap_or(&name)) {
            continue;
        }
        let raw = &data[begin as usize..end as usize];
        if dtype == Dtype::I8 {
            int8.push((name, shape, raw));
            continue;
        }
        let values: Vec<f32> = match dtype {
            Dtype::F32 => raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
            Dtype::F16 => raw.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::BF16 => raw.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::F64 => raw.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
            Dtype::I8 | Dtype::Int(_) => continue,
        };
        out.tensors.insert(name, HostTensor { shape, data: values });
    }
    for (name, shape, raw) in int8 {
        let Some(scale) = out.tensors.remove(&format!("{name}{INT8_SCALE}")) else { continue };
        let rows = shape.first().copied().unwrap_or(0);
        let cols = shape.get(1..).map(|d| d.iter().product::<usize>()).unwrap_or(0);
        let groups = match scale.shape[..] {
            [r] if r == rows => 1,
            [r, g] if r == rows && g > 0 && cols.is_multiple_of(g) => g,
            _ => 0,
        };
        if shape.len() < 2 || rows == 0 || cols == 0 || groups == 0 {
            return Err(Error::tensor(&name, format!("int8 tensor of shape {shape:?} needs scales of shape [rows] or [rows, groups] with groups dividing the row, found {:?}", scale.shape)));
        }
        if let Some(i) = scale.data.iter().position(|s| !s.is_finite() || *s < 0.0) {
            return Err(Error::tensor(&name, format!("int8 scale {} at flat index {i} is not a finite non-negative number", scale.data[i])));
        }
        let k = cols / groups;
        let data = raw.iter().enumerate().map(|(i, q)| *q as i8 as f32 * scale.data[i / k]).collect();
        let values = raw.iter().map(|q| *q as i8).collect();
        out.tensors.insert_int8(name.clone(), Int8Matrix { rows, cols, group: k, values, scales: scale.data });
        out.tensors.insert(name, HostTensor { shape, data });
    }
    if let Some(orphan) = out.tensors.names().find(|n| n.ends_with(INT8_SCALE)) {
        return Err(Error::tensor(orphan, "int8 scales without their int8 tensor"));
    }
    Ok(out)
}

/// Storage type for [`write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum StoreAs {
    /// 32-bit floats.
    F32,
    /// IEEE half (round to nearest).
    F16,
    /// Matrices as int8 with a scale per 64 columns, the rest as f16 (see the module docs).
    Int8,
}

impl StoreAs {
    /// How one tensor is stored: `I8` (with scales) for large matrices under `Int8`.
    fn for_tensor(self, t: &HostTensor) -> StoreAs {
        match self {
            StoreAs::Int8 if t.shape.len() == 2 && t.data.len() >= INT8_MIN_VALUES => StoreAs::Int8,
            StoreAs::Int8 => StoreAs::F16,
            other => other,
        }
    }
}

/// Symmetric int8 in groups of `group` columns (per row when the width is not a multiple):
/// `q = round(x / s)` with `s` the f16 at or above `max|group| / 127`, so `|x - q·s| ≤ s/2`.
/// Returns the values, the scales (`[rows, groups]`, row-major) and the number of groups per row.
pub fn quantize_int8(t: &HostTensor, group: usize) -> (Vec<i8>, Vec<f16>, usize) {
    let cols = t.shape[1..].iter().product::<usize>().max(1);
    let k = if cols.is_multiple_of(group) { group } else { cols };
    let mut q = Vec::with_capacity(t.data.len());
    let scales = t
        .data
        .chunks(k)
        .map(|g| {
            let want = g.iter().fold(0f32, |m, x| m.max(x.abs())) / 127.0;
            // Round the scale up, never down, so no value needs more than ±127.
            let mut s = f16::from_f32(want);
            if s.to_f32() < want {
                s = f16::from_bits(s.to_bits() + 1);
            }
            let sf = s.to_f32();
            q.extend(g.iter().map(|x| if sf > 0.0 { (x / sf).round().clamp(-127.0, 127.0) as i8 } else { 0 }));
            s
        })
        .collect();
    (q, scales, cols / k)
}

/// Serialise tensors (sorted by name, as the reference writer does) with optional metadata.
pub fn write<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a HostTensor)>,
    metadata: &BTreeMap<String, String>,
    store_as: StoreAs,
) -> Vec<u8> {
    let mut items: Vec<(&str, &HostTensor)> = tensors.into_iter().collect();
    items.sort_by(|a, b| a.0.cmp(b.0));
    let mut header = Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::to_value(metadata).expect("strings"));
    }
    let mut data = Vec::new();
    let mut add = |header: &mut Map<String, Value>, name: String, dtype: &str, shape: &[usize], bytes: &mut dyn Iterator<Item = u8>| {
        let begin = data.len();
        data.extend(bytes);
        header.insert(name, serde_json::json!({ "dtype": dtype, "shape": shape, "data_offsets": [begin, data.len()] }));
    };
    for (name, t) in &items {
        match store_as.for_tensor(t) {
            StoreAs::F32 => add(&mut header, name.to_string(), "F32", &t.shape, &mut t.data.iter().flat_map(|x| x.to_le_bytes())),
            StoreAs::F16 => add(&mut header, name.to_string(), "F16", &t.shape, &mut t.data.iter().flat_map(|x| f16::from_f32(*x).to_le_bytes())),
            StoreAs::Int8 => {
                let (q, scales, groups) = quantize_int8(t, INT8_GROUP);
                add(&mut header, name.to_string(), "I8", &t.shape, &mut q.iter().map(|v| *v as u8));
                add(&mut header, format!("{name}{INT8_SCALE}"), "F16", &[t.shape[0], groups], &mut scales.iter().flat_map(|x| x.to_le_bytes()));
            }
        }
    }
    let mut h = serde_json::to_vec(&Value::Object(header)).expect("json");
    // Pad the header to 8 bytes, as the reference writer does, so data stays aligned.
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + h.len() + data.len());
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(&data);
    out
}

/// A required key of a bundle's metadata (`what`: the bundle's kind, for the message).
pub fn metadata_field<'a>(md: &'a BTreeMap<String, String>, what: &str, key: &str) -> crate::Result<&'a str> {
    md.get(key).map(String::as_str).ok_or_else(|| crate::Error::Config(format!("{what} bundle: metadata has no `{key}`")))
}

/// Refuse a file whose metadata `format` is not `want`, saying what it is instead.
pub fn check_format(md: &BTreeMap<String, String>, what: &str, want: &str) -> crate::Result<()> {
    match md.get("format").map(String::as_str) {
        Some(f) if f == want => Ok(()),
        Some(f) => Err(crate::Error::Config(format!("{what} bundle: format `{f}`, expected `{want}` (is this the right file?)"))),
        None => Err(crate::Error::Config(format!("{what} bundle: not a lopa bundle (no `format` in the safetensors metadata; export one with `lopa export-web`)"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one() -> Vec<u8> {
        let t = HostTensor::new(vec![2, 3], vec![1., 2., 3., 4., 5., 6.]).unwrap();
        write([("w", &t)], &BTreeMap::new(), StoreAs::F32)
    }

    #[test]
    fn round_trip_f32_and_f16() {
        let t = HostTensor::new(vec![2, 2], vec![0.5, -1.25, 3.0, 1e-3]).unwrap();
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        let st = parse(&write([("a", &t)], &meta, StoreAs::F32)).unwrap();
        assert_eq!(st.tensors.get("a").unwrap(), &t);
        assert_eq!(st.metadata["format"], "pt");
        let h = parse(&write([("a", &t)], &meta, StoreAs::F16)).unwrap();
        let back = &h.tensors.get("a").unwrap().data;
        assert_eq!(&back[..3], &[0.5, -1.25, 3.0]);
        assert!((back[3] - 1e-3).abs() < 1e-6);
    }

    #[test]
    fn int8_stores_large_matrices_in_groups_within_half_a_step() {
        // A 160 x 128 matrix (int8, two groups a row), a row of zeros in it, an outlier, and a
        // 200 x 100 matrix (one group a row: 100 is not a multiple of 64), and a bias (f16).
        let mut w: Vec<f32> = (0..160 * 128).map(|i| if i / 128 == 7 { 0.0 } else { ((i * 7919 % 1000) as f32 - 500.0) / 300.0 * (1 + i / 128) as f32 }).collect();
        w[3 * 128 + 100] = 1e4;
        let w = HostTensor::new(vec![160, 128], w).unwrap();
        let v = HostTensor::new(vec![200, 100], (0..20000).map(|i| ((i * 31 % 97) as f32 - 48.0) / 7.0).collect()).unwrap();
        let b = HostTensor::new(vec![128], (0..128).map(|i| i as f32 / 100.0).collect()).unwrap();
        let bytes = write([("w", &w), ("v", &v), ("b", &b)], &BTreeMap::new(), StoreAs::Int8);
        assert!(bytes.len() < 160 * 128 + 160 * 2 * 2 + 200 * 100 + 200 * 2 + 128 * 2 + 600, "{} bytes", bytes.len());
        let st = parse(&bytes).unwrap();
        assert_eq!(st.tensors.names().collect::<Vec<_>>(), ["b", "v", "w"], "the scales are folded into their tensor");
        for (t, k) in [(&w, 64), (&v, 100)] {
            let back = &st.tensors.get(if k == 64 { "w" } else { "v" }).unwrap().data;
            for (g, (got, want)) in back.chunks(k).zip(t.data.chunks(k)).enumerate() {
                let step = want.iter().fold(0f32, |m, x| m.max(x.abs())) / 127.0;
                let err = got.iter().zip(want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(err <= step / 2.0 * 1.002, "group {g}: error {err} over half a step {step}");
            }
        }
        let back = &st.tensors.get("w").unwrap().data;
        assert!(back[7 * 128..8 * 128].iter().all(|x| *x == 0.0));
        // The outlier costs only its own group: the row's other half keeps a fine step.
        let first_half = back[3 * 128..3 * 128 + 64].iter().zip(&w.data[3 * 128..3 * 128 + 64]).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(first_half < 0.03, "{first_half} (one scale for the row would allow 1e4 / 254 = 39)");
        let bias = &st.tensors.get("b").unwrap().data;
        assert!(bias.iter().zip(&b.data).all(|(a, b)| *a == f16::from_f32(*b).to_f32()));
        // A filter keeps or drops a tensor with its scales.
        let only_b = parse_only(&bytes, &|n| n == "b").unwrap();
        assert_eq!(only_b.tensors.names().collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn int8_scales_that_do_not_fit_are_errors() {
        let e = |h: &str, n| parse(&with_header(h, n)).unwrap_err().to_string();
        let q = r#""w":{"dtype":"I8","shape":[2,4],"data_offsets":[0,8]}"#;
        let bad = "tensor `w`: int8 tensor of shape [2, 4] needs scales of shape [rows] or [rows, groups] with groups dividing the row, found";
        assert_eq!(e(&format!(r#"{{{q},"w.int8_scale":{{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}}}"#), 24), format!("{bad} [4]"));
        assert_eq!(e(&format!(r#"{{{q},"w.int8_scale":{{"dtype":"F32","shape":[2,3],"data_offsets":[8,32]}}}}"#), 32), format!("{bad} [2, 3]"));
        assert_eq!(e(&format!(r#"{{{q},"w.int8_scale":{{"dtype":"F32","shape":[2,0],"data_offsets":[8,8]}}}}"#), 8), format!("{bad} [2, 0]"));
        let mut neg = with_header(&format!(r#"{{{q},"w.int8_scale":{{"dtype":"F32","shape":[2,2],"data_offsets":[8,24]}}}}"#), 24);
        let at = neg.len() - 4;
        neg[at..].copy_from_slice(&(-1f32).to_le_bytes());
        assert_eq!(parse(&neg).unwrap_err().to_string(), "tensor `w`: int8 scale -1 at flat index 3 is not a finite non-negative number");
        neg[at..].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(parse(&neg).unwrap_err().to_string().contains("int8 scale NaN"));
        assert_eq!(e(r#"{"v.int8_scale":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, 8), "tensor `v.int8_scale`: int8 scales without their int8 tensor");
        // A per-row scale ([rows]) is read too.
        let mut rows = with_header(&format!(r#"{{{q},"w.int8_scale":{{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}}}"#), 16);
        let n = rows.len();
        rows[n - 16..n - 8].copy_from_slice(&[1, 2, 3, 4, 0xff, 0xfe, 0x81, 0x7f]);
        rows[n - 8..n - 4].copy_from_slice(&0.5f32.to_le_bytes());
        rows[n - 4..].copy_from_slice(&2f32.to_le_bytes());
        assert_eq!(parse(&rows).unwrap().tensors.get("w").unwrap().data, [0.5, 1.0, 1.5, 2.0, -2.0, -4.0, -254.0, 254.0]);
        // An int8 buffer without scales is skipped, as before.
        assert!(parse(&with_header(&format!("{{{q}}}"), 8)).unwrap().tensors.is_empty());
    }

    #[test]
    fn hostile_headers_are_errors() {
        let good = one();
        // Truncated before the header length.
        assert_eq!(parse(&good[..5]).unwrap_err().to_string(), "safetensors: file is 5 bytes, shorter than the 8-byte header length");
        // Header length past the end of the file.
        let mut b = good.clone();
        b[..8].copy_from_slice(&(1u64 << 20).to_le_bytes());
        assert!(parse(&b).unwrap_err().to_string().contains("runs past the end of the file"));
        // Absurd header length is refused before allocating.
        b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse(&b).unwrap_err().to_string().contains("exceeds the 104857600-byte limit"));
        // Truncated data section.
        let e = parse(&good[..good.len() - 4]).unwrap_err().to_string();
        assert_eq!(e, "tensor `w`: data_offsets [0, 24] lie outside the 20-byte data section");
    }

    fn with_header(h: &str, data_len: usize) -> Vec<u8> {
        let mut b = (h.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(h.as_bytes());
        b.extend(std::iter::repeat_n(0u8, data_len));
        b
    }

    #[test]
    fn tensor_level_errors_name_the_tensor() {
        let e = |h: &str, n| parse(&with_header(h, n)).unwrap_err().to_string();
        assert_eq!(e(r#"{"x":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}}"#, 16),
            "tensor `x`: shape [2, 2] with dtype F32 needs 16 bytes, data_offsets give 12");
        assert_eq!(e(r#"{"x":{"dtype":"Q9","shape":[1],"data_offsets":[0,4]}}"#, 4), "tensor `x`: unknown dtype `Q9`");
        assert_eq!(e(r#"{"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, 4),
            "tensor `x`: `shape` must be a list of non-negative integers");
        assert_eq!(e(r#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}}"#, 8),
            "tensor `x`: data_offsets [8, 4] lie outside the 8-byte data section");
        assert!(e(r#"{"x":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,4]}}"#, 4)
            .contains("overflows"));
        assert_eq!(e("[1,2]", 0), "safetensors: header is not a JSON object");
        assert!(e("{not json", 0).starts_with("safetensors: header is not valid JSON"));
    }
}
