//! The embedded engine: one worker thread owns the frozen model and serves a bounded queue.
//! It takes the first waiting request, collects more for up to `batch_window` (at most
//! `max_batch` requests and `max_batch_tokens` tokens), and runs requests with equal sampling
//! settings as one batched generation, each row with its own soft prompt. A full queue is
//! reported to the caller (HTTP 429). A request whose caller dropped its reply receiver (the
//! client went away, timed out, or its stream found a stop string) is skipped while queued and
//! its row stops at the next token while running; a soft-prompt gradient stops at the next layer.

use crate::model::decoder::FoundationModel;
use crate::error::{Error, Result};
use crate::model::generate::{generate_with, score_continuations, Generation, GenerationRequest};
use crate::model::gradient::{soft_prompt_gradients, GradientCost, GradientRequest, SoftPromptGradient};
use super::stop::StopStrings;
use crate::model::sampling::{FinishReason, SamplingParams};
use burn::tensor::Device;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

struct Job {
    request: GenerationRequest,
    params: SamplingParams,
    reply: oneshot::Sender<Result<Generation>>,
    /// Streaming requests get each token as it is chosen.
    tokens: Option<mpsc::UnboundedSender<u32>>,
    /// The row ends after the token that completes one of these.
    stops: StopStrings,
}

/// Candidate continuations to score after one prompt.
struct ScoreJob {
    request: GenerationRequest,
    candidates: Vec<Vec<u32>>,
    reply: oneshot::Sender<Result<Vec<f32>>>,
}

/// Examples to differentiate (`/v1/soft_prompt_grad`).
struct GradientJob {
    requests: Vec<GradientRequest>,
    reply: oneshot::Sender<Result<Vec<SoftPromptGradient>>>,
}

enum Work {
    Generate(Job),
    Score(ScoreJob),
    Gradient(GradientJob),
    /// Finish what is running and stop the worker.
    Shutdown,
}

impl Work {
    /// Token positions the work puts through the model at once: its share of a batch's budget.
    fn tokens(&self) -> usize {
        let soft = |r: &GenerationRequest| r.soft_prompt.as_ref().map_or(0, |z| z.rows());
        match self {
            Work::Generate(j) => soft(&j.request) + j.request.prompt_ids.len() + j.params.max_tokens,
            Work::Score(j) => j.candidates.iter().map(|c| soft(&j.request) + j.request.prompt_ids.len() + c.len()).sum(),
            Work::Gradient(j) => j.requests.iter().map(|r| r.soft_prompt.rows() + r.prompt_ids.len() + r.target_ids.len()).sum(),
            Work::Shutdown => 0,
        }
    }

    /// Whoever asked is no longer waiting for the answer.
    fn abandoned(&self) -> bool {
        match self {
            Work::Generate(j) => j.reply.is_closed(),
            Work::Score(j) => j.reply.is_closed(),
            Work::Gradient(j) => j.reply.is_closed(),
            Work::Shutdown => false,
        }
    }
}

/// Batching settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most requests per forward pass (1 = one at a time).
    pub max_batch: usize,
    /// Most token positions (soft prompt + prompt + new tokens, summed over rows) per batch.
    pub max_batch_tokens: usize,
    /// How long the worker waits for more requests after the first.
    pub batch_window: Duration,
    /// Requests waiting beyond this are refused.
    pub queue: usize,
    /// Most bytes one soft-prompt gradient computation may hold (its examples run in chunks
    /// within it; the routes refuse an example that alone would exceed it).
    pub max_gradient_bytes: u64,
}

/// Handle to the worker; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    tx: mpsc::Sender<Work>,
    counters: Arc<Counters>,
}

/// What the worker has done since it started.
#[derive(Debug, Default)]
struct Counters {
    generated: AtomicU64,
    gradient_layers: AtomicU64,
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
        let counters = Arc::new(Counters::default());
        let count = counters.clone();
        std::thread::Builder::new()
            .name("lopa-engine".into())
            .spawn(move || worker(fm, device, cfg, rx, &count))
            .expect("spawn engine thread");
        Engine { tx, counters }
    }

    /// Tokens generated since start, over all requests.
    pub fn generated_tokens(&self) -> u64 {
        self.counters.generated.load(Ordering::Relaxed)
    }

    /// Layers computed by soft-prompt gradients since start, forward and backward: a computation
    /// whose caller went away stops adding to it at the next layer.
    pub fn gradient_layers(&self) -> u64 {
        self.counters.gradient_layers.load(Ordering::Relaxed)
    }

    /// Whether the worker thread still runs: it owns the receiver, which drops when the thread
    /// ends, by return or by panic.
    pub fn is_alive(&self) -> bool {
        !self.tx.is_closed()
    }

    /// Ask the worker to stop after the work already queued, so that a host can drain this model
    /// (health answers 503 from then on and a load balancer moves traffic elsewhere).
    pub fn shutdown(&self) {
        let _ = self.tx.try_send(Work::Shutdown);
    }

    /// Queue a request; the receiver yields its generation, which ends at the first stop token,
    /// after the token that completes a stop string, or at `max_tokens`. With `tokens`, each new
    /// token is also sent there as it is chosen (streaming). Dropping the receiver cancels it.
    pub fn submit(&self, request: GenerationRequest, params: SamplingParams, stops: StopStrings, tokens: Option<mpsc::UnboundedSender<u32>>) -> std::result::Result<oneshot::Receiver<Result<Generation>>, Submit> {
        let (reply, rx) = oneshot::channel();
        self.send(Work::Generate(Job { request, params, reply, tokens, stops }))?;
        Ok(rx)
    }

    /// Queue a scoring request: the summed log-probability of each candidate continuation.
    pub fn submit_score(&self, request: GenerationRequest, candidates: Vec<Vec<u32>>) -> std::result::Result<oneshot::Receiver<Result<Vec<f32>>>, Submit> {
        let (reply, rx) = oneshot::channel();
        self.send(Work::Score(ScoreJob { request, candidates, reply }))?;
        Ok(rx)
    }

    /// dLoss/dZ for each request: a forward and backward pass through the frozen model, which
    /// takes no gradient; the graph is dropped before the reply is sent.
    pub fn submit_gradients(&self, requests: Vec<GradientRequest>) -> std::result::Result<oneshot::Receiver<Result<Vec<SoftPromptGradient>>>, Submit> {
        let (reply, rx) = oneshot::channel();
        self.send(Work::Gradient(GradientJob { requests, reply }))?;
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
        Ok(r) => r,
        Err(_) => Err(Error::Backend("the model failed on this request".into())),
    }
}

/// The next batch: the first live request, then more within the window and the budgets. A
/// request that would overflow the token budget waits in `held` for the next batch.
fn next_batch(rx: &mut mpsc::Receiver<Work>, held: &mut Option<Work>, cfg: &EngineConfig) -> Option<Vec<Work>> {
    let first = loop {
        let w = match held.take() {
            Some(w) => w,
            None => rx.blocking_recv()?,
        };
        if !w.abandoned() {
            break w;
        }
    };
    let mut tokens = first.tokens();
    let mut work = vec![first];
    let deadline = Instant::now() + cfg.batch_window;
    while work.len() < cfg.max_batch.max(1) && !matches!(work.last(), Some(Work::Shutdown)) {
        match rx.try_recv() {
            Ok(w) if w.abandoned() => {}
            Ok(w) if tokens + w.tokens() > cfg.max_batch_tokens => {
                *held = Some(w);
                break;
            }
            Ok(w) => {
                tokens += w.tokens();
                work.push(w);
            }
            Err(mpsc::error::TryRecvError::Empty) if Instant::now() < deadline => std::thread::sleep(Duration::from_micros(200)),
            Err(_) => break,
        }
    }
    Some(work)
}

fn worker(fm: FoundationModel, device: Device, cfg: EngineConfig, mut rx: mpsc::Receiver<Work>, counters: &Counters) {
    // Gradients run the same (plain) weights as constants under an autodiff soft prompt.
    let autodiff = device.clone().autodiff();
    let cost = GradientCost::of(&fm.config);
    let mut held = None;
    let mut stopping = false;
    while !stopping {
        let Some(work) = next_batch(&mut rx, &mut held, &cfg) else { return };
        let mut jobs = vec![];
        for w in work {
            match w {
                Work::Generate(j) => jobs.push(j),
                Work::Score(j) => {
                    let soft = j.request.soft_prompt.as_ref();
                    let r = guarded(|| score_continuations(&fm.decoder, &j.request.prompt_ids, soft, &j.candidates, &device));
                    let _ = j.reply.send(r);
                }
                Work::Gradient(j) => {
                    let mut step = || {
                        counters.gradient_layers.fetch_add(1, Ordering::Relaxed);
                        !j.reply.is_closed()
                    };
                    let r = guarded(|| soft_prompt_gradients(&fm.decoder, &cost, &j.requests, cfg.max_gradient_bytes, &autodiff, &mut step));
                    let _ = j.reply.send(r);
                }
                Work::Shutdown => stopping = true,
            }
        }
        // Rows in one forward pass must share sampling settings.
        while !jobs.is_empty() {
            let params = jobs[0].params.clone();
            let (same, rest): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| j.params == params);
            jobs = rest;
            let requests: Vec<GenerationRequest> = same.iter().map(|j| j.request.clone()).collect();
            let mut texts: Vec<Vec<u32>> = vec![vec![]; same.len()];
            let mut stopped = vec![false; same.len()];
            let mut scans: Vec<StopStrings> = same.iter().map(|j| j.stops.clone()).collect();
            let mut on_token = |r: usize, t: u32, _lp: f32| {
                counters.generated.fetch_add(1, Ordering::Relaxed);
                let job = &same[r];
                if let Some(tx) = &job.tokens {
                    let _ = tx.send(t);
                }
                if !scans[r].is_empty() {
                    texts[r].push(t);
                    let text = fm.tokenizer.decode(&texts[r]).unwrap_or_default();
                    if scans[r].find(&text).is_some() {
                        stopped[r] = true;
                        return false;
                    }
                }
                !job.reply.is_closed()
            };
            let result = guarded(|| generate_with(&fm.decoder, &requests, &params, &device, &mut on_token));
            match result {
                Ok(gens) => {
                    for ((j, mut g), stop) in same.into_iter().zip(gens).zip(stopped) {
                        if stop {
                            g.finish_reason = FinishReason::Stop;
                        }
                        let _ = j.reply.send(Ok(g));
                    }
                }
                Err(e) => {
                    for j in same {
                        // Input errors stay input errors (a 4xx); anything else is the server's.
                        let e = match &e {
                            Error::Input(m) => Error::Input(m.clone()),
                            other => Error::Backend(other.to_string()),
                        };
                        let _ = j.reply.send(Err(e));
                    }
                }
            }
        }
    }
}
