//! The models, from weights to a soft prompt: checkpoint readers ([`weights`]), the tokenizer,
//! the frozen sentence encoder, the frozen decoder with its soft-prompt prefix, LoRA (a block
//! inside the decoder's projections), the soft-prompt generator, and generation / scoring on top.
//!
//! ```text
//! weights ─┬─> encoder ──> f(x) [b, e] ──> generator ──> Z [b, m, d] ─┐
//!          └─> decoder <── [Z ; embed(ids)] <── SoftPrompt ───────────┘──> logits ──> sampling
//! ```

pub mod weights;
pub mod tokenizer;
pub mod fast_math;
pub mod parallel;
pub mod int8_linear;
pub mod nn;
pub mod encoder;
pub mod lora;
pub mod decoder;
pub mod generator;
pub mod adaptation;
pub mod soft_prompt;
pub mod sampling;
pub mod generate;
pub mod gradient;
#[cfg(not(target_arch = "wasm32"))]
pub mod export;

pub use soft_prompt::SoftPrompt;
