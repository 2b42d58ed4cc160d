//! `lopa serve`: the frozen-model endpoint and trust boundary. It holds the foundation model (or,
//! as a gateway, only its tokenizer and token embeddings in front of vLLM) and nothing
//! task-specific; clients send their soft prompt with each query. What travels is
//! [`crate::wire`]; this module reads it, one concern per file:
//!
//! - [`config`]: every setting and limit; [`info`]: what the routes know of the model;
//! - [`server`]: the accept loop; [`guard`]: host, content type and concurrency before any route;
//! - [`routes`]: the handlers; [`validate`]: body limits and every rule a request passes;
//!   [`error`]: refusals as HTTP; [`stream`]: server-sent events;
//! - [`backend`]: where the model runs, the embedded [`engine`] or vLLM ([`upstream`]); both
//!   end a generation at its [`stop`] strings.

pub mod backend;
pub mod config;
pub mod engine;
pub mod error;
mod guard;
pub mod info;
pub mod routes;
pub mod server;
mod state;
pub mod stop;
pub mod stream;
pub mod upstream;
mod validate;

pub use backend::Backend;
pub use config::ServeConfig;
pub use engine::EngineConfig;
pub use info::ModelInfo;
pub use routes::{router, router_with};
pub use server::serve;
pub use upstream::{Upstream, Vllm};
