//! Reading a decoder checkpoint: a GGUF file (renamed to Hugging Face names, llama Q/K rows
//! un-permuted, so one RoPE serves both formats) or a Hugging Face folder (one safetensors file
//! or shards), with its tokenizer and the sha256 that identifies it.

use super::config::{Activation, DecoderConfig, LayerType, ModelType};
use super::rope::RopeScaling;
use super::{Decoder, Precision};
use std::borrow::Cow;
use crate::error::{Error, Result};
use crate::model::tokenizer::Tokenizer;
use crate::model::weights::gguf::Gguf;
use crate::model::weights::{safetensors, TensorMap};
use burn::tensor::Device;

/// A decoder with its tokenizer and config: what `lopa serve` and training hold.
#[derive(Debug, Clone)]
pub struct FoundationModel {
    pub decoder: Decoder,
    pub tokenizer: Tokenizer,
    pub config: DecoderConfig,
    /// Identity for adapter compatibility checks: file name and sha256 of the weights.
    pub id: String,
    pub sha256: String,
}

/// GGUF → Hugging Face tensor names and config. Llama Q/K rows are un-permuted.
pub fn gguf_to_hf(g: &Gguf) -> Result<(DecoderConfig, TensorMap)> {
    gguf_to_hf_only(g, &|_| true)
}

/// [`gguf_to_hf`] for the tensors whose Hugging Face name `keep` accepts (the others are never
/// dequantized). Metadata that changes the arithmetic and that lopa does not implement is
/// refused, as in `config.json`.
pub fn gguf_to_hf_only(g: &Gguf, keep: &dyn Fn(&str) -> bool) -> Result<(DecoderConfig, TensorMap)> {
    let arch = g.str("general.architecture")?.to_string();
    let model_type = match arch.as_str() {
        "llama" => ModelType::Llama,
        "qwen2" => ModelType::Qwen2,
        "qwen3" => ModelType::Qwen3,
        "gemma3" => ModelType::Gemma3,
        other => return Err(Error::Config(format!("GGUF architecture `{other}` is not supported (llama, qwen2, qwen3, gemma3)"))),
    };
    let k = |s: &str| format!("{arch}.{s}");
    let refuse = |key: String, v: &dyn std::fmt::Debug, why: &str| Err(Error::Config(format!("GGUF `{key}` = {v:?} is not supported: {why}")));
    for key in ["attn_logit_softcapping", "final_logit_softcapping"] {
        if let Some(v) = g.get(&k(key)).and_then(|v| v.as_f64()).filter(|v| *v != 0.0) {
            return refuse(k(key), &v, "logit soft-capping is not implemented");
        }
    }
    if let Some(v) = g.get(&k("expert_count")).and_then(|v| v.as_u64()).filter(|v| *v > 0) {
        return refuse(k("expert_count"), &v, "mixture-of-experts layers are not implemented");
    }
    let n_head = g.u64(&k("attention.head_count"))? as usize;
    let n_kv = g.get(&k("attention.head_count_kv")).and_then(|v| v.as_u64()).map(|v| v as usize).unwrap_or(n_head);
    let d = g.u64(&k("embedding_length"))? as usize;
    let vocab = match g.get(&k("vocab_size")).and_then(|v| v.as_u64()) {
        Some(v) => v as usize,
        None => g.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()).map(|a| a.len()).ok_or_else(|| Error::Config("GGUF has no vocabulary size".into()))?,
    };
    let head_dim = g.get(&k("attention.key_length")).and_then(|v| v.as_u64()).map(|v| v as usize);
    let hd = head_dim.unwrap_or(d / n_head.max(1));
    if let Some(v) = g.get(&k("rope.dimension_count")).and_then(|v| v.as_u64()).filter(|v| *v as usize != hd) {
        return refuse(k("rope.dimension_count"), &v, "RoPE on part of each head is not implemented");
    }
    let scaling_type = g.get(&k("rope.scaling.type")).and_then(|v| v.as_str()).unwrap_or("none");
    let mut rope_scaling = match scaling_type {
        "none" => None,
        "linear" => Some(RopeScaling::Linear { factor: g.f64(&k("rope.scaling.factor"))? }),
        other => return refuse(k("rope.scaling.type"), &other, "lopa implements none and linear (and llama3 as rope_freqs.weight)"),
    };
    if let Some(info) = g.tensors.iter().find(|t| t.name == "rope_freqs.weight") {
        if rope_scaling.is_some() {
            return Err(Error::Config("GGUF has both rope.scaling.type and rope_freqs.weight".into()));
        }
        rope_scaling = Some(RopeScaling::FreqFactors(g.tensor(info).data.iter().map(|&x| x as f64).collect()));
    }
    let n_layers = g.u64(&k("block_count"))? as usize;
    let window = g.get(&k("attention.sliding_window")).and_then(|v| v.as_u64()).map(|v| v as usize);
    let gemma = model_type == ModelType::Gemma3;
    let layer_types = match window {
        // llama.cpp runs gemma3 with every sixth layer global, the rest on the window.
        Some(_) if gemma => (0..n_layers).map(|i| if (i + 1) % 6 == 0 { LayerType::FullAttention } else { LayerType::SlidingAttention }).collect(),
        Some(w) => return refuse(k("attention.sliding_window"), &w, "a sliding window is implemented for gemma3 here"),
        None => vec![LayerType::FullAttention; n_layers],
    };
    let has_output = g.tensors.iter().any(|t| t.name == "output.weight");
    let cfg = DecoderConfig {
        model_type,
        vocab_size: vocab,
        hidden_size: d,
        intermediate_size: g.u64(&k("feed_forward_length"))? as usize,
        num_hidden_layers: n_layers,
        num_attention_heads: n_head,
        num_key_value_heads: Some(n_kv),
        head_dim,
        rms_norm_eps: g.f64(&k("attention.layer_norm_rms_epsilon"))?,
        rope_theta: g.get(&k("rope.freq_base")).and_then(|v| v.as_f64()).unwrap_or(if gemma { 1_000_000.0 } else { 10000.0 }),
        rope_scaling,
        // llama.cpp's base for gemma3's sliding layers.
        rope_local_base_freq: gemma.then_some(10_000.0),
        max_position_embeddings: g.get(&k("context_length")).and_then(|v| v.as_u64()).unwrap_or(2048) as usize,
        tie_word_embeddings: !has_output,
        attention_bias: Some(g.tensors.iter().any(|t| t.name.ends_with("attn_q.bias"))),
        sliding_window: window.filter(|_| gemma),
        layer_types,
        // llama.cpp scales gemma3's scores by head_dim^-1/2 (27B aside, which it special-cases).
        query_pre_attn_scalar: gemma.then_some(hd as f64),
        hidden_act: if gemma { Activation::GeluTanh } else { Activation::Silu },
    };
    cfg.validate()?;
    let mut map = TensorMap::new();
    for info in &g.tensors {
        let Some(name) = hf_name(&info.name, model_type).filter(|n| keep(n)) else { continue };
        let mut t = g.tensor(info);
        if model_type == ModelType::Llama && (name.ends_with("q_proj.weight") || name.ends_with("k_proj.weight")) {
            let heads = if name.ends_with("q_proj.weight") { n_head } else { n_kv };
            if t.shape.len() != 2 || t.shape[0] != heads * hd {
                return Err(Error::tensor(&info.name, format!("expected {} rows ({heads} heads x {hd}), found shape {:?}", heads * hd, t.shape)));
            }
            t.data = unpermute_rows(&t.data, heads, hd, t.shape[1]);
        }
        // llama.cpp stores Gemma's norms as 1 + w; Hugging Face stores w.
        if gemma && name.ends_with("norm.weight") {
            t.data.iter_mut().for_each(|x| *x -= 1.0);
        }
        map.insert(name, t);
    }
    Ok((cfg, map))
}

/// Undo llama.cpp's convert permutation: GGUF row `h·hd + 2j + s` holds HF row `h·hd + s·hd/2 + j`.
fn unpermute_rows(data: &[f32], heads: usize, hd: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; data.len()];
    let half = hd / 2;
    for h in 0..heads {
        for j in 0..half {
            for s in 0..2 {
                let src = (h * hd + 2 * j + s) * cols;
                let dst = (h * hd + s * half + j) * cols;
                out[dst..dst + cols].copy_from_slice(&data[src..src + cols]);
            }
        }
    }
    out
}

fn hf_name(gguf: &str, model_type: ModelType) -> Option<String> {
    Some(match gguf {
        "token_embd.weight" => "model.embed_tokens.weight".into(),
        "output_norm.weight" => "model.norm.weight".into(),
        "output.weight" => "lm_head.weight".into(),
        _ => {
            let rest = gguf.strip_prefix("blk.")?;
            let (i, rest) = rest.split_once('.')?;
            let (part, kind) = rest.rsplit_once('.')?;
            let hf = match part {
                "attn_norm" => "input_layernorm",
                // Gemma's four norms: ffn_norm is the MLP's input norm in both layouts.
                "ffn_norm" if model_type == ModelType::Gemma3 => "pre_feedforward_layernorm",
                "ffn_norm" => "post_attention_layernorm",
                "post_attention_norm" => "post_attention_layernorm",
                "post_ffw_norm" => "post_feedforward_layernorm",
                "attn_q_norm" => "self_attn.q_norm",
                "attn_k_norm" => "self_attn.k_norm",
                "attn_q" => "self_attn.q_proj",
                "attn_k" => "self_attn.k_proj",
                "attn_v" => "self_attn.v_proj",
                "attn_output" => "self_attn.o_proj",
                "ffn_gate" => "mlp.gate_proj",
                "ffn_up" => "mlp.up_proj",
                "ffn_down" => "mlp.down_proj",
                _ => return None,
            };
            format!("model.layers.{i}.{hf}.{kind}")
        }
    })
}

/// A checkpoint read from disk or memory: config, tokenizer, identity, and its file bytes, from
/// which tensors are dequantized on request (a few at a time, so that a model loads into half
/// precision without a full f32 copy).
struct Checkpoint<'a> {
    config: DecoderConfig,
    tokenizer: Tokenizer,
    id: String,
    sha256: String,
    source: Source<'a>,
}

enum Source<'a> {
    Gguf(Cow<'a, [u8]>),
    /// One or more safetensors shards.
    Safetensors(Vec<Cow<'a, [u8]>>),
}

/// The Hugging Face name of the token-embedding table.
pub const EMBED_TOKENS: &str = "model.embed_tokens.weight";

impl<'a> Checkpoint<'a> {
    fn from_gguf_bytes(bytes: Cow<'a, [u8]>, id: &str) -> Result<Self> {
        let g = Gguf::parse(&bytes)?;
        let (config, _) = gguf_to_hf_only(&g, &|_| false)?;
        let tokenizer = Tokenizer::from_gguf(&g)?;
        let sha256 = crate::model::weights::sha256_hex(&bytes);
        Ok(Self { config, tokenizer, id: id.to_string(), sha256, source: Source::Gguf(bytes) })
    }

    fn from_hf_shards(config: &[u8], shards: Vec<Cow<'a, [u8]>>, tokenizer: &[u8], generation: Option<&[u8]>, id: &str) -> Result<Self> {
        let config = DecoderConfig::from_json(config)?;
        let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
        for shard in &shards {
            sha2::Digest::update(&mut hasher, shard);
        }
        let sha256: String = sha2::Digest::finalize(hasher).iter().map(|b| format!("{b:02x}")).collect();
        let mut tokenizer = Tokenizer::from_json_bytes(tokenizer, config.max_position_embeddings)?;
        tokenizer.eos_token_ids = stop_tokens(&tokenizer, generation)?;
        let c = Self { config, tokenizer, id: id.to_string(), sha256, source: Source::Safetensors(shards) };
        // Every header is read now, so that a malformed shard fails the load, not a later layer.
        c.tensors(&|_| false)?;
        Ok(c)
    }

    /// The tensors whose Hugging Face name `keep` accepts, in Hugging Face layout (f32).
    fn tensors(&self, keep: &dyn Fn(&str) -> bool) -> Result<TensorMap> {
        match &self.source {
            Source::Gguf(bytes) => Ok(gguf_to_hf_only(&Gguf::parse(bytes)?, keep)?.1),
            Source::Safetensors(shards) => {
                let mut w = TensorMap::new();
                for shard in shards {
                    let mut part = safetensors::parse_only(shard, keep)?.tensors;
                    for name in part.names().map(str::to_string).collect::<Vec<_>>() {
                        if w.contains(&name) {
                            return Err(Error::tensor(&name, "appears in two shards"));
                        }
                        w.insert(name.clone(), part.remove(&name).expect("listed"));
                    }
                }
                Ok(w)
            }
        }
    }

    /// A `.gguf` file or a Hugging Face directory (`model.safetensors`, or the shards listed in
    /// `model.safetensors.index.json`; stop tokens from `generation_config.json` when present).
    fn read(path: &std::path::Path) -> Result<Checkpoint<'static>> {
        let id = path.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        if !path.is_dir() {
            return Checkpoint::from_gguf_bytes(Cow::Owned(crate::fs::read_file(path)?), &id);
        }
        let read = |n: &str| crate::fs::read_file(path.join(n));
        let shards: Vec<Vec<u8>> = if path.join("model.safetensors").exists() {
            vec![read("model.safetensors")?]
        } else {
            let index: serde_json::Value = serde_json::from_slice(&read("model.safetensors.index.json")?)
                .map_err(|e| Error::Config(format!("model.safetensors.index.json: {e}")))?;
            let mut files: Vec<String> = index["weight_map"]
                .as_object()
                .ok_or_else(|| Error::Config("model.safetensors.index.json has no weight_map".into()))?
                .values()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            files.sort();
            files.dedup();
            if files.iter().any(|f| f.contains('/') || f.contains("..")) {
                return Err(Error::Config("model.safetensors.index.json names a file outside the model folder".into()));
            }
            files.iter().map(|f| read(f)).collect::<Result<_>>()?
        };
        let generation = if path.join("generation_config.json").exists() { Some(read("generation_config.json")?) } else { None };
        Checkpoint::from_hf_shards(&read("config.json")?, shards.into_iter().map(Cow::Owned).collect(), &read("tokenizer.json")?, generation.as_deref(), &id)
    }

    /// The decoder in `precision`, built one layer at a time: at most one layer's tensors (or the
    /// embedding table) exist in f32 at once.
    fn into_model(self, precision: Precision, device: &Device) -> Result<FoundationModel> {
        let decoder = Decoder::assemble(&self.config, &mut |keep| self.tensors(keep), precision, device)?;
        Ok(FoundationModel { decoder, tokenizer: self.tokenizer, config: self.config, id: self.id, sha256: self.sha256 })
    }
}

/// Stop tokens of a Hugging Face folder: `generation_config.json`'s `eos_token_id` (one id or a
/// list), else the end tokens of the common chat formats the tokenizer knows.
fn stop_tokens(tokenizer: &Tokenizer, generation: Option<&[u8]>) -> Result<Vec<u32>> {
    if let Some(bytes) = generation {
        let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| Error::Config(format!("generation_config.json: {e}")))?;
        let ids: Vec<u32> = match &v["eos_token_id"] {
            serde_json::Value::Number(n) => n.as_u64().into_iter().map(|x| x as u32).collect(),
            serde_json::Value::Array(a) => a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32).collect(),
            _ => vec![],
        };
        if !ids.is_empty() {
            return Ok(ids);
        }
    }
    Ok(["<|endoftext|>", "<|im_end|>", "</s>", "<|eot_id|>", "<|end_of_text|>", "<eos>", "<end_of_turn>"].iter().filter_map(|t| tokenizer.token_to_id(t)).collect())
}

impl FoundationModel {
    /// Load a GGUF file held in memory (weights + tokenizer from its metadata).
    pub fn from_gguf_bytes(bytes: &[u8], id: &str, device: &Device) -> Result<Self> {
        Checkpoint::from_gguf_bytes(Cow::Borrowed(bytes), id)?.into_model(Precision::F32, device)
    }

    /// Load Hugging Face files held in memory: `config.json`, `model.safetensors`, `tokenizer.json`.
    pub fn from_hf_bytes(config: &[u8], weights: &[u8], tokenizer: &[u8], id: &str, device: &Device) -> Result<Self> {
        Self::from_hf_shards(config, &[weights], tokenizer, id, device)
    }

    /// Like [`Self::from_hf_bytes`] for a checkpoint split into several safetensors shards.
    pub fn from_hf_shards(config: &[u8], shards: &[&[u8]], tokenizer: &[u8], id: &str, device: &Device) -> Result<Self> {
        Checkpoint::from_hf_shards(config, shards.iter().map(|s| Cow::Borrowed(*s)).collect(), tokenizer, None, id)?.into_model(Precision::F32, device)
    }

    /// Load a `.gguf` file or a Hugging Face directory (`model.safetensors`, or the shards listed
    /// in `model.safetensors.index.json`).
    pub fn load(path: impl AsRef<std::path::Path>, device: &Device) -> Result<Self> {
        Self::load_as(path, Precision::F32, device)
    }

    /// [`Self::load`] straight into `precision`: each layer is dequantized, cast and dropped in
    /// turn, so that no f32 copy of the whole model exists.
    pub fn load_as(path: impl AsRef<std::path::Path>, precision: Precision, device: &Device) -> Result<Self> {
        Checkpoint::read(path.as_ref())?.into_model(precision, device)
    }

    /// The checkpoint's tensors in Hugging Face layout (f32, Q/K un-permuted) with its config and
    /// tokenizer: what `lopa export-hf` writes.
    pub fn read_hf_tensors(path: impl AsRef<std::path::Path>) -> Result<(DecoderConfig, TensorMap, Tokenizer)> {
        let c = Checkpoint::read(path.as_ref())?;
        let tensors = c.tensors(&|_| true)?;
        Ok((c.config, tensors, c.tokenizer))
    }
}

/// What a gateway in front of another serving engine holds of the frozen model: its tokenizer
/// and token-embedding table (`[vocab, d]`, row-major f32, times the model's embedding scale),
/// never its layers.
#[derive(Debug, Clone)]
pub struct TokenEmbedding {
    pub config: DecoderConfig,
    pub tokenizer: Tokenizer,
    pub table: Vec<f32>,
    pub id: String,
    pub sha256: String,
}

impl TokenEmbedding {
    /// Read only the embedding table (and tokenizer, config) of a `.gguf` file or HF directory.
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let c = Checkpoint::read(path.as_ref())?;
        let (vocab, d) = (c.config.vocab_size, c.config.hidden_size);
        let mut t = c.tensors(&|n| n == EMBED_TOKENS)?.remove(EMBED_TOKENS).ok_or_else(|| Error::tensor(EMBED_TOKENS, "missing"))?;
        if t.shape != [vocab, d] {
            return Err(Error::tensor(EMBED_TOKENS, format!("shape {:?}, config needs [{vocab}, {d}]", t.shape)));
        }
        // Rows as the layers see them (gemma3 scales by √d; so must `prompt_embeds`).
        let scale = c.config.embed_scale();
        if scale != 1.0 {
            t.data.iter_mut().for_each(|x| *x *= scale);
        }
        Ok(Self { config: c.config, tokenizer: c.tokenizer, table: t.data, id: c.id, sha256: c.sha256 })
    }

    /// The table's row for token `id` (`[d]`); the id must be in range.
    pub fn row(&self, id: u32) -> Result<&[f32]> {
        let d = self.config.hidden_size;
        self.table.get(id as usize * d..(id as usize + 1) * d).ok_or_else(|| Error::Input(format!("token id {id} is outside the vocabulary ({})", self.config.vocab_size)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_names_map_to_hf() {
        let l = ModelType::Llama;
        assert_eq!(hf_name("blk.3.attn_q.weight", l).unwrap(), "model.layers.3.self_attn.q_proj.weight");
        assert_eq!(hf_name("blk.0.ffn_norm.weight", l).unwrap(), "model.layers.0.post_attention_layernorm.weight");
        assert_eq!(hf_name("token_embd.weight", l).unwrap(), "model.embed_tokens.weight");
        assert!(hf_name("rope_freqs.weight", l).is_none());
        let g = ModelType::Gemma3;
        assert_eq!(hf_name("blk.1.ffn_norm.weight", g).unwrap(), "model.layers.1.pre_feedforward_layernorm.weight");
        assert_eq!(hf_name("blk.1.post_attention_norm.weight", g).unwrap(), "model.layers.1.post_attention_layernorm.weight");
        assert_eq!(hf_name("blk.1.post_ffw_norm.weight", g).unwrap(), "model.layers.1.post_feedforward_layernorm.weight");
        assert_eq!(hf_name("blk.2.attn_k_norm.weight", ModelType::Qwen3).unwrap(), "model.layers.2.self_attn.k_norm.weight");
    }

    #[test]
    fn unpermute_inverts_the_converter_permutation() {
        // One head, hd = 4, one column: HF rows [a0 a1 | b0 b1] are stored as [a0 b0 a1 b1].
        assert_eq!(unpermute_rows(&[0., 2., 1., 3.], 1, 4, 1), vec![0., 1., 2., 3.]);
    }
}
