//! The checks every request passes before its route: the `Host` header must be allowed (DNS
//! rebinding), a POST must be `application/json` (a cross-site page can POST `text/plain`
//! without a CORS preflight), and it must get one of `max_concurrent` permits, held until its
//! response (a stream included) ends.

use super::error::ApiError;
use super::state::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::OwnedSemaphorePermit;

/// The checks, in that order.
pub(super) async fn guard(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).or_else(|| req.uri().authority().map(|a| a.as_str()));
    match host {
        None => return ApiError::bad("host", "the Host header is missing").into_response(),
        Some(h) if !s.cfg.host_allowed(h) => {
            let name: String = h.chars().take(64).collect();
            return ApiError::new(StatusCode::FORBIDDEN, "host_not_allowed", format!("Host `{name}` is not served here (see --allow-host)")).into_response();
        }
        Some(_) => {}
    }
    if req.method() == Method::POST {
        let json = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).and_then(|v| v.split(';').next()).is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "content_type", "requests must be sent as content-type: application/json").into_response();
        }
    }
    // Health and model info are cheap and must answer under load (a load balancer would
    // otherwise pull a server that is only busy).
    if req.method() == Method::GET {
        return next.run(req).await;
    }
    let Ok(permit) = s.permits.clone().try_acquire_owned() else {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "too many requests in flight; retry later").into_response();
    };
    next.run(req).await.map(|body| Body::new(Held { body, _permit: permit }))
}

/// A response body that holds its concurrency permit until the body ends.
struct Held {
    body: Body,
    _permit: OwnedSemaphorePermit,
}

impl axum::body::HttpBody for Held {
    type Data = Bytes;
    type Error = axum::Error;
    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

