//! A soft prompt on the host: `rows` (m) vectors of the frozen model's width `width` (d),
//! row-major f32. The one value that flows from the client's generator, over the wire
//! ([`crate::wire::WireSoftPrompt`] is its encoding), into generation and scoring.

use crate::error::{Error, Result};
use burn::tensor::{Device, Tensor, TensorData};

/// `[rows, width]` row-major values; the constructor guarantees `values.len() == rows * width`.
#[derive(Debug, Clone, PartialEq)]
pub struct SoftPrompt {
    values: Vec<f32>,
    rows: usize,
    width: usize,
}

impl SoftPrompt {
    /// A soft prompt from row-major values, refusing a length that is not `rows * width`.
    pub fn new(values: Vec<f32>, rows: usize, width: usize) -> Result<Self> {
        if rows.checked_mul(width) != Some(values.len()) || width == 0 {
            return Err(Error::Input(format!("a soft prompt of {} values is not [{rows}, {width}]", values.len())));
        }
        Ok(Self { values, rows, width })
    }

    /// Read a `[m, d]` or `[1, m, d]` tensor back to the host.
    pub fn from_tensor<const D: usize>(z: Tensor<D>) -> Result<Self> {
        let dims = z.dims();
        let (rows, width) = (dims[D - 2], dims[D - 1]);
        Self::new(crate::device::to_vec(z)?, rows, width)
    }

    /// The same with an asynchronous read (required on WebGPU).
    pub async fn from_tensor_async<const D: usize>(z: Tensor<D>) -> Result<Self> {
        let dims = z.dims();
        let (rows, width) = (dims[D - 2], dims[D - 1]);
        Self::new(crate::device::to_vec_async(z).await?, rows, width)
    }

    /// m: the number of virtual tokens.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// d: the frozen model's hidden size.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Row-major `[rows, width]`.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// The values, without copying.
    pub fn into_values(self) -> Vec<f32> {
        self.values
    }

    /// The flat index of the first NaN or infinity, if any.
    pub fn first_non_finite(&self) -> Option<usize> {
        self.values.iter().position(|v| !v.is_finite())
    }

    /// `[rows, width]` on a device.
    pub fn to_tensor(&self, device: &Device) -> Tensor<2> {
        Tensor::from_data(TensorData::new(self.values.clone(), [self.rows, self.width]), device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_must_match_the_values() {
        assert_eq!(SoftPrompt::new(vec![0.0; 6], 2, 3).unwrap().rows(), 2);
        let e = SoftPrompt::new(vec![0.0; 5], 2, 3).unwrap_err().to_string();
        assert!(e.contains("a soft prompt of 5 values is not [2, 3]"), "{e}");
        assert!(SoftPrompt::new(vec![], 0, 0).is_err());
        assert!(SoftPrompt::new(vec![0.0; 4], usize::MAX, 2).is_err(), "overflow is refused, not wrapped");
        assert_eq!(SoftPrompt::new(vec![1.0, f32::NAN], 1, 2).unwrap().first_non_finite(), Some(1));
    }
}
