//! The encoder as one safetensors file for the browser (`lopa export-web` stores matrices as int8
//! by default, a quarter of f32; f16 and f32 on request), whose `__metadata__` carries the
//! encoder's `config.json`, pooling and identity. The identity recorded is the original
//! checkpoint's sha256, so an adapter trained against the full-precision encoder is accepted by
//! its int8 or f16 bundle and refused by any other encoder.

use super::{Bert, BertConfig, Pooling, SentenceEncoder};
use crate::error::{Error, Result};
use crate::model::tokenizer::Tokenizer;
use crate::model::weights::safetensors::{self, check_format, metadata_field as field, StoreAs};
use burn::tensor::Device;
use std::collections::BTreeMap;

/// `format` of an encoder bundle.
pub const ENCODER_FORMAT: &str = "lopa-encoder/1";

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::weights::{HostTensor, TensorMap};

    #[test]
    fn a_file_without_the_encoder_metadata_is_refused() {
        let mut t = TensorMap::new();
        t.insert("x", HostTensor::new(vec![1], vec![1.0]).unwrap());
        let md = BTreeMap::from([("format".to_string(), ENCODER_FORMAT.to_string())]);
        let enc = safetensors::write(t.names().map(|n| (n, t.get(n).unwrap())), &md, StoreAs::F32);
        let e = SentenceEncoder::from_bundle(&enc, b"{}", &Device::flex()).unwrap_err().to_string();
        assert_eq!(e, "config: encoder bundle: metadata has no `config`");
    }
}
