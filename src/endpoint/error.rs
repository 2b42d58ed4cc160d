//! Refusals as HTTP: a status, a stable code and a message. 4xx name the rule or limit the
//! client broke; 5xx carry no internal detail (that goes to the server's log).

use super::engine::Submit;
use crate::error::Error;
use crate::wire::{ErrorDetail, ErrorResponse, TensorRule};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// A 4xx/5xx JSON error.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
    pub(super) fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub(super) fn timeout() -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout", "the request timed out")
    }
    /// The same refusal, saying which of a request's examples it concerns.
    pub(super) fn at(mut self, example: usize) -> Self {
        self.message = format!("examples[{example}]: {}", self.message);
        self
    }
    /// A server-side failure: the detail goes to the log, never to the client.
    pub(super) fn internal(detail: impl std::fmt::Display) -> Self {
        eprintln!("lopa: internal error: {detail}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal server error")
    }
}

impl From<TensorRule> for ApiError {
    fn from(r: TensorRule) -> Self {
        ApiError::bad(r.code(), r.to_string())
    }
}

impl ApiError {
    /// The JSON every refusal carries.
    pub(super) fn body(self) -> ErrorResponse {
        ErrorResponse { error: ErrorDetail { code: self.code.into(), message: self.message } }
    }

    /// An error event that ends a stream.
    pub(super) fn event(self) -> axum::response::sse::Event {
        axum::response::sse::Event::default().data(serde_json::to_string(&self.body()).expect("plain JSON values"))
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Input(m) => ApiError::bad("invalid_request", m),
            Error::Upstream { rejected: true, message } => ApiError::bad("upstream_rejected", message),
            Error::Upstream { rejected: false, message } => {
                eprintln!("lopa: upstream: {message}");
                // 503, not 502: the gateway is fine and a retry succeeds once the engine is back.
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "upstream_unavailable", "the serving engine failed or does not answer")
            }
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

impl From<Submit> for ApiError {
    fn from(e: Submit) -> Self {
        match e {
            Submit::QueueFull => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "queue_full", "the server is busy; retry later"),
            Submit::Stopped => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "engine_stopped", "the model worker has stopped"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_statuses_without_internal_detail() {
        let e = ApiError::from(Error::Backend("wgpu device lost at /root/.cache/lopa/secret".into()));
        assert_eq!((e.status, e.code, e.message.as_str()), (StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal server error"));
        let e = ApiError::from(Error::io("/etc/passwd", std::io::Error::other("denied")));
        assert!(!e.message.contains("passwd"), "{}", e.message);
        let e = ApiError::from(Error::Input("token id 70000 is outside the vocabulary (49152)".into()));
        assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "invalid_request"));
        let e = ApiError::from(Error::Upstream { rejected: true, message: "prompt too long".into() });
        assert_eq!((e.status, e.code, e.message.as_str()), (StatusCode::BAD_REQUEST, "upstream_rejected", "prompt too long"));
        let e = ApiError::from(Error::Upstream { rejected: false, message: "connection refused 10.0.0.7:8000".into() });
        assert_eq!((e.status, e.code), (StatusCode::SERVICE_UNAVAILABLE, "upstream_unavailable"));
        assert!(!e.message.contains("10.0.0.7"));
    }
}
