//! What every route and the guard share: the backend, the model's facts, the settings, and the
//! permits that bound requests in flight.

use super::backend::Backend;
use super::config::ServeConfig;
use super::info::ModelInfo;
use std::sync::Arc;
use tokio::sync::Semaphore;

pub(super) struct AppState {
    pub backend: Backend,
    pub info: ModelInfo,
    pub cfg: ServeConfig,
    pub permits: Arc<Semaphore>,
}

