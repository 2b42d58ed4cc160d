//! Where the default weights live: `$LOPA_CACHE` (default `~/.cache/lopa`), filled by
//! `scripts/fetch-weights.sh`.

use std::path::PathBuf;

/// The cache root.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("LOPA_CACHE") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("lopa")
}

/// The default frozen model: SmolLM2-135M-Instruct (Q4_1 GGUF).
pub fn default_foundation_model() -> PathBuf {
    cache_dir().join("weights/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The default encoder: all-MiniLM-L6-v2 (Hugging Face directory).
pub fn default_encoder() -> PathBuf {
    cache_dir().join("weights/all-minilm-l6-v2")
}
