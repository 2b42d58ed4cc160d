//! The key/value cache of incremental decoding.

use super::block::LayerCache;
use super::Decoder;

/// Per-layer key/value cache for incremental decoding, with the key mask seen so far.
#[derive(Debug, Clone)]
pub struct KvCache {
    pub(super) layers: Vec<LayerCache>,
    /// Row-major `[b, len]` 0/1 mask of cached slots.
    pub(super) key_mask: Vec<Vec<f32>>,
    /// Row-major `[b, len]` positions of cached slots (sliding windows count positions).
    pub(super) positions: Vec<Vec<usize>>,
}

impl KvCache {
    /// An empty cache for `batch` rows.
    pub fn new(decoder: &Decoder, batch: usize) -> Self {
        Self { layers: vec![None; decoder.layers.len()], key_mask: vec![Vec::new(); batch], positions: vec![Vec::new(); batch] }
    }
    /// Number of cached slots.
    pub fn len(&self) -> usize {
        self.key_mask.first().map_or(0, Vec::len)
    }
    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

