//! # lopa
//!
//! Low-Rank Prompt Adaptation (Jain et al., NeurIPS 2024, <https://arxiv.org/abs/2405.15282>) on
//! [burn]. A small generator on the client turns each input into a soft prompt
//! Z = Z_S ⊙ σ(u·vᵀ) that is prepended to a frozen decoder's input embeddings; the server holds
//! only the frozen model.
//!
//! ```no_run
//! use lopa::{decoder::FoundationModel, encoder::SentenceEncoder, generator::{GeneratorConfig, Method}};
//! let device = burn::tensor::Device::flex();
//! let fm = FoundationModel::load(lopa::paths::default_foundation_model(), &device)?;
//! let enc = SentenceEncoder::from_dir(lopa::paths::default_encoder(), &device)?;
//! let generator = GeneratorConfig::new(Method::Lopa, fm.decoder.hidden_size(), enc.hidden_size()).init(&device)?;
//! let z = generator.forward(enc.embed(&["a gripping, funny film"], &device)?)?; // [1, 10, 576]
//! # Ok::<(), lopa::Error>(())
//! ```

pub mod adapter;
pub mod bundle;
pub mod client;
pub mod decoder;
pub mod device;
pub mod encoder;
pub mod error;
#[cfg(not(target_arch = "wasm32"))]
pub mod export;
pub mod generate;
pub mod generator;
pub mod lora;
pub mod nn;
pub mod paths;
#[cfg(feature = "train")]
pub mod plot;
pub mod tasks;
#[cfg(feature = "server")]
pub mod server;
pub mod tokenizer;
#[cfg(feature = "train")]
pub mod train;
pub mod weights;
pub mod wire;
#[cfg(feature = "browser")]
pub mod wasm;

pub use error::{Error, Result};
