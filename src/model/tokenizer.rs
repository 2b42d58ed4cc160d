//! Tokenizers: Hugging Face `tokenizer.json` (WordPiece for BERT encoders, BPE for decoders), and
//! the BPE a GGUF file describes in its metadata (`tokenizer.ggml.*`) rebuilt as transformers
//! rebuilds it: byte-level, or Gemma's SentencePiece with byte fallback.

use crate::error::{Error, Result};
use crate::model::weights::gguf::{Gguf, Value};
use serde_json::{json, Map};

/// A text tokenizer with the special-token ids a model needs.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Beginning-of-sequence id, if the model prepends one.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence / stop ids.
    pub eos_token_ids: Vec<u32>,
    /// Whether `encode` prepends `bos_token_id`.
    pub add_bos: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos_token_id", &self.bos_token_id)
            .field("eos_token_ids", &self.eos_token_ids)
            .finish()
    }
}

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl Tokenizer {
    /// Load a Hugging Face `tokenizer.json`. Fixed padding is switched off (it would make every
    /// sentence embed alike) and truncation is set to `max_len` tokens.
    pub fn from_json_bytes(bytes: &[u8], max_len: usize) -> Result<Self> {
        let mut inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(tok_err)?;
        inner.with_padding(None);
        inner
            .with_truncation(Some(tokenizers::TruncationParams { max_length: max_len, ..Default::default() }))
            .map_err(tok_err)?;
        Ok(Self { inner, bos_token_id: None, eos_token_ids: vec![], add_bos: false })
    }

    /// Rebuild the tokenizer stored in a GGUF file's metadata: byte-level BPE (`gpt2`), or
    /// Gemma's SentencePiece BPE (`llama` in a gemma3 file), built as transformers builds both.
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let model = g.str("tokenizer.ggml.model")?;
        let arch = g.get("general.architecture").and_then(Value::as_str).unwrap_or_default();
        let sentencepiece = match (model, arch) {
            ("gpt2", _) => false,
            ("llama", "gemma3") => true,
            _ => return Err(Error::Tokenizer(format!("GGUF tokenizer model `{model}` of `{arch}` is not supported (byte-level BPE `gpt2`, and gemma3's SentencePiece `llama`)"))),
        };
        let strings = |key: &str| -> Result<Vec<String>> {
            g.get(key)
                .and_then(Value::as_array)
                .ok_or_else(|| Error::Tokenizer(format!("metadata `{key}` missing")))?
                .iter()
                .map(|v| v.as_str().map(str::to_string).ok_or_else(|| Error::Tokenizer(format!("`{key}` holds a non-string"))))
                .collect()
        };
        let mut tokens = strings("tokenizer.ggml.tokens")?;
        if sentencepiece {
            // A token of spaces only is stored with real spaces; the vocabulary spells them `▁`.
            for t in tokens.iter_mut().filter(|t| t.contains(' ') && t.trim().is_empty()) {
                *t = "\u{2581}".repeat(t.chars().count());
            }
        }
        // Files that list no merges (Gemma's; a vocabulary of bytes) get them recovered from the
        // vocabulary, as transformers does.
        let merges = match g.get("tokenizer.ggml.merges") {
            Some(_) if !sentencepiece => strings("tokenizer.ggml.merges")?
                .iter()
                .map(|m| m.split_once(' ').map(|(a, b)| [a.to_string(), b.to_string()]).ok_or_else(|| Error::Tokenizer(format!("merge `{m}` is not two tokens"))))
                .collect::<Result<Vec<_>>>()?,
            _ => merges_from_vocabulary(&tokens),
        };
        let types: Vec<u64> = g
            .get("tokenizer.ggml.token_type")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|v| v.as_u64().unwrap_or(1)).collect())
            .unwrap_or_default();
        let mut vocab = Map::new();
        let mut added = Vec::new();
        for (id, t) in tokens.iter().enumerate() {
            vocab.insert(t.clone(), json!(id));
            // 3 = control, 4 = user-defined: matched whole, never split by BPE.
            if matches!(types.get(id), Some(3) | Some(4)) {
                added.push(json!({"id": id, "content": t, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": types[id] == 3}));
            }
        }
        let doc = if sentencepiece {
            let id = |k: &str| g.get(k).and_then(Value::as_u64).map(|v| v as usize);
            let unk = id("tokenizer.ggml.unknown_token_id").and_then(|i| tokens.get(i)).cloned();
            json!({
                "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
                "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"},
                "pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": false},
                "post_processor": null,
                "decoder": {"type": "Sequence", "decoders": [
                    {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"}]},
                "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                    "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                    "vocab": vocab, "merges": merges}
            })
        } else {
            let pre = g.get("tokenizer.ggml.pre").and_then(Value::as_str).unwrap_or("default");
            let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
            let pre_tokenizer = match pre {
                // SmolLM: digits one by one, then the GPT-2 split (llama.cpp LLAMA_VOCAB_PRE_TYPE_SMOLLM).
                "smollm" => json!({"type": "Sequence", "pretokenizers": [
                    {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
                "qwen2" => json!({"type": "Sequence", "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"},
                     "behavior": "Isolated", "invert": false},
                    byte_level(false)]}),
                _ => byte_level(true),
            };
            json!({
                "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
                "normalizer": null, "pre_tokenizer": pre_tokenizer, "post_processor": null,
                "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
                "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                    "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                    "vocab": vocab, "merges": merges}
            })
        };
        let inner = tokenizers::Tokenizer::from_bytes(serde_json::to_vec(&doc).expect("json")).map_err(tok_err)?;
        let id = |k: &str| g.get(k).and_then(Value::as_u64).map(|v| v as u32);
        let add_bos = matches!(g.get("tokenizer.ggml.add_bos_token"), Some(Value::Bool(true)));
        let mut eos_token_ids: Vec<u32> = id("tokenizer.ggml.eos_token_id").into_iter().collect();
        if let Some(e) = id("tokenizer.ggml.eot_token_id") {
            eos_token_ids.push(e);
        }
        Ok(Self { inner, bos_token_id: id("tokenizer.ggml.bos_token_id"), eos_token_ids, add_bos })
    }

    /// Token ids of `text` without special tokens (plus BOS when the model asks for it).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(tok_err)?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if self.add_bos {
            ids.extend(self.bos_token_id);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Token ids with the tokenizer's own template (e.g. `[CLS] ... [SEP]` for BERT).
    pub fn encode_with_special_tokens(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.inner.encode(text, true).map_err(tok_err)?.get_ids().to_vec())
    }

    /// Text of `ids`; special tokens are dropped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(tok_err)
    }

    /// The id of a token string, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The tokenizer as a Hugging Face `tokenizer.json` document.
    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(false).map_err(tok_err)
    }

    /// The token string of an id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// The merges of a BPE vocabulary that lists none (Gemma's GGUF files), as
/// transformers derives them: every split of a token into two tokens of the vocabulary, tokens in
/// file order (Gemma's scores do not follow its merge order; its file order does), and within a
/// token the longer left piece first.
fn merges_from_vocabulary(tokens: &[String]) -> Vec<[String; 2]> {
    use std::collections::HashMap;
    let mut last: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        last.insert(t, i);
    }
    let mut order: Vec<(&str, usize)> = last.iter().map(|(t, i)| (*t, *i)).collect();
    order.sort_unstable_by_key(|&(_, i)| i);
    let mut merges = Vec::new();
    for (t, _) in order {
        let cuts: Vec<usize> = t.char_indices().map(|(b, _)| b).skip(1).collect();
        for &b in cuts.iter().rev() {
            let (l, r) = t.split_at(b);
            if last.contains_key(l) && last.contains_key(r) {
                merges.push([l.to_string(), r.to_string()]);
            }
        }
    }
    merges
}
