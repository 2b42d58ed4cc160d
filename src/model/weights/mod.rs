//! Checkpoint formats. Every format decodes into a [`TensorMap`]: tensor names in Hugging Face
//! layout mapped to f32 host tensors. Models are built from a `TensorMap`, so a new format only
//! has to produce one.

pub mod gguf;
pub mod quant;
pub mod safetensors;
#[cfg(feature = "server")]
pub mod torch;

use crate::error::{Error, Result};
use burn::tensor::{Device, Tensor, TensorData};
use std::collections::BTreeMap;

/// A dense f32 tensor in host memory, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Dimensions, outermost first (PyTorch order).
    pub shape: Vec<usize>,
    /// Row-major values; `data.len()` is the product of `shape`.
    pub data: Vec<f32>,
}

impl HostTensor {
    /// A tensor from its shape and values; errors when they disagree.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::Input(format!("shape {shape:?} needs {n} values, got {}", data.len())));
        }
        Ok(Self { shape, data })
    }

    /// Copy to a device tensor of rank `D`.
    pub fn to_device<const D: usize>(&self, name: &str, device: &Device) -> Result<Tensor<D>> {
        if self.shape.len() != D {
            return Err(Error::tensor(name, format!("expected rank {D}, found shape {:?}", self.shape)));
        }
        Ok(Tensor::from_data(TensorData::new(self.data.clone(), self.shape.clone()), device))
    }
}

/// A matrix as stored int8: `values` row-major `[rows, cols]`, and `scales` `[rows, cols / group]`
/// (value `q` in column `c` of row `r` stands for `q · scales[r, c / group]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Matrix {
    pub rows: usize,
    pub cols: usize,
    /// Columns that share one scale.
    pub group: usize,
    pub values: Vec<i8>,
    pub scales: Vec<f32>,
}

/// Named host tensors read from a checkpoint, plus the file's string metadata.
#[derive(Debug, Default, Clone)]
pub struct TensorMap {
    tensors: BTreeMap<String, HostTensor>,
    /// The int8 values of tensors the file stored as int8 (their f32 values are in `tensors`), for
    /// layers that compute on int8 directly.
    int8: BTreeMap<String, Int8Matrix>,
}

impl TensorMap {
    /// Device tensors read back to the host under their names. Biases, kept `[1, n]` on the
    /// device, are stored 1-D as PyTorch stores them.
    pub fn from_device(named: Vec<(String, Tensor<2>)>) -> Result<Self> {
        let mut map = TensorMap::new();
        for (name, t) in named {
            map.insert_read(name, t.into_data())?;
        }
        Ok(map)
    }

    /// The same with asynchronous reads (required on WebGPU).
    pub async fn from_device_async(named: Vec<(String, Tensor<2>)>) -> Result<Self> {
        let mut map = TensorMap::new();
        for (name, t) in named {
            let data = t.into_data_async().await.map_err(|e| Error::tensor(&name, format!("{e:?}")))?;
            map.insert_read(name, data)?;
        }
        Ok(map)
    }

    fn insert_read(&mut self, name: String, data: burn::tensor::TensorData) -> Result<()> {
        let shape = data.shape().to_vec();
        let values = data.try_to_vec::<f32>().map_err(|e| Error::tensor(&name, format!("{e:?}")))?;
        let shape = if name.ends_with(".bias") { vec![shape[1]] } else { shape };
        self.insert(name, HostTensor::new(shape, values)?);
        Ok(())
    }

    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }
    /// Insert or replace a tensor.
    pub fn insert(&mut self, name: impl Into<String>, tensor: HostTensor) {
        self.tensors.insert(name.into(), tensor);
    }
    /// Keep the int8 values `name`'s f32 values were dequantized from.
    pub fn insert_int8(&mut self, name: impl Into<String>, m: Int8Matrix) {
        self.int8.insert(name.into(), m);
    }
    /// The int8 values of `name`, when the file stored it as int8.
    pub fn int8(&self, name: &str) -> Option<&Int8Matrix> {
        self.int8.get(name)
    }
    /// The tensor called `name`, if present.
    pub fn get(&self, name: &str) -> Option<&HostTensor> {
        self.tensors.get(name)
    }
    /// Remove and return a tensor.
    pub fn remove(&mut self, name: &str) -> Option<HostTensor> {
        self.int8.remove(name);
        self.tensors.remove(name)
    }
    /// Whether a tensor is present.
    /// A copy of the tensors whose names `keep` accepts.
    pub fn subset(&self, keep: &dyn Fn(&str) -> bool) -> TensorMap {
        let mut m = TensorMap::new();
        for (n, t) in self.tensors.iter().filter(|(n, _)| keep(n)) {
            m.tensors.insert(n.clone(), t.clone());
            if let Some(q) = self.int8.get(n) {
                m.int8.insert(n.clone(), q.clone());
            }
        }
        m
    }
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
    /// Tensor names in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(|s| s.as_str())
    }
    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }
    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Rename every tensor whose name starts with `prefix` by dropping the prefix
    /// (e.g. `bert.` in BertForX checkpoints).
    pub fn strip_prefix(&mut self, prefix: &str) {
        let names: Vec<String> = self.tensors.keys().filter(|k| k.starts_with(prefix)).cloned().collect();
        for n in names {
            let t = self.tensors.remove(&n).expect("listed");
            self.tensors.insert(n[prefix.len()..].to_string(), t);
            if let Some(q) = self.int8.remove(&n) {
                self.int8.insert(n[prefix.len()..].to_string(), q);
            }
        }
    }

    /// The tensor `name` with exactly `shape`, or an error that names it.
    pub fn expect(&self, name: &str, shape: &[usize]) -> Result<&HostTensor> {
        let t = self.tensors.get(name).ok_or_else(|| Error::tensor(name, "missing from checkpoint"))?;
        if t.shape != shape {
            return Err(Error::tensor(name, format!("expected shape {shape:?}, found {:?}", t.shape)));
        }
        if let Some(i) = t.data.iter().position(|x| !x.is_finite()) {
            return Err(Error::tensor(name, format!("non-finite value {} at flat index {i}", t.data[i])));
        }
        Ok(t)
    }

    /// `name` as a device tensor of the given shape.
    pub fn tensor<const D: usize>(&self, name: &str, shape: [usize; D], device: &Device) -> Result<Tensor<D>> {
        self.expect(name, &shape)?.to_device(name, device)
    }

    /// A `torch.nn.Linear` weight (stored `[out, in]`) as a `[in, out]` device tensor, ready for
    /// `x.matmul(w)`.
    pub fn linear_weight(&self, name: &str, d_in: usize, d_out: usize, device: &Device) -> Result<Tensor<2>> {
        let t = self.expect(name, &[d_out, d_in])?;
        Ok(Tensor::<2>::from_data(TensorData::new(transpose(&t.data, d_out, d_in), [d_in, d_out]), device))
    }
}

/// Row-major transpose of a `rows x cols` matrix.
impl TensorMap {
    /// [`TensorMap::tensor`] that moves the values out of the map instead of copying them.
    pub fn take_tensor<const D: usize>(&mut self, name: &str, shape: [usize; D], device: &Device) -> Result<Tensor<D>> {
        self.expect(name, &shape)?;
        let t = self.remove(name).expect("checked");
        Ok(Tensor::from_data(TensorData::new(t.data, t.shape), device))
    }

    /// [`TensorMap::linear_weight`] that drops the stored values before building the tensor.
    pub fn take_linear_weight(&mut self, name: &str, d_in: usize, d_out: usize, device: &Device) -> Result<Tensor<2>> {
        self.expect(name, &[d_out, d_in])?;
        let t = self.remove(name).expect("checked");
        let data = transpose(&t.data, d_out, d_in);
        drop(t);
        Ok(Tensor::<2>::from_data(TensorData::new(data, [d_in, d_out]), device))
    }
}

pub fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

/// Checked product of dimensions: hostile headers must not overflow into a small allocation.
pub(crate) fn checked_numel(name: &str, shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::tensor(name, format!("shape {shape:?} overflows")))
}

/// Lower-case hex sha256 of bytes (model identities in adapters).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
