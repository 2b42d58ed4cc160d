//! The batching engine: one worker thread owns the frozen model and serves a bounded queue.
//! It takes the first waiting request, collects more for up to `batch_window` (at most
//! `max_batch`), and runs requests with equal sampling settings as one batched generation,
//! each row with its own soft prompt. A full queue is reported to the caller (HTTP 429).

use crate::decoder::FoundationModel;
use crate::error::{Error, Result};
use crate::generate::{generate_with, score_continuations, Generation, GenerationRequest, SamplingParams};
use burn::tensor::Device;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

struct Job {
    request: GenerationRequest,
    params: SamplingParams,
    reply: oneshot::Sender<Result<Generation>>,
    /// Streaming requests get each token as it is chosen.
    tokens: Option<mpsc::UnboundedSender<u32>>,
}

/// Candidate continuations to score after one prompt.
struct ScoreJob {
    request: GenerationRequest,
    candidates: Vec<Vec<u32>>,
    reply: oneshot::Sender<Result<Vec<f32>>>,
}

enum Work {
    Generate(Job),
    Score(ScoreJob),
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
    tx: mpsc::Sender<Work>,
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
        let (tx, rx) = mpsc::channel::<Work>(cfg.queue.max(1));
        std::thread::Builder::new()
            .name("lopa-engine".into())
            .spawn(move || worker(fm, device, cfg, rx))
            .expect("spawn engine thread");
        Engine { tx }
    }

    /// Queue a request; the receiver yields its generation.
    pub fn submit(&self, request: GenerationRequest, params: SamplingParams) -> std::result::Result<oneshot::Receiver<Result<Generation>>, Submit> {
        let (reply, rx) = oneshot::channel();
        self.send(Work::Generate(Job { request, params, reply, tokens: None }))?;
        Ok(rx)
    }

    /// Like [`Self::submit`], also sending each new token on `tokens` as it is generated.
    pub fn submit_streaming(&self, request: GenerationRequest, params: SamplingParams, tokens: mpsc::UnboundedSender<u32>) -> std::result::Result<oneshot::Receiver<Result<Generation>>, Submit> {
        let (reply, rx) = oneshot::channel();
        self.send(Work::Generate(Job { request, params, reply, tokens: Some(tokens) }))?;
        Ok(rx)
    }

    /// Queue a scoring request: the summed log-probability of each candidate continuation.
    pub fn submit_score(&self, request: GenerationRequest, candidates: Vec<Vec<u32>>) -> std::result::Result<oneshot::Receiver<Result<Vec<f32>>>, Submit> {
        let (reply, rx) = oneshot::channel();
        self.send(Work::Score(ScoreJob { request, candidates, reply }))?;
        Ok(rx)
    }

    fn send(&self, w: Work) -> std::result::Result<(), Submit> {
        match self.tx.try_send(w) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(Submit::QueueFull),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Submit::Stopped),
        }
    }
}

/// Run `f`, turning a panic inside the model into an error so the worker keeps serving.
fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(|e| Error::Backend(e.to_string())),
        Err(_) => Err(Error::Backend("the model failed on this request".into())),
    }
}

fn worker(fm: FoundationModel, device: Device, cfg: EngineConfig, mut rx: mpsc::Receiver<Work>) {
    while let Some(first) = rx.blocking_recv() {
        let mut work = vec![first];
        let deadline = Instant::now() + cfg.batch_window;
        while work.len() < cfg.max_batch.max(1) {
            match rx.try_recv() {
                Ok(j) => work.push(j),
                Err(mpsc::error::TryRecvError::Empty) if Instant::now() < deadline => std::thread::sleep(Duration::from_micros(200)),
                Err(_) => break,
            }
        }
        let mut jobs = vec![];
        for w in work {
            match w {
                Work::Generate(j) => jobs.push(j),
                Work::Score(j) => {
                    let soft = j.request.soft_prompt.as_ref().map(|(z, m)| (z.as_slice(), *m));
                    let r = guarded(|| score_continuations(&fm.decoder, &j.request.prompt_ids, soft, &j.candidates, &device));
                    let _ = j.reply.send(r);
                }
            }
        }
        // Rows in one forward pass must share sampling settings.
        while !jobs.is_empty() {
            let params = jobs[0].params.clone();
            let (same, rest): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| j.params == params);
            jobs = rest;
            let requests: Vec<GenerationRequest> = same.iter().map(|j| j.request.clone()).collect();
            let streams: Vec<Option<mpsc::UnboundedSender<u32>>> = same.iter().map(|j| j.tokens.clone()).collect();
            let mut on_token = |r: usize, t: u32, _lp: f32| {
                if let Some(Some(tx)) = streams.get(r) {
                    let _ = tx.send(t);
                }
            };
            match guarded(|| generate_with(&fm.decoder, &requests, &params, true, &device, &mut on_token)) {
                Ok(gens) => {
                    for (j, g) in same.into_iter().zip(gens) {
                        let _ = j.reply.send(Ok(g));
                    }
                }
                Err(e) => {
                    for j in same {
                        let _ = j.reply.send(Err(Error::Backend(e.to_string())));
                    }
                }
            }
        }
    }
}
