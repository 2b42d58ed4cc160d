//! # lopa
//!
//! Low-Rank Prompt Adaptation (Jain et al., NeurIPS 2024, <https://arxiv.org/abs/2405.15282>) on
//! [burn]. A small generator on the client turns each input into a soft prompt
//! Z = Z_S ⊙ σ(u·vᵀ) that is prepended to a frozen decoder's input embeddings; the server holds
//! only the frozen model.
//!
//! ```no_run
//! use lopa::model::{decoder::FoundationModel, encoder::SentenceEncoder, generator::{GeneratorConfig, Method}};
//! let device = burn::tensor::Device::flex();
//! let fm = FoundationModel::load(lopa::paths::default_foundation_model(), &device)?;
//! let enc = SentenceEncoder::from_dir(lopa::paths::default_encoder(), &device)?;
//! let generator = GeneratorConfig::new(Method::Lopa, fm.decoder.hidden_size(), enc.hidden_size()).init(&device)?;
//! let z = generator.forward(enc.embed(&["a gripping, funny film"], &device)?)?; // [1, 10, 576]
//! # Ok::<(), lopa::Error>(())
//! ```

// Layers, lowest first; each imports only from the ones above it in this list.
pub mod error;
pub mod fs;
pub mod paths;
pub mod rng;
pub mod device;
pub mod model;
pub mod task;
pub mod adapter;
pub mod wire;
pub mod client;
#[cfg(all(feature = "web", target_arch = "wasm32"))]
pub mod web;
#[cfg(feature = "server")]
pub mod endpoint;
#[cfg(feature = "train")]
pub mod training;

pub use error::{Error, Result};
