//! An adapter as one safetensors file for the browser (what `lopa export-web` and the browser's
//! `exportAdapter()` write): the generator's weights, with `adapter.json` in the metadata.

use super::{Adapter, AdapterMeta};
use crate::error::{Error, Result};
use crate::model::weights::safetensors::{self, check_format, metadata_field as field, StoreAs};
use std::collections::BTreeMap;

/// `format` of an adapter bundle.
pub const ADAPTER_FORMAT: &str = "lopa-adapter-bundle/1";

impl Adapter {
    /// The adapter as one safetensors file with `adapter.json` in its metadata.
    pub fn bundle(&self, store_as: StoreAs) -> Vec<u8> {
        let md = BTreeMap::from([
            ("format".to_string(), ADAPTER_FORMAT.to_string()),
            ("adapter".to_string(), serde_json::to_string(&self.meta).expect("json")),
        ]);
        safetensors::write(self.weights.names().map(|n| (n, self.weights.get(n).expect("listed"))), &md, store_as)
    }

    /// Load an adapter bundle (see [`Adapter::bundle`]).
    pub fn from_bundle(bytes: &[u8]) -> Result<Self> {
        let st = safetensors::parse(bytes)?;
        check_format(&st.metadata, "adapter", ADAPTER_FORMAT)?;
        let meta: AdapterMeta = serde_json::from_str(field(&st.metadata, "adapter", "adapter")?).map_err(|e| Error::Config(format!("adapter bundle: adapter.json: {e}")))?;
        Ok(Self { meta, weights: st.tensors })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::encoder::bundle::ENCODER_FORMAT;
    use crate::model::weights::{HostTensor, TensorMap};

    #[test]
    fn plain_safetensors_are_refused_with_a_hint() {
        let mut t = TensorMap::new();
        t.insert("x", HostTensor::new(vec![1], vec![1.0]).unwrap());
        let plain = safetensors::write(t.names().map(|n| (n, t.get(n).unwrap())), &BTreeMap::new(), StoreAs::F32);
        let e = Adapter::from_bundle(&plain).unwrap_err().to_string();
        assert_eq!(e, "config: adapter bundle: not a lopa bundle (no `format` in the safetensors metadata; export one with `lopa export-web`)");
        let md = BTreeMap::from([("format".to_string(), ENCODER_FORMAT.to_string())]);
        let enc = safetensors::write(t.names().map(|n| (n, t.get(n).unwrap())), &md, StoreAs::F32);
        let e = Adapter::from_bundle(&enc).unwrap_err().to_string();
        assert_eq!(e, "config: adapter bundle: format `lopa-encoder/1`, expected `lopa-adapter-bundle/1` (is this the right file?)");
    }
}
