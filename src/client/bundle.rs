//! Single-file weight bundles for the browser: the encoder and the adapter each travel as one
//! safetensors file (`lopa export-web` stores matrices as int8 by default, a quarter of f32; f16
//! and f32 on request) whose `__metadata__` carries what the loader needs (the encoder's
//! `config.json`, pooling and identity; the adapter's `adapter.json`). The identity recorded is
//! the original checkpoint's sha256, so an adapter trained against the full-precision encoder is
//! accepted by its int8 or f16 bundle and refused by any other encoder.

use crate::adapter::{Adapter, AdapterMeta};
use crate::model::encoder::{Bert, BertConfig, Pooling, SentenceEncoder};
use crate::error::{Error, Result};
use crate::model::tokenizer::Tokenizer;
use crate::model::weights::safetensors::{self, StoreAs};
use burn::tensor::Device;
use std::collections::BTreeMap;

/// `format` of an encoder bundle.
pub const ENCODER_FORMAT: &str = "lopa-encoder/1";
/// `format` of an adapter bundle.
pub const ADAPTER_FORMAT: &str = "lopa-adapter-bundle/1";

fn field<'a>(md: &'a BTreeMap<String, String>, what: &str, key: &str) -> Result<&'a str> {
    md.get(key).map(String::as_str).ok_or_else(|| Error::Config(format!("{what} bundle: metadata has no `{key}`")))
}

fn check_format(md: &BTreeMap<String, String>, what: &str, want: &str) -> Result<()> {
    match md.get("format").map(String::as_str) {
        Some(f) if f == want => Ok(()),
        Some(f) => Err(Error::Config(format!("{what} bundle: format `{f}`, expected `{want}` (is this the right file?)"))),
        None => Err(Error::Config(format!("{what} bundle: not a lopa bundle (no `format` in the safetensors metadata; export one with `lopa export-web`)"))),
    }
}

/// The encoder's weights as one safetensors file. The pooler is dropped unless pooling uses it.
pub fn encoder_bundle(encoder: &SentenceEncoder, weights: &[u8], store_as: StoreAs) -> Result<Vec<u8>> {
    let mut tensors = safetensors::parse(weights)?.tensors;
    tensors.strip_prefix("bert.");
    if encoder.pooling != Pooling::Pooler {
        tensors.remove("pooler.dense.weight");
        tensors.remove("pooler.dense.bias");
    }
    let md = BTreeMap::from([
        ("format".to_string(), ENCODER_FORMAT.to_string()),
        ("config".to_string(), serde_json::to_string(&encoder.config).expect("json")),
        ("pooling".to_string(), serde_json::to_value(encoder.pooling).expect("json").as_str().expect("string").to_string()),
        ("normalize".to_string(), encoder.normalize.to_string()),
        ("id".to_string(), encoder.id.clone()),
        ("sha256".to_string(), encoder.sha256.clone()),
    ]);
    Ok(safetensors::write(tensors.names().map(|n| (n, tensors.get(n).expect("listed"))), &md, store_as))
}

impl SentenceEncoder {
    /// Load an encoder bundle (see [`encoder_bundle`]) and its `tokenizer.json`.
    pub fn from_bundle(bundle: &[u8], tokenizer: &[u8], device: &Device) -> Result<Self> {
        let st = safetensors::parse(bundle)?;
        let md = &st.metadata;
        check_format(md, "encoder", ENCODER_FORMAT)?;
        let config = BertConfig::from_json(field(md, "encoder", "config")?.as_bytes())?;
        let pooling: Pooling = serde_json::from_value(serde_json::Value::String(field(md, "encoder", "pooling")?.into()))
            .map_err(|e| Error::Config(format!("encoder bundle: pooling: {e}")))?;
        let normalize = field(md, "encoder", "normalize")? == "true";
        let bert = Bert::from_tensors(&config, st.tensors, device)?;
        let tokenizer = Tokenizer::from_json_bytes(tokenizer, config.max_position_embeddings)?;
        Ok(Self { bert, tokenizer, pooling, normalize, id: field(md, "encoder", "id")?.into(), sha256: field(md, "encoder", "sha256")?.into(), config })
    }
}

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
        let e = SentenceEncoder::from_bundle(&enc, b"{}", &Device::flex()).unwrap_err().to_string();
        assert_eq!(e, "config: encoder bundle: metadata has no `config`");
    }
}
