//! `lopa serve`: the frozen-model endpoint. It holds the foundation model and nothing
//! task-specific; clients send their soft prompt with each query.

pub mod engine;
pub mod http;
pub mod torch_tensor;
pub use crate::wire;

pub use engine::EngineConfig;
pub use http::{router, serve, ServeConfig};
