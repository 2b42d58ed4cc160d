//! Streamed completions: server-sent events in OpenAI's format, cut at the first stop string,
//! ended by `stream_timeout`, and cancelling the generation when the client goes away.

use super::error::ApiError;
use super::state::AppState;
use super::stop::StopStrings;
use crate::model::generate::Generation;
use crate::model::sampling::FinishReason;
use crate::wire::{CompletionChoice, CompletionResponse};
use axum::http::StatusCode;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, oneshot};

pub(super) fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A completion id unique to this answer: the server's start time (ns) and a counter, so that
/// neither two answers in one second nor two server runs share one.
pub(super) fn completion_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static START: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    let start = START.get_or_init(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    format!("cmpl-{start:x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Where a streamed completion stands (a `Stream` of SSE events). Dropping it (the client went
/// away) drops `done`, which cancels the generation.
pub struct StreamState {
    app: Arc<AppState>,
    tokens_rx: mpsc::UnboundedReceiver<u32>,
    done: Option<oneshot::Receiver<crate::Result<Generation>>>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    tokens: Vec<u32>,
    sent: usize,
    stops: StopStrings,
    phase: Phase,
    finish: FinishReason,
    id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Streaming,
    /// The final chunk is out; `[DONE]` follows.
    Finished,
    Closed,
}

fn chunk(st: &StreamState, text: &str, finish: Option<FinishReason>) -> axum::response::sse::Event {
    let c = CompletionResponse {
        id: st.id.clone(),
        object: "text_completion".into(),
        created: now(),
        model: st.app.info.id.clone(),
        choices: vec![CompletionChoice { index: 0, text: text.into(), logprobs: None, finish_reason: finish }],
        usage: None,
    };
    axum::response::sse::Event::default().data(serde_json::to_string(&c).expect("plain JSON values"))
}

/// Server-sent events in OpenAI's format: one chunk per new piece of text, a final chunk with
/// `finish_reason`, then `data: [DONE]`. Past `stream_timeout` an error event ends the stream.
pub(super) fn stream_response(app: Arc<AppState>, tokens_rx: mpsc::UnboundedReceiver<u32>, done: oneshot::Receiver<crate::Result<Generation>>, stops: StopStrings) -> axum::response::sse::Sse<StreamState> {
    let deadline = Box::pin(tokio::time::sleep(app.cfg.stream_timeout));
    axum::response::sse::Sse::new(StreamState { app, tokens_rx, done: Some(done), deadline, tokens: vec![], sent: 0, stops, phase: Phase::Streaming, finish: FinishReason::Length, id: completion_id() })
}

impl futures_core::Stream for StreamState {
    type Item = Result<axum::response::sse::Event, std::convert::Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        use axum::response::sse::Event;
        let st = self.get_mut();
        match st.phase {
            Phase::Streaming => {
                if st.deadline.as_mut().poll(cx).is_ready() {
                    st.done = None;
                    st.phase = Phase::Closed;
                    let e = ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout", format!("the stream ran past {} s", st.app.cfg.stream_timeout.as_secs()));
                    return Poll::Ready(Some(Ok(e.event())));
                }
                match st.tokens_rx.poll_recv(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Some(t)) => {
                        st.tokens.push(t);
                        let text = st.app.info.tokenizer.decode(&st.tokens).unwrap_or_default();
                        // Hold back a piece that ends inside a multi-byte character.
                        if text.ends_with('\u{FFFD}') || text.len() < st.sent || !text.is_char_boundary(st.sent) {
                            return Poll::Ready(Some(Ok(Event::default().comment(""))));
                        }
                        if let Some(cut) = st.stops.find(&text) {
                            let piece = text[st.sent.min(cut)..cut].to_string();
                            st.finish = FinishReason::Stop;
                            st.phase = Phase::Finished;
                            // The answer is complete: stop the generation.
                            st.done = None;
                            return Poll::Ready(Some(Ok(chunk(st, &piece, Some(FinishReason::Stop)))));
                        }
                        let piece = text[st.sent..].to_string();
                        st.sent = text.len();
                        Poll::Ready(Some(Ok(chunk(st, &piece, None))))
                    }
                    Poll::Ready(None) => {
                        // All tokens are in; the generation's own result carries the finish reason.
                        if let Some(done) = st.done.as_mut() {
                            match Pin::new(done).poll(cx) {
                                Poll::Pending => return Poll::Pending,
                                Poll::Ready(Ok(Ok(g))) => st.finish = g.finish_reason,
                                Poll::Ready(Ok(Err(e))) => {
                                    st.done = None;
                                    st.phase = Phase::Closed;
                                    return Poll::Ready(Some(Ok(ApiError::from(e).event())));
                                }
                                Poll::Ready(Err(_)) => {}
                            }
                            st.done = None;
                        }
                        st.phase = Phase::Finished;
                        let finish = st.finish;
                        Poll::Ready(Some(Ok(chunk(st, "", Some(finish)))))
                    }
                }
            }
            Phase::Finished => {
                st.phase = Phase::Closed;
                Poll::Ready(Some(Ok(Event::default().data("[DONE]"))))
            }
            Phase::Closed => Poll::Ready(None),
        }
    }
}

