//! The safetensors format (<https://github.com/huggingface/safetensors>): an 8-byte little-endian
//! header length, a JSON header mapping names to `{dtype, shape, data_offsets}`, then raw data.
//! Read from bytes (the browser has no filesystem) and written for adapters and exports.

use super::{checked_numel, HostTensor, TensorMap};
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
    /// Integer types are recognised and skipped (e.g. BERT's `position_ids` buffer).
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
            "I8" | "U8" | "BOOL" => Dtype::Int(1),
            _ => return None,
        })
    }
    fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::F64 => 8,
            Dtype::Int(n) => n,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::F64 => "F64",
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

/// Parse a safetensors file from memory. Float tensors (F32, F16, BF16, F64) are decoded to f32;
/// integer tensors are validated and skipped.
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
        if !keep(&name) {
            continue;
        }
        let raw = &data[begin as usize..end as usize];
        let values: Vec<f32> = match dtype {
            Dtype::F32 => raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
            Dtype::F16 => raw.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::BF16 => raw.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::F64 => raw.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
            Dtype::Int(_) => continue,
        };
        out.tensors.insert(name, HostTensor { shape, data: values });
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
    for (name, t) in &items {
        let begin = data.len();
        match store_as {
            StoreAs::F32 => t.data.iter().for_each(|x| data.extend_from_slice(&x.to_le_bytes())),
            StoreAs::F16 => t.data.iter().for_each(|x| data.extend_from_slice(&f16::from_f32(*x).to_le_bytes())),
        }
        let dtype = if store_as == StoreAs::F32 { "F32" } else { "F16" };
        header.insert(
            name.to_string(),
            serde_json::json!({ "dtype": dtype, "shape": t.shape, "data_offsets": [begin, data.len()] }),
        );
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
