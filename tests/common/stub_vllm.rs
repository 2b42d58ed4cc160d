//! A stand-in for vLLM on loopback, in a runtime of its own so that stopping it closes every
//! connection at once, as a killed process does. It passes the gateway's start-up probes, answers
//! completions, streams and `logprob_token_ids` scores, and looks only at the first and last
//! kilobyte of a body (where the fields other than `prompt_embeds` are), so its own work stays
//! small and constant. Shared by tests/gateway_faults.rs and benches/gateway.rs.

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::json;
use std::net::SocketAddr;

/// How the stub behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Like vLLM.
    Answer,
    /// Accepts connections and requests and never answers (a hung engine).
    Hang,
}

pub struct StubVllm {
    pub addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

/// The numbers after `"key":[` in `body`'s first or last kilobyte.
fn ids_after(body: &[u8], key: &str) -> Option<Vec<u64>> {
    let ends = [&body[..body.len().min(1024)], &body[body.len().saturating_sub(1024)..]];
    ends.iter().find_map(|b| {
        let s = String::from_utf8_lossy(b);
        let at = s.find(&format!("\"{key}\":["))? + key.len() + 4;
        let list = s[at..].split(']').next()?;
        list.split(',').map(|x| x.trim().parse().ok()).collect()
    })
}

fn completion(body: &[u8], vocab: u64) -> axum::response::Response {
    let allowed = ids_after(body, "allowed_token_ids");
    if allowed.as_ref().is_some_and(|a| a.iter().any(|&t| t >= vocab)) {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": {"message": "token id out of range"}}))).into_response();
    }
    if let Some(asked) = ids_after(body, "logprob_token_ids") {
        let top: serde_json::Map<String, serde_json::Value> = asked.iter().map(|t| (format!("token_id:{t}"), json!(-1.0 - *t as f64 / 1000.0))).collect();
        return axum::Json(json!({"choices": [{"token_ids": [asked[0]], "logprobs": {"top_logprobs": [top]}, "finish_reason": "length"}]})).into_response();
    }
    let ids: Vec<u64> = allowed.unwrap_or_else(|| (1..=8).collect());
    let lps: Vec<f64> = ids.iter().map(|_| -1.0).collect();
    let tail = String::from_utf8_lossy(&body[body.len().saturating_sub(1024)..]).to_string();
    if tail.contains("\"stream\":true") {
        let mut sse = String::new();
        for t in &ids {
            sse += &format!("data: {}\n\n", json!({"choices": [{"token_ids": [t], "finish_reason": null}]}));
        }
        sse += &format!("data: {}\n\ndata: [DONE]\n\n", json!({"choices": [{"token_ids": [], "finish_reason": "length"}]}));
        return ([(axum::http::header::CONTENT_TYPE, "text/event-stream")], sse).into_response();
    }
    axum::Json(json!({"choices": [{"token_ids": ids, "logprobs": {"token_logprobs": lps}, "finish_reason": "length"}]})).into_response()
}

impl StubVllm {
    /// A stub for a model of `vocab` tokens on `addr` (a free port when `None`).
    pub fn start(addr: Option<SocketAddr>, vocab: usize, mode: Mode) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind(addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap()))).unwrap();
        let addr = listener.local_addr().unwrap();
        let vocab = vocab as u64;
        let app = match mode {
            Mode::Answer => axum::Router::new()
                .route("/v1/models", get(|| async { axum::Json(json!({"data": [{"id": "stub", "max_model_len": 8192}]})) }))
                .route("/health", get(|| async { "" }))
                .route("/v1/completions", post(move |body: axum::body::Bytes| async move { completion(&body, vocab) }))
                // Long prompts at large widths are tens of MB, past axum's 2 MB default.
                .layer(axum::extract::DefaultBodyLimit::disable()),
            Mode::Hang => axum::Router::new().fallback(std::future::pending::<()>),
        };
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        StubVllm { addr, runtime: Some(runtime) }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Gone, every open connection and the listening socket with it (its tasks are dropped
    /// before this returns, so the address can be bound again).
    pub fn stop(mut self) {
        self.runtime.take().unwrap().shutdown_timeout(std::time::Duration::from_secs(2));
    }
}

impl Drop for StubVllm {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
