//! `lopa export-hf`: a frozen model (GGUF or Hugging Face folder) written as a Hugging Face folder
//! that other serving engines load, so that they serve exactly the weights lopa runs: f32 tensors
//! (GGUF blocks dequantized, llama Q/K rows un-permuted), `config.json`, `generation_config.json`
//! with the stop tokens, `tokenizer.json` and `tokenizer_config.json`.

use crate::model::decoder::FoundationModel;
use crate::error::{Error, Result};
use crate::model::weights::safetensors::{self, StoreAs};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;

/// Write `model` (a `.gguf` file or HF folder) as a Hugging Face folder in `out`.
pub fn export_hf(model: &Path, out: &Path) -> Result<()> {
    let (cfg, tensors, tok) = FoundationModel::read_hf_tensors(model)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let token = |id: Option<u32>| id.and_then(|i| tok.id_to_token(i));
    let eos = tok.eos_token_ids.clone();
    let mut config = cfg.to_hf_json()?;
    config["bos_token_id"] = json!(tok.bos_token_id);
    config["eos_token_id"] = json!(eos.first());
    let generation = json!({"bos_token_id": tok.bos_token_id, "eos_token_id": eos});
    let tokenizer_config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token(tok.bos_token_id),
        "eos_token": token(eos.first().copied()),
        "add_bos_token": tok.add_bos,
        "clean_up_tokenization_spaces": false,
        "model_max_length": cfg.max_position_embeddings,
    });
    let write = |name: &str, bytes: &[u8]| std::fs::write(out.join(name), bytes).map_err(|e| Error::io(out.join(name), e));
    let pretty = |v: &serde_json::Value| serde_json::to_vec_pretty(v).expect("json");
    let items: Vec<(&str, &crate::model::weights::HostTensor)> = tensors.names().map(|n| (n, tensors.get(n).expect("listed"))).collect();
    let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    write("model.safetensors", &safetensors::write(items, &metadata, StoreAs::F32))?;
    write("config.json", &pretty(&config))?;
    write("generation_config.json", &pretty(&generation))?;
    write("tokenizer_config.json", &pretty(&tokenizer_config))?;
    write("tokenizer.json", tok.to_json()?.as_bytes())
}
