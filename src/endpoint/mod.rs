//! `lopa serve`: the frozen-model endpoint and trust boundary. It holds the foundation model (or,
//! as a gateway, only its tokenizer and token embeddings in front of vLLM) and nothing
//! task-specific; clients send their soft prompt with each query.
//!
//! [`wire`] is the request and response format both sides share; it builds everywhere (the
//! browser client writes it). The server itself needs the `server` feature.

#[cfg(feature = "server")]
pub mod engine;
#[cfg(feature = "server")]
pub mod http;
#[cfg(feature = "server")]
pub mod upstream;

#[cfg(feature = "server")]
pub use engine::EngineConfig;
#[cfg(feature = "server")]
pub use http::{router, router_with, serve, Backend, ModelInfo, ServeConfig};
#[cfg(feature = "server")]
pub use upstream::{Upstream, Vllm};
