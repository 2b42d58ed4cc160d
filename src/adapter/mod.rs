//! A trained adapter on disk: `adapter.safetensors` (the generator's weights, PyTorch layout) and
//! `adapter.json` (method, sizes, task, and the identity and sha256 of the encoder and frozen
//! model it was trained with, so that a mismatch is refused at load). Written atomically.
//! Also exports Z_S as a Hugging Face PEFT prompt-tuning adapter.

pub mod bundle;

use crate::model::decoder::FoundationModel;
use crate::model::encoder::SentenceEncoder;
use crate::error::{Error, Result};
use crate::model::adaptation::AdaptationConfig;
use crate::task::TaskSpec;
use crate::fs::write_dir_atomic;
use crate::model::weights::{safetensors, TensorMap};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Identity of a model an adapter depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelIdentity {
    pub id: String,
    pub sha256: String,
    pub hidden_size: usize,
}

/// `adapter.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterMeta {
    pub format: String,
    pub lopa_version: String,
    /// `"generator": {…}` for a soft-prompt method, `"lora": {…}` for a LoRA.
    #[serde(flatten)]
    pub adaptation: AdaptationConfig,
    pub task: TaskSpec,
    pub foundation_model: ModelIdentity,
    pub encoder: Option<ModelIdentity>,
    #[serde(default)]
    pub encoder_pooling: Option<crate::model::encoder::Pooling>,
    #[serde(default)]
    pub encoder_normalize: bool,
}

impl AdapterMeta {
    /// Metadata for an adapter trained with these models.
    pub fn new(adaptation: &AdaptationConfig, task: &TaskSpec, fm: &FoundationModel, encoder: Option<&SentenceEncoder>) -> Self {
        Self {
            format: "lopa-adapter/1".into(),
            lopa_version: env!("CARGO_PKG_VERSION").into(),
            adaptation: adaptation.clone(),
            task: task.clone(),
            foundation_model: ModelIdentity { id: fm.id.clone(), sha256: fm.sha256.clone(), hidden_size: fm.decoder.hidden_size() },
            encoder: encoder.map(|e| ModelIdentity { id: e.id.clone(), sha256: e.sha256.clone(), hidden_size: e.hidden_size() }),
            encoder_pooling: encoder.map(|e| e.pooling),
            encoder_normalize: encoder.is_some_and(|e| e.normalize),
        }
    }

    /// Refuse models other than the ones the adapter was trained with.
    pub fn check_compatible(&self, fm: &FoundationModel, encoder: Option<&SentenceEncoder>) -> Result<()> {
        check_identity("foundation model", &self.foundation_model, &fm.id, &fm.sha256)?;
        if let (Some(want), Some(e)) = (&self.encoder, encoder) {
            check_identity("encoder", want, &e.id, &e.sha256)?;
        }
        if let (Some(want), None) = (&self.encoder, encoder) {
            if self.adaptation.uses_encoder() {
                return Err(Error::Config(format!("adapter needs the encoder {} (sha256 {})", want.id, short(&want.sha256))));
            }
        }
        Ok(())
    }
}

/// Compare a model against the identity an adapter recorded.
pub fn check_identity(role: &str, want: &ModelIdentity, id: &str, sha256: &str) -> Result<()> {
    if want.sha256 != sha256 {
        return Err(Error::Config(format!(
            "adapter was trained with {role} {} (sha256 {}), not {id} (sha256 {})",
            want.id,
            short(&want.sha256),
            short(sha256)
        )));
    }
    Ok(())
}

fn short(s: &str) -> &str {
    &s[..s.len().min(12)]
}

/// Weights + metadata.
#[derive(Debug, Clone)]
pub struct Adapter {
    pub meta: AdapterMeta,
    pub weights: TensorMap,
}

impl Adapter {
    /// Parse from the two files' bytes (the browser path).
    pub fn from_bytes(meta_json: &[u8], weights: &[u8]) -> Result<Self> {
        let meta: AdapterMeta = serde_json::from_slice(meta_json).map_err(|e| Error::Config(format!("adapter.json: {e}")))?;
        if !meta.format.starts_with("lopa-adapter/") {
            return Err(Error::Config(format!("adapter.json: unknown format `{}`", meta.format)));
        }
        Ok(Self { meta, weights: safetensors::parse(weights)?.tensors })
    }

    /// Load `dir/adapter.json` + `dir/adapter.safetensors`.
    /// A path to a file is read as one-file bundle (what `lopa export-web` and the browser's
    /// `exportAdapter()` write).
    pub fn load(dir: &Path) -> Result<Self> {
        if dir.is_file() {
            return Self::from_bundle(&crate::fs::read_file(dir)?);
        }
        Self::from_bytes(&crate::fs::read_file(dir.join("adapter.json"))?, &crate::fs::read_file(dir.join("adapter.safetensors"))?)
    }

    /// Write to `dir` atomically: a reader sees the old adapter or the new one, never a mix.
    pub fn save(&self, dir: &Path) -> Result<()> {
        write_dir_atomic(dir, &self.files())
    }

    /// The two files' names and bytes (a checkpoint writes them beside its own).
    pub fn files(&self) -> Vec<(String, Vec<u8>)> {
        vec![
            ("adapter.json".to_string(), serde_json::to_vec_pretty(&self.meta).expect("json")),
            ("adapter.safetensors".to_string(), self.safetensors_bytes(safetensors::StoreAs::F32)),
        ]
    }

    /// The weights as safetensors bytes.
    pub fn safetensors_bytes(&self, store_as: safetensors::StoreAs) -> Vec<u8> {
        let mut md = BTreeMap::new();
        md.insert("format".to_string(), "pt".to_string());
        md.insert("lopa_method".to_string(), self.meta.adaptation.kind().name().to_string());
        safetensors::write(self.weights.names().map(|n| (n, self.weights.get(n).expect("listed"))), &md, store_as)
    }

    /// Export Z_S as a PEFT prompt-tuning adapter (`adapter_config.json` +
    /// `adapter_model.safetensors` with `prompt_embeddings`). Only the input-independent part of
    /// a LoPA prompt fits PEFT's format; the instance-dependent gate needs lopa's generator.
    pub fn export_peft(&self, dir: &Path, fm: &FoundationModel) -> Result<()> {
        let zs = self.weights.get("task_prompt").ok_or_else(|| Error::Config("this method has no task prompt Z_S to export".into()))?;
        let cfg = serde_json::json!({
            "peft_type": "PROMPT_TUNING",
            "task_type": "CAUSAL_LM",
            "num_virtual_tokens": zs.shape[0],
            "token_dim": zs.shape[1],
            "num_transformer_submodules": 1,
            "num_attention_heads": fm.config.num_attention_heads,
            "num_layers": fm.config.num_hidden_layers,
            "prompt_tuning_init": "RANDOM",
            "base_model_name_or_path": fm.id,
            "inference_mode": true,
            "revision": null,
            "tokenizer_name_or_path": null
        });
        let w = safetensors::write([("prompt_embeddings", zs)], &BTreeMap::new(), safetensors::StoreAs::F32);
        write_dir_atomic(dir, &[("adapter_config.json".into(), serde_json::to_vec_pretty(&cfg).expect("json")), ("adapter_model.safetensors".into(), w)])
    }
}
