//! Training an adaptation against a frozen foundation model: a soft-prompt generator (LoPA §3;
//! the PT and IDPG baselines share the loop) or a LoRA (the paper's server-side reference). Only
//! the adaptation is trainable; the encoder runs once per example up front (it is frozen, so f(x)
//! never changes) and the decoder's parameters are `no_grad`.

pub mod checkpoint;
pub mod data;
pub mod eval;
pub mod examples;
pub mod judge;
pub mod plot;

pub use data::{label_token_ids, length_bucketed_batches, prepare, shuffle, Prepared};
pub use eval::{answer_logits, evaluate, generate_answers, label_probabilities, predict, zero_shot};

use crate::task::{Metric, TaskKind, TaskSpec};
use examples::load_rows;
use crate::adapter::{Adapter, AdapterMeta};
use crate::error::{Error, Result};
use crate::model::adaptation::{Adaptation, AdaptationConfig};
use crate::model::decoder::FoundationModel;
use crate::model::encoder::SentenceEncoder;
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Everything a training run needs besides the models.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    pub task: TaskSpec,
    pub train_file: PathBuf,
    pub dev_file: PathBuf,
    pub adaptation: AdaptationConfig,
    pub learning_rate: f64,
    /// Fraction of steps with linear warm-up, then constant (paper: 6%).
    pub warmup_ratio: f64,
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    pub weight_decay: f64,
    pub epochs: usize,
    pub batch_size: usize,
    /// Longest prompt in tokens (soft prompt excluded).
    pub max_length: usize,
    pub seed: u64,
    /// Use only the first N shuffled training rows (0 = all).
    pub train_limit: usize,
    /// Use only the first N dev rows (0 = all).
    pub dev_limit: usize,
    /// Also write the resume checkpoint every N steps inside an epoch (0: at epoch ends only).
    #[serde(default)]
    pub checkpoint_every: usize,
}

/// The learning rate after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// The paper's: the base rate until the end.
    #[default]
    Constant,
    /// Linear decay to 0 at the last step.
    Linear,
}

/// Learning rate at `step` (1-based) of `total`: linear warm-up over `warmup` steps, then
/// constant or linear decay to 0.
pub fn learning_rate(base: f64, schedule: LrSchedule, step: usize, warmup: usize, total: usize) -> f64 {
    let warm = (step as f64 / warmup.max(1) as f64).min(1.0);
    let decay = match schedule {
        LrSchedule::Linear if step > warmup => (total.saturating_sub(step) as f64 / (total - warmup).max(1) as f64).max(0.0),
        _ => 1.0,
    };
    base * warm * decay
}

/// Per-epoch record written to `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    /// What the dev score is.
    #[serde(default)]
    pub metric: Metric,
    pub train_loss: f64,
    /// Accuracy for classification, pass@1 or exact match for generation.
    pub dev_accuracy: f64,
    pub dev_f1: Option<f64>,
    pub samples_per_sec: f64,
    pub seconds: f64,
}

/// Mean cross-entropy over all answer tokens of the batch, over the full vocabulary.
pub fn loss(logits: Tensor<2>, batch: &[&Prepared], device: &Device) -> Tensor<1> {
    let targets: Vec<i64> = batch.iter().flat_map(|p| p.answer.iter().map(|&t| t as i64)).collect();
    let n = targets.len();
    let t = Tensor::<2, Int>::from_data(TensorData::new(targets, [n, 1]), device);
    log_softmax(logits, 1).gather(1, t).mean().neg()
}

/// Progress reporting hook (the CLI draws a progress bar with it).
pub trait Progress {
    /// After each optimizer step.
    fn step(&mut self, epoch: usize, step: usize, steps: usize, loss: f64, samples_per_sec: f64);
    /// After each epoch's evaluation.
    fn epoch(&mut self, m: &EpochMetrics);
}

/// No-op progress.
pub struct Quiet;
impl Progress for Quiet {
    fn step(&mut self, _: usize, _: usize, _: usize, _: f64, _: f64) {}
    fn epoch(&mut self, _: &EpochMetrics) {}
}

/// Outcome of [`train`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainSummary {
    pub best_epoch: usize,
    pub best_dev_accuracy: f64,
    pub best_dev_f1: Option<f64>,
    pub zero_shot_dev_accuracy: Option<f64>,
    pub trainable_parameters: usize,
    pub train_examples: usize,
    pub dev_examples: usize,
    pub seconds: f64,
    pub samples_per_sec: f64,
    pub epochs: Vec<EpochMetrics>,
}

/// The models a run trains against, and where each computes.
#[derive(Clone, Copy)]
pub struct Models<'a> {
    /// The frozen model, on `device`.
    pub fm: &'a FoundationModel,
    /// The frozen encoder; recorded in the adapter, and read by the methods that use f(x).
    pub encoder: Option<&'a SentenceEncoder>,
    /// Where the encoder's features are computed (once, before training).
    pub encoder_device: &'a Device,
    /// The autodiff device training runs on.
    pub device: &'a Device,
}

/// Whether a run starts afresh or continues from `run_dir/last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Fresh,
    Resume,
}

/// Train, evaluating on dev after every epoch; the best adapter goes to `run_dir/best`, the last
/// to `run_dir/last` with `checkpoint.json`.
pub fn train(cfg: &TrainConfig, models: Models, run_dir: &Path, start: Start, progress: &mut dyn Progress) -> Result<TrainSummary> {
    let started = Instant::now();
    let Models { fm, encoder, device, .. } = models;
    let (train_data, dev_data) = load_data(cfg, models)?;
    std::fs::create_dir_all(run_dir).map_err(|e| Error::io(run_dir, e))?;
    let meta = AdapterMeta::new(&cfg.adaptation, &cfg.task, fm, encoder);
    let last = run_dir.join("last");
    let (mut adaptation, mut optim, mut ck) = begin(cfg, models, &last, start)?;
    let steps_per_epoch = train_data.len().div_ceil(cfg.batch_size);
    let total_steps = steps_per_epoch * cfg.epochs;
    let warmup = ((total_steps as f64) * cfg.warmup_ratio).ceil().max(1.0) as usize;
    for epoch in ck.epoch + 1..=cfg.epochs {
        let t0 = Instant::now();
        let secs_before = ck.train_secs;
        let batches = length_bucketed_batches(&train_data, cfg.batch_size, crate::rng::pass_seed(cfg.seed, epoch));
        // A checkpoint inside this epoch has done its first `step_in_epoch` batches.
        for (i, idx) in batches.iter().enumerate().skip(ck.step_in_epoch) {
            // Dropout draws from a seed fixed by the step, so a resumed run draws the same masks.
            device.seed(crate::rng::step_seed(cfg.seed, ck.step + 1));
            let batch: Vec<&Prepared> = idx.iter().map(|&j| &train_data[j]).collect();
            let logits = answer_logits(&fm.decoder, Some(&adaptation), &batch, device)?;
            let l = loss(logits, &batch, device);
            let lv: f32 = l.clone().into_scalar();
            if !lv.is_finite() {
                return Err(Error::Backend(format!("loss became {lv} at epoch {epoch} step {}", i + 1)));
            }
            let mut grads = l.backward();
            let grads = GradientsParams::from_module(&mut grads, &adaptation);
            ck.step += 1;
            let lr = learning_rate(cfg.learning_rate, cfg.lr_schedule, ck.step, warmup, total_steps);
            adaptation = optim.step(lr, adaptation, grads);
            ck.loss_sum += lv as f64;
            ck.seen += batch.len();
            ck.step_in_epoch = i + 1;
            ck.train_secs = secs_before + t0.elapsed().as_secs_f64();
            progress.step(epoch, i + 1, steps_per_epoch, lv as f64, ck.seen as f64 / ck.train_secs.max(1e-9));
            if cfg.checkpoint_every > 0 && ck.step.is_multiple_of(cfg.checkpoint_every) && i + 1 < steps_per_epoch {
                let adapter = Adapter { meta: meta.clone(), weights: adaptation.to_tensors()? };
                checkpoint::save(&last, &adapter, &optim, &adaptation, &ck)?;
            }
        }
        let plain_fm = FoundationModel { decoder: fm.decoder.valid(), ..fm.clone() };
        let (acc, f1) = evaluate(&cfg.task, &plain_fm, Some(&adaptation.valid()), &dev_data, cfg.batch_size.max(16), &device.clone().inner())?;
        let m = EpochMetrics {
            epoch,
            metric: cfg.task.metric,
            train_loss: ck.loss_sum / steps_per_epoch as f64,
            dev_accuracy: acc,
            dev_f1: f1,
            samples_per_sec: ck.seen as f64 / ck.train_secs.max(1e-9),
            seconds: t0.elapsed().as_secs_f64(),
        };
        progress.epoch(&m);
        let adapter = Adapter { meta: meta.clone(), weights: adaptation.to_tensors()? };
        record_epoch(run_dir, &mut ck, m, &adapter)?;
        checkpoint::save(&last, &adapter, &optim, &adaptation, &ck)?;
    }
    Ok(TrainSummary {
        best_epoch: ck.best_epoch,
        best_dev_accuracy: ck.best_dev_accuracy,
        best_dev_f1: ck.best_dev_f1,
        zero_shot_dev_accuracy: None,
        trainable_parameters: cfg.adaptation.trainable_parameters(),
        train_examples: train_data.len(),
        dev_examples: dev_data.len(),
        seconds: started.elapsed().as_secs_f64(),
        samples_per_sec: ck.seen as f64 / ck.train_secs.max(1e-9),
        epochs: ck.epochs,
    })
}

/// Every check and every example prepared before the first step: (train, dev). A
/// classification example trains on its label word.
fn load_data(cfg: &TrainConfig, models: Models) -> Result<(Vec<Prepared>, Vec<Prepared>)> {
    if !models.device.is_autodiff() {
        return Err(Error::Config("training needs an autodiff device".into()));
    }
    if cfg.batch_size == 0 || cfg.epochs == 0 {
        return Err(Error::Config("batch_size and epochs must be positive".into()));
    }
    if cfg.adaptation.uses_encoder() && models.encoder.is_none() {
        return Err(Error::Config(format!("method {} needs an encoder", cfg.adaptation.kind().name())));
    }
    let label_ids = label_token_ids(&cfg.task, models.fm)?;
    let mut train_ex = load_rows(&cfg.task, &cfg.train_file, cfg.task.train_rows)?;
    let mut dev_ex = load_rows(&cfg.task, &cfg.dev_file, cfg.task.dev_rows)?;
    shuffle(&mut train_ex, cfg.seed);
    if cfg.train_limit > 0 {
        train_ex.truncate(cfg.train_limit);
    }
    if cfg.dev_limit > 0 {
        dev_ex.truncate(cfg.dev_limit);
    }
    let enc = if cfg.adaptation.uses_encoder() { models.encoder } else { None };
    let mut train_data = prepare(&train_ex, &cfg.train_file, models.fm, enc, cfg.max_length, models.encoder_device)?;
    let dev_data = prepare(&dev_ex, &cfg.dev_file, models.fm, enc, cfg.max_length, models.encoder_device)?;
    if cfg.task.kind == TaskKind::Classification {
        train_data.iter_mut().for_each(|p| p.answer = vec![label_ids[p.label]]);
    }
    Ok((train_data, dev_data))
}

/// A fresh adaptation and optimizer, or the ones `last` holds with the position reached there.
fn begin(cfg: &TrainConfig, models: Models, last: &Path, start: Start) -> Result<(Adaptation, burn::optim::ModuleOptimizer, checkpoint::Position)> {
    let optim = AdamWConfig::new().with_weight_decay(cfg.weight_decay as f32).init();
    if start == Start::Fresh {
        models.device.seed(cfg.seed);
        return Ok((cfg.adaptation.init(models.device)?, optim, checkpoint::Position::start()));
    }
    let run_dir = last.parent().unwrap_or(last);
    let saved = checkpoint::load(last).map_err(|e| Error::Config(format!("--resume: no usable checkpoint in {}: {e}", run_dir.display())))?;
    saved.adapter.meta.check_compatible(models.fm, models.encoder)?;
    let adaptation = Adaptation::from_tensors(&saved.adapter.meta.adaptation, &saved.adapter.weights, models.device)?;
    let optim = match &saved.optimizer {
        Some(bytes) => checkpoint::load_optimizer(optim, &adaptation, bytes)?,
        None => optim,
    };
    Ok((adaptation, optim, saved.position))
}

/// An epoch's metrics into the position and `metrics.jsonl`, its adapter into `best/` when it
/// beats the best so far, and the loss curve.
fn record_epoch(run_dir: &Path, ck: &mut checkpoint::Position, m: EpochMetrics, adapter: &Adapter) -> Result<()> {
    let better = m.dev_f1.unwrap_or(m.dev_accuracy) > ck.best_dev_f1.unwrap_or(ck.best_dev_accuracy);
    if better {
        ck.best_epoch = m.epoch;
        ck.best_dev_accuracy = m.dev_accuracy;
        ck.best_dev_f1 = m.dev_f1;
        adapter.save(&run_dir.join("best"))?;
    }
    ck.epoch = m.epoch;
    ck.step_in_epoch = 0;
    ck.loss_sum = 0.0;
    ck.epochs.push(m);
    // Rewritten whole, so an epoch run again after a resume is not recorded twice.
    let lines: String = ck.epochs.iter().map(|m| serde_json::to_string(m).expect("json") + "\n").collect();
    crate::fs::write_atomic(&run_dir.join("metrics.jsonl"), lines.as_bytes())?;
    crate::training::plot::loss_curve_svg(&ck.epochs, &run_dir.join("loss.svg"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learning_rate_schedules() {
        // 10 steps, 2 of warm-up.
        let lr = |sched, step| learning_rate(1.0, sched, step, 2, 10);
        assert_eq!([lr(LrSchedule::Constant, 1), lr(LrSchedule::Constant, 2), lr(LrSchedule::Constant, 10)], [0.5, 1.0, 1.0]);
        assert_eq!([lr(LrSchedule::Linear, 1), lr(LrSchedule::Linear, 2), lr(LrSchedule::Linear, 6), lr(LrSchedule::Linear, 10)], [0.5, 1.0, 0.5, 0.0]);
    }
}
