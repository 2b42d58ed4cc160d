//! The GGUF container (llama.cpp, versions 2 and 3): metadata key/values, tensor infos, aligned
//! tensor data. Every length read from the file is checked against the bytes that remain before it
//! sizes an allocation, so a hostile file gets an error, never a huge allocation or a panic.

use super::quant::{dequantize, GgmlType};
use super::{checked_numel, HostTensor};
use crate::error::{Error, Result};
use std::collections::BTreeMap;

const FORMAT: &str = "gguf";
/// ggml's GGML_MAX_DIMS.
const MAX_DIMS: u32 = 4;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Any unsigned integer type.
    U64(u64),
    /// Any signed integer type.
    I64(i64),
    /// f32 or f64.
    F64(f64),
    /// Boolean.
    Bool(bool),
    /// UTF-8 string.
    Str(String),
    /// Array of values.
    Array(Vec<Value>),
}

impl Value {
    /// As an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U64(v) => Some(v),
            Value::I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }
    /// As a float, if numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F64(v) => Some(v),
            Value::U64(v) => Some(v as f64),
            Value::I64(v) => Some(v as f64),
            _ => None,
        }
    }
    /// As a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    /// As an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One tensor's header entry.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// Name as written by the converter (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions in PyTorch order (outermost first); GGUF stores them innermost first.
    pub shape: Vec<usize>,
    /// Storage type.
    pub ty: GgmlType,
    /// Absolute byte range in the file.
    pub range: std::ops::Range<usize>,
}

/// A parsed GGUF file borrowing its bytes.
#[derive(Debug)]
pub struct Gguf<'a> {
    /// Metadata key/values.
    pub metadata: BTreeMap<String, Value>,
    /// Tensor infos in file order.
    pub tensors: Vec<TensorInfo>,
    bytes: &'a [u8],
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.b.len() - self.pos {
            return Err(Error::format(FORMAT, format!("truncated: {what} at offset {} needs {n} bytes, {} remain", self.pos, self.b.len() - self.pos)));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }
    fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u64(what)?;
        if n > self.remaining() as u64 {
            return Err(Error::format(FORMAT, format!("{what}: string length {n} runs past the end of the file")));
        }
        let s = self.take(n as usize, what)?;
        String::from_utf8(s.to_vec()).map_err(|_| Error::format(FORMAT, format!("{what}: string is not UTF-8")))
    }
    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<Value> {
        Ok(match ty {
            0 => Value::U64(self.take(1, key)?[0] as u64),
            1 => Value::I64(self.take(1, key)?[0] as i8 as i64),
            2 => Value::U64(u16::from_le_bytes(self.take(2, key)?.try_into().unwrap()) as u64),
            3 => Value::I64(i16::from_le_bytes(self.take(2, key)?.try_into().unwrap()) as i64),
            4 => Value::U64(self.u32(key)? as u64),
            5 => Value::I64(self.u32(key)? as i32 as i64),
            6 => Value::F64(f32::from_le_bytes(self.take(4, key)?.try_into().unwrap()) as f64),
            7 => Value::Bool(self.take(1, key)?[0] != 0),
            8 => Value::Str(self.string(key)?),
            9 => {
                if depth > 2 {
                    return Err(Error::format(FORMAT, format!("metadata `{key}`: arrays nested too deeply")));
                }
                let ety = self.u32(key)?;
                let n = self.u64(key)?;
                // Every element takes at least one byte: a count beyond the remaining bytes is a lie.
                if n > self.remaining() as u64 {
                    return Err(Error::format(FORMAT, format!("metadata `{key}`: array length {n} runs past the end of the file")));
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(ety, key, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64(key)?),
            11 => Value::I64(self.u64(key)? as i64),
            12 => Value::F64(f64::from_le_bytes(self.take(8, key)?.try_into().unwrap())),
            other => return Err(Error::format(FORMAT, format!("metadata `{key}`: unknown value type {other}"))),
        })
    }
}

impl<'a> Gguf<'a> {
    /// Parse the header and tensor infos; tensor data is decoded on demand.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let mut c = Cursor { b: bytes, pos: 0 };
        if c.take(4, "magic")? != b"GGUF" {
            return Err(Error::format(FORMAT, "bad magic: not a GGUF file"));
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(Error::format(FORMAT, format!("unsupported version {version} (2 and 3 are supported)")));
        }
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.u64("metadata count")?;
        if n_tensors > c.remaining() as u64 || n_kv > c.remaining() as u64 {
            return Err(Error::format(FORMAT, format!("counts ({n_tensors} tensors, {n_kv} metadata) exceed the file size")));
        }
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string("metadata key")?;
            let ty = c.u32(&key)?;
            let v = c.value(ty, &key, 0)?;
            metadata.insert(key, v);
        }
        let mut infos = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = c.string("tensor name")?;
            let n_dims = c.u32(&name)?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(Error::tensor(&name, format!("{n_dims} dimensions (1 to {MAX_DIMS} allowed)")));
            }
            let mut ne = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                let d = c.u64(&name)?;
                ne.push(usize::try_from(d).map_err(|_| Error::tensor(&name, format!("dimension {d} too large")))?);
            }
            let ty_id = c.u32(&name)?;
            let offset = c.u64(&name)?;
            let ty = GgmlType::from_id(ty_id).map_err(|t| Error::tensor(&name, format!("unsupported quantization {t}")))?;
            let numel = checked_numel(&name, &ne)?;
            let (qk, bs) = ty.block();
            if ne[0] % qk != 0 {
                return Err(Error::tensor(&name, format!("row length {} is not a multiple of the {ty:?} block size {qk}", ne[0])));
            }
            let nbytes = (numel / qk).checked_mul(bs).ok_or_else(|| Error::tensor(&name, "byte size overflows"))?;
            let shape: Vec<usize> = ne.iter().rev().copied().collect();
            infos.push((name, shape, ty, offset, nbytes));
        }
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a <= 1 << 16 && a.is_power_of_two() => a as usize,
                _ => return Err(Error::format(FORMAT, format!("general.alignment {v:?} is not a power of two"))),
            },
        };
        let data_start = c.pos.div_ceil(alignment) * alignment;
        let mut tensors = Vec::with_capacity(infos.len());
        for (name, shape, ty, offset, nbytes) in infos {
            let start = (data_start as u64).checked_add(offset);
            let end = start.and_then(|s| s.checked_add(nbytes as u64));
            match (start, end) {
                (Some(s), Some(e)) if e <= bytes.len() as u64 => {
                    tensors.push(TensorInfo { name, shape, ty, range: s as usize..e as usize })
                }
                _ => {
                    return Err(Error::tensor(&name, format!(
                        "data at offset {offset} ({nbytes} bytes of {ty:?}) runs past the end of the file ({} bytes)",
                        bytes.len()
                    )))
                }
            }
        }
        Ok(Gguf { metadata, tensors, bytes })
    }

    /// Metadata lookup.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// A required unsigned integer.
    pub fn u64(&self, key: &str) -> Result<u64> {
        self.get(key).and_then(Value::as_u64).ok_or_else(|| Error::format(FORMAT, format!("metadata `{key}` missing or not an integer")))
    }

    /// A required float.
    pub fn f64(&self, key: &str) -> Result<f64> {
        self.get(key).and_then(Value::as_f64).ok_or_else(|| Error::format(FORMAT, format!("metadata `{key}` missing or not a number")))
    }

    /// A required string.
    pub fn str(&self, key: &str) -> Result<&str> {
        self.get(key).and_then(Value::as_str).ok_or_else(|| Error::format(FORMAT, format!("metadata `{key}` missing or not a string")))
    }

    /// Dequantize one tensor to f32.
    pub fn tensor(&self, info: &TensorInfo) -> HostTensor {
        HostTensor { shape: info.shape.clone(), data: dequantize(info.ty, &self.bytes[info.range.clone()]) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid file with one F32 tensor `t` of 4 values.
    fn tiny() -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(1u64.to_le_bytes()); // tensors
        b.extend(1u64.to_le_bytes()); // kv
        b.extend(4u64.to_le_bytes());
        b.extend(b"name");
        b.extend(8u32.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        b.extend(b"hi");
        b.extend(1u64.to_le_bytes());
        b.extend(b"t");
        b.extend(1u32.to_le_bytes());
        b.extend(4u64.to_le_bytes());
        b.extend(0u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        while !b.len().is_multiple_of(32) {
            b.push(0);
        }
        for x in [1f32, 2., 3., 4.] {
            b.extend(x.to_le_bytes());
        }
        b
    }

    #[test]
    fn reads_a_minimal_file() {
        let b = tiny();
        let g = Gguf::parse(&b).unwrap();
        assert_eq!(g.str("name").unwrap(), "hi");
        assert_eq!(g.tensor(&g.tensors[0]).data, vec![1., 2., 3., 4.]);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let b = tiny();
        for n in 0..b.len() {
            assert!(Gguf::parse(&b[..n]).is_err(), "prefix of {n} bytes parsed");
        }
    }

    #[test]
    fn hostile_fields_are_named() {
        let mut b = tiny();
        b[0] = b'X';
        assert_eq!(Gguf::parse(&b).unwrap_err().to_string(), "gguf: bad magic: not a GGUF file");
        let mut b = tiny();
        b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Gguf::parse(&b).unwrap_err().to_string().contains("exceed the file size"));
        // String length lie in the metadata key.
        let mut b = tiny();
        b[24..32].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(Gguf::parse(&b).unwrap_err().to_string().contains("string length 1099511627776 runs past the end"));
        // Unknown quantization: type id sits after name(8+1), n_dims(4), dim(8).
        let mut b = tiny();
        let ty_at = 4 + 4 + 8 + 8 + (8 + 4) + 4 + (8 + 2) + (8 + 1) + 4 + 8;
        b[ty_at..ty_at + 4].copy_from_slice(&10u32.to_le_bytes());
        assert_eq!(Gguf::parse(&b).unwrap_err().to_string(), "tensor `t`: unsupported quantization Q2_K");
        // Offset past the end.
        let mut b = tiny();
        b[ty_at + 4..ty_at + 12].copy_from_slice(&1000u64.to_le_bytes());
        assert_eq!(Gguf::parse(&b).unwrap_err().to_string(),
            "tensor `t`: data at offset 1000 (16 bytes of F32) runs past the end of the file (112 bytes)");
    }
}
