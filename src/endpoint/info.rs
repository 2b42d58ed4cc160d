//! What the routes know of the frozen model, whichever backend runs it.

use crate::model::decoder::FoundationModel;
use crate::model::gradient::GradientCost;
use crate::model::tokenizer::Tokenizer;

/// What the routes know of the frozen model, whichever backend runs it.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub id: String,
    pub tokenizer: Tokenizer,
    pub width: usize,
    pub vocab: usize,
    /// Longest sequence (soft prompt + prompt + new tokens) the backend accepts.
    pub max_context: usize,
    /// What a soft-prompt gradient holds in memory (`None`: the backend computes none).
    pub gradient_cost: Option<GradientCost>,
}

impl ModelInfo {
    /// What a loaded model tells the routes.
    pub fn of(fm: &FoundationModel) -> Self {
        ModelInfo {
            id: fm.id.clone(),
            tokenizer: fm.tokenizer.clone(),
            width: fm.decoder.hidden_size(),
            vocab: fm.decoder.vocab_size(),
            max_context: fm.config.max_position_embeddings,
            gradient_cost: Some(GradientCost::of(&fm.config)),
        }
    }
}

