//! The batching engine: one worker thread owns the frozen model and serves a bounded queue.
//! It takes the first waiting request, collects more for up to `batch_window` (at most
//! `max_batch`), and runs requests with equal sampling settings as one batched generation,
//! each row with its own soft prompt. A full queue is reported to the caller (HTTP 429).

use crate::decoder::FoundationModel;
use crate::error::{Error, Result};
use crate::generate::{generate, Generation, GenerationRequest, SamplingParams};
use burn::tensor::Device;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

struct Job {
    request: GenerationRequest,
    params: SamplingParams,
    reply: oneshot::Sender<Result<Generation>>,
}

/// Batching settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most requests per forward pass (1 = one at a time).
    pub max_batch: usize,
    /// How long the worker waits for more requests after the first.
    pub batch_window: Duration,
    /// Requests waiting beyond this are refused.
    pub queue: usize,
}

/// Handle to the worker; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    tx: mpsc::Sender<Job>,
}

/// Why a submission failed before reaching the model.
#[derive(Debug)]
pub enum Submit {
    /// The queue is full: try later.
    QueueFull,
    /// The worker is gone.
    Stopped,
}

impl Engine {
    /// Start the worker thread.
    pub fn start(fm: FoundationModel, device: Device, cfg: EngineConfig) -> Self {
        let (tx, rx) = mpsc::channel::<Job>(cfg.queue.max(1));
        std::thread::Builder::new()
            .name("lopa-engine".into())
            .spawn(move || worker(fm, device, cfg, rx))
            .expect("spawn engine thread");
        Engine { tx }
    }

    /// Queue a request; the receiver yields its generation.
    pub fn submit(&self, request: GenerationRequest, params: SamplingParams) -> std::result::Result<oneshot::Receiver<Result<Generation>>, Submit> {
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(Job { request, params, reply }) {
            Ok(()) => Ok(rx),
            Err(mpsc::error::TrySendError::Full(_)) => Err(Submit::QueueFull),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Submit::Stopped),
        }
    }
}

fn worker(fm: FoundationModel, device: Device, cfg: EngineConfig, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.blocking_recv() {
        let mut jobs = vec![first];
        let deadline = Instant::now() + cfg.batch_window;
        while jobs.len() < cfg.max_batch.max(1) {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(mpsc::error::TryRecvError::Empty) if Instant::now() < deadline => std::thread::sleep(Duration::from_micros(200)),
                Err(_) => break,
            }
        }
        // Rows in one forward pass must share sampling settings.
        while !jobs.is_empty() {
            let params = jobs[0].params.clone();
            let (same, rest): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| j.params == params);
            jobs = rest;
            let requests: Vec<GenerationRequest> = same.iter().map(|j| j.request.clone()).collect();
            // A panic inside the model must not take the server down: report it and go on.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| generate(&fm.decoder, &requests, &params, true, &device)));
            match result {
                Ok(Ok(gens)) => {
                    for (j, g) in same.into_iter().zip(gens) {
                        let _ = j.reply.send(Ok(g));
                    }
                }
                Ok(Err(e)) => {
                    for j in same {
                        let _ = j.reply.send(Err(Error::Backend(e.to_string())));
                    }
                }
                Err(_) => {
                    for j in same {
                        let _ = j.reply.send(Err(Error::Backend("the model failed on this batch".into())));
                    }
                }
            }
        }
    }
}
