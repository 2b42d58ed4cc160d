//! `lopa serve`: the frozen-model endpoint and trust boundary. It holds the foundation model (or,
//! as a gateway, only its tokenizer and token embeddings in front of vLLM) and nothing
//! task-specific; clients send their soft prompt with each query.

pub mod engine;
pub mod http;
pub mod torch_tensor;
pub mod upstream;
pub use crate::wire;

pub use engine::EngineConfig;
pub use http::{router, router_with, serve, Backend, ModelInfo, ServeConfig};
pub use upstream::{Upstream, Vllm};
