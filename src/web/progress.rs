//! Download progress: one event per step of each file, as a callback or as a `Stream`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// The three files a client loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum File {
    Encoder,
    Tokenizer,
    Adapter,
}

impl File {
    /// `encoder`, `tokenizer` or `adapter`: the names the JS package reports.
    pub fn name(self) -> &'static str {
        match self {
            File::Encoder => "encoder",
            File::Tokenizer => "tokenizer",
            File::Adapter => "adapter",
        }
    }
}

/// One step of loading a file. A download reports `loaded: 0` when its answer arrives, then
/// after every chunk; a file from the Cache API, or given as bytes, reports once with
/// `loaded == total`. Within a file `loaded` never decreases; the three files load at once, so
/// their events interleave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub file: File,
    pub loaded: u64,
    /// The file's size when the server said it (`content-length`).
    pub total: Option<u64>,
    /// Read from the Cache API: nothing was downloaded.
    pub cached: bool,
}

/// What `LoadOptions::on_progress` calls.
pub type OnProgress = Rc<dyn Fn(&Progress)>;

#[derive(Default)]
struct Queue {
    events: VecDeque<Progress>,
    waker: Option<Waker>,
    closed: bool,
}

/// The receiving end of `LoadOptions::progress_stream`: every event, in order; it ends when the
/// load has finished (or was dropped).
pub struct ProgressStream(Rc<RefCell<Queue>>);

/// The sending end, held by the callback; the stream ends when it is dropped.
struct Sender(Rc<RefCell<Queue>>);

impl Drop for Sender {
    fn drop(&mut self) {
        let mut q = self.0.borrow_mut();
        q.closed = true;
        if let Some(w) = q.waker.take() {
            w.wake();
        }
    }
}

/// A callback that queues each event, and the stream that yields them.
pub(crate) fn channel() -> (OnProgress, ProgressStream) {
    let queue = Rc::new(RefCell::new(Queue::default()));
    let sender = Sender(queue.clone());
    let callback: OnProgress = Rc::new(move |p: &Progress| {
        let mut q = sender.0.borrow_mut();
        q.events.push_back(p.clone());
        if let Some(w) = q.waker.take() {
            w.wake();
        }
    });
    (callback, ProgressStream(queue))
}

impl futures_core::Stream for ProgressStream {
    type Item = Progress;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Progress>> {
        let mut q = self.0.borrow_mut();
        match q.events.pop_front() {
            Some(p) => Poll::Ready(Some(p)),
            None if q.closed => Poll::Ready(None),
            None => {
                q.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
