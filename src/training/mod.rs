//! Training an adaptation against a frozen foundation model: a soft-prompt generator (LoPA §3;
//! the PT and IDPG baselines share the loop) or a LoRA (the paper's server-side reference). Only
//! the adaptation is trainable; the encoder runs once per example up front (it is frozen, so f(x)
//! never changes) and the decoder's parameters are `no_grad`.

pub mod plot;

use crate::adapter::{Adapter, AdapterMeta};
use crate::model::decoder::{Decoder, FoundationModel};
use crate::model::encoder::SentenceEncoder;
use crate::error::{Error, Result};
use crate::model::adaptation::{Adaptation, AdaptationConfig};
use crate::model::generator::PromptGenerator;
use crate::adapter::task::{load_rows, scores, Example, Metric, TaskKind, TaskSpec};
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

/// A prepared example: prompt token ids, the answer tokens the model is trained to produce
/// after them (the label word for classification), f(x), and the label.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub ids: Vec<u32>,
    pub answer: Vec<u32>,
    pub features: Vec<f32>,
    pub label: usize,
    /// Generation tasks: the source row (for the pass@1 check).
    pub fields: std::collections::BTreeMap<String, String>,
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

/// The label words' token ids; each must be a single token of the frozen model.
pub fn label_token_ids(spec: &TaskSpec, fm: &FoundationModel) -> Result<Vec<u32>> {
    if spec.kind == TaskKind::Generation {
        return Ok(vec![]);
    }
    spec.labels()
        .iter()
        .map(|l| {
            let w = &spec.label_words[*l];
            let ids = fm.tokenizer.encode(w)?;
            match ids[..] {
                [id] => Ok(id),
                _ => Err(Error::Config(format!("label word {w:?} is {} tokens for this model; it must be exactly one", ids.len()))),
            }
        })
        .collect()
}

/// Tokenize and embed examples; sequences that are too long are reported with file and line.
pub fn prepare(examples: &[Example], file: &Path, fm: &FoundationModel, encoder: Option<&SentenceEncoder>, max_length: usize, enc_device: &Device) -> Result<Vec<Prepared>> {
    let limit = max_length.min(fm.config.max_position_embeddings);
    let mut out = Vec::with_capacity(examples.len());
    for ex in examples {
        let ids = fm.tokenizer.encode(&ex.prompt)?;
        let answer = if ex.answer.is_empty() { vec![] } else { fm.tokenizer.encode(&ex.answer)? };
        if ids.len() + answer.len() > limit {
            return Err(Error::Input(format!(
                "{}:{}: prompt is {} tokens, longer than the maximum of {limit}",
                file.display(),
                ex.line,
                ids.len() + answer.len()
            )));
        }
        if ids.is_empty() {
            return Err(Error::Input(format!("{}:{}: empty prompt", file.display(), ex.line)));
        }
        out.push(Prepared { ids, answer, features: vec![], label: ex.label, fields: ex.fields.clone() });
    }
    if let Some(enc) = encoder {
        for (chunk, prep) in examples.chunks(64).zip(out.chunks_mut(64)) {
            let texts: Vec<&str> = chunk.iter().map(|e| e.encoder_text.as_str()).collect();
            let f = crate::device::to_vec(enc.embed(&texts, enc_device)?)?;
            let h = enc.hidden_size();
            for (i, p) in prep.iter_mut().enumerate() {
                p.features = f[i * h..(i + 1) * h].to_vec();
            }
        }
    }
    Ok(out)
}

/// Soft prompts `[b, m, d]` for a batch: f(x) of each example (zeros for methods without an
/// encoder) through the generator.
fn soft_prompts(generator: &PromptGenerator, batch: &[&Prepared], device: &Device) -> Result<Tensor<3>> {
    let h = generator.config.encoder_dim;
    let feats: Vec<f32> = batch.iter().flat_map(|p| if p.features.is_empty() { vec![0.0; h] } else { p.features.clone() }).collect();
    generator.forward(Tensor::<2>::from_data(TensorData::new(feats, [batch.len(), h]), device))
}

/// Teacher-forced logits for every answer token behind each example's soft prompt
/// (`[Σ answer lengths, vocab]`; an empty answer counts as the one slot after the prompt, which
/// is what classification scores). See [`crate::model::generate::teacher_forced_logits`].
/// `adaptation` is none for the bare frozen model.
pub fn answer_logits(decoder: &Decoder, adaptation: Option<&Adaptation>, batch: &[&Prepared], device: &Device) -> Result<Tensor<2>> {
    let z = adaptation.and_then(Adaptation::generator).map(|g| soft_prompts(g, batch, device)).transpose()?;
    let rows: Vec<(&[u32], &[u32])> = batch.iter().map(|p| (p.ids.as_slice(), p.answer.as_slice())).collect();
    crate::model::generate::teacher_forced_logits(&adapted(decoder, adaptation), z, &rows, device)
}

/// The decoder an adaptation's outputs go to: the frozen one, or the frozen one with a LoRA.
fn adapted<'a>(decoder: &'a Decoder, adaptation: Option<&Adaptation>) -> std::borrow::Cow<'a, Decoder> {
    match adaptation {
        Some(a) => a.decoder(decoder),
        None => std::borrow::Cow::Borrowed(decoder),
    }
}

/// Mean cross-entropy over all answer tokens of the batch, over the full vocabulary.
pub fn loss(logits: Tensor<2>, batch: &[&Prepared], device: &Device) -> Tensor<1> {
    let targets: Vec<i64> = batch.iter().flat_map(|p| p.answer.iter().map(|&t| t as i64)).collect();
    let n = targets.len();
    let t = Tensor::<2, Int>::from_data(TensorData::new(targets, [n, 1]), device);
    log_softmax(logits, 1).gather(1, t).mean().neg()
}

/// Classification predictions (argmax over the label words only) for `data`.
pub fn predict(decoder: &Decoder, adaptation: Option<&Adaptation>, data: &[Prepared], label_ids: &[u32], batch_size: usize, device: &Device) -> Result<Vec<usize>> {
    Ok(label_probabilities(decoder, adaptation, data, label_ids, batch_size, device)?
        .iter()
        .map(|p| (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap_or(0))
        .collect())
}

/// Probabilities of each label word at the slot, renormalised over the label words.
pub fn label_probabilities(decoder: &Decoder, adaptation: Option<&Adaptation>, data: &[Prepared], label_ids: &[u32], batch_size: usize, device: &Device) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(data.len());
    let v = decoder.vocab_size();
    for chunk in data.chunks(batch_size.max(1)) {
        // Only the slot after the prompt is scored.
        let slots: Vec<Prepared> = chunk.iter().map(|p| Prepared { answer: vec![], ..p.clone() }).collect();
        let refs: Vec<&Prepared> = slots.iter().collect();
        let logits = crate::device::to_vec(answer_logits(decoder, adaptation, &refs, device)?)?;
        for r in 0..chunk.len() {
            let picked: Vec<f32> = label_ids.iter().map(|&i| logits[r * v + i as usize]).collect();
            out.push(crate::model::sampling::log_softmax(&picked).iter().map(|x| x.exp()).collect());
        }
    }
    Ok(out)
}

/// Greedy answers for a generation task, cut at the first newline.
pub fn generate_answers(fm: &FoundationModel, adaptation: Option<&Adaptation>, data: &[Prepared], max_tokens: usize, batch_size: usize, device: &Device) -> Result<Vec<String>> {
    use crate::model::generate::{generate, GenerationRequest};
    use crate::model::sampling::SamplingParams;
    use crate::model::SoftPrompt;
    let d = fm.decoder.hidden_size();
    let params = SamplingParams { max_tokens, stop_token_ids: fm.tokenizer.eos_token_ids.clone(), ..Default::default() };
    let mut out = Vec::with_capacity(data.len());
    for chunk in data.chunks(batch_size.max(1)) {
        let refs: Vec<&Prepared> = chunk.iter().collect();
        let generator = adaptation.and_then(Adaptation::generator);
        let m = generator.map_or(0, |g| g.config.prompt_len());
        let z = match generator {
            Some(g) => crate::device::to_vec(soft_prompts(g, &refs, device)?)?,
            None => vec![],
        };
        let row = |r: usize| SoftPrompt::new(z[r * m * d..(r + 1) * m * d].to_vec(), m, d);
        let reqs: Vec<GenerationRequest> = chunk
            .iter()
            .enumerate()
            .map(|(r, p)| Ok(GenerationRequest { prompt_ids: p.ids.clone(), soft_prompt: if m > 0 { Some(row(r)?) } else { None } }))
            .collect::<Result<_>>()?;
        for g in generate(&adapted(&fm.decoder, adaptation), &reqs, &params, true, device)? {
            let text = fm.tokenizer.decode(&g.tokens)?;
            out.push(text.split('\n').next().unwrap_or("").to_string());
        }
    }
    Ok(out)
}

/// The task's dev score: (accuracy or pass@1 / exact match, F1 if the task has one).
pub fn evaluate(task: &TaskSpec, fm: &FoundationModel, adaptation: Option<&Adaptation>, data: &[Prepared], batch_size: usize, device: &Device) -> Result<(f64, Option<f64>)> {
    match task.kind {
        TaskKind::Classification => {
            let label_ids = label_token_ids(task, fm)?;
            let preds = predict(&fm.decoder, adaptation, data, &label_ids, batch_size, device)?;
            let gold: Vec<usize> = data.iter().map(|p| p.label).collect();
            let positive = task.positive_label.as_ref().and_then(|p| task.labels().iter().position(|l| l == p));
            Ok(scores(&preds, &gold, positive))
        }
        TaskKind::Generation => {
            let max_tokens = data.iter().map(|p| p.answer.len()).max().unwrap_or(16) + 8;
            let answers = generate_answers(fm, adaptation, data, max_tokens, batch_size, device)?;
            let mut ok = 0usize;
            for (p, a) in data.iter().zip(&answers) {
                let pass = match task.metric {
                    Metric::PassAt1 => task.passes(&p.fields, a, 5),
                    _ => fm.tokenizer.decode(&p.answer)?.trim() == a.trim(),
                };
                ok += pass as usize;
            }
            Ok((ok as f64 / data.len().max(1) as f64, None))
        }
    }
}

/// Batches for one epoch: a shuffled order, sorted by length within windows of 32 batches (so a
/// batch pads little), then the batches shuffled. Every example appears exactly once.
pub fn length_bucketed_batches(data: &[Prepared], batch_size: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..data.len()).collect();
    shuffle(&mut order, seed);
    let len = |j: &usize| data[*j].ids.len() + data[*j].answer.len();
    for window in order.chunks_mut(batch_size * 32) {
        window.sort_by_key(len);
    }
    let mut batches: Vec<Vec<usize>> = order.chunks(batch_size).map(<[usize]>::to_vec).collect();
    shuffle(&mut batches, seed.rotate_left(17));
    batches
}

/// Deterministic shuffle (Fisher–Yates with the crate's SplitMix64).
pub fn shuffle<T>(v: &mut [T], seed: u64) {
    let mut rng = crate::rng::Rng::new(seed);
    for i in (1..v.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
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

/// State written after each epoch so that `--resume` continues from it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checkpoint {
    epoch: usize,
    step: usize,
    best_epoch: usize,
    best_dev_accuracy: f64,
    best_dev_f1: Option<f64>,
    epochs: Vec<EpochMetrics>,
}

/// Train, evaluating on dev after every epoch; the best adapter goes to `run_dir/best`, the last
/// to `run_dir/last` with `checkpoint.json`. `device` must be an autodiff device.
#[allow(clippy::too_many_arguments)]
pub fn train(
    cfg: &TrainConfig,
    fm: &FoundationModel,
    encoder: Option<&SentenceEncoder>,
    enc_device: &Device,
    device: &Device,
    run_dir: &Path,
    resume: bool,
    progress: &mut dyn Progress,
) -> Result<TrainSummary> {
    let started = Instant::now();
    if !device.is_autodiff() {
        return Err(Error::Config("training needs an autodiff device".into()));
    }
    if cfg.batch_size == 0 || cfg.epochs == 0 {
        return Err(Error::Config("batch_size and epochs must be positive".into()));
    }
    if cfg.adaptation.uses_encoder() && encoder.is_none() {
        return Err(Error::Config(format!("method {} needs an encoder", cfg.adaptation.kind().name())));
    }
    // Validate everything before the first step.
    let label_ids = label_token_ids(&cfg.task, fm)?;
    let mut train_ex = load_rows(&cfg.task, &cfg.train_file, cfg.task.train_rows)?;
    let mut dev_ex = load_rows(&cfg.task, &cfg.dev_file, cfg.task.dev_rows)?;
    shuffle(&mut train_ex, cfg.seed);
    if cfg.train_limit > 0 {
        train_ex.truncate(cfg.train_limit);
    }
    if cfg.dev_limit > 0 {
        dev_ex.truncate(cfg.dev_limit);
    }
    let enc = if cfg.adaptation.uses_encoder() { encoder } else { None };
    let mut train_data = prepare(&train_ex, &cfg.train_file, fm, enc, cfg.max_length, enc_device)?;
    let dev_data = prepare(&dev_ex, &cfg.dev_file, fm, enc, cfg.max_length, enc_device)?;
    if cfg.task.kind == TaskKind::Classification {
        // The answer to train on is the label word.
        train_data.iter_mut().for_each(|p| p.answer = vec![label_ids[p.label]]);
    }
    std::fs::create_dir_all(run_dir).map_err(|e| Error::io(run_dir, e))?;
    std::fs::write(run_dir.join("config.json"), serde_json::to_vec_pretty(cfg).expect("json")).map_err(|e| Error::io(run_dir, e))?;

    device.seed(cfg.seed);
    let meta = AdapterMeta::new(&cfg.adaptation, &cfg.task, fm, encoder);
    let (mut adaptation, mut ck) = match resume.then(|| Adapter::load(&run_dir.join("last"))).transpose() {
        Ok(Some(a)) => {
            a.meta.check_compatible(fm, encoder)?;
            let ck: Checkpoint = serde_json::from_slice(&crate::error::read_file(run_dir.join("last/checkpoint.json"))?)
                .map_err(|e| Error::Config(format!("checkpoint.json: {e}")))?;
            (Adaptation::from_tensors(&a.meta.adaptation, &a.weights, device)?, ck)
        }
        Ok(None) => (cfg.adaptation.init(device)?, Checkpoint { epoch: 0, step: 0, best_epoch: 0, best_dev_accuracy: -1.0, best_dev_f1: None, epochs: vec![] }),
        Err(e) => return Err(Error::Config(format!("--resume: no usable checkpoint in {}: {e}", run_dir.display()))),
    };
    let mut optim = AdamWConfig::new().with_weight_decay(cfg.weight_decay as f32).init();
    let steps_per_epoch = train_data.len().div_ceil(cfg.batch_size);
    let total_steps = steps_per_epoch * cfg.epochs;
    let warmup = ((total_steps as f64) * cfg.warmup_ratio).ceil().max(1.0) as usize;
    let mut seen = 0usize;
    let mut train_secs = 0.0f64;
    for epoch in ck.epoch + 1..=cfg.epochs {
        let t0 = Instant::now();
        let batches = length_bucketed_batches(&train_data, cfg.batch_size, cfg.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9));
        let mut loss_sum = 0.0;
        for (i, idx) in batches.iter().enumerate() {
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
            loss_sum += lv as f64;
            seen += batch.len();
            let sps = seen as f64 / (train_secs + t0.elapsed().as_secs_f64()).max(1e-9);
            progress.step(epoch, i + 1, steps_per_epoch, lv as f64, sps);
        }
        train_secs += t0.elapsed().as_secs_f64();
        let plain_fm = FoundationModel { decoder: fm.decoder.valid(), ..fm.clone() };
        let (acc, f1) = evaluate(&cfg.task, &plain_fm, Some(&adaptation.valid()), &dev_data, cfg.batch_size.max(16), &device.clone().inner())?;
        let m = EpochMetrics {
            epoch,
            metric: cfg.task.metric,
            train_loss: loss_sum / steps_per_epoch as f64,
            dev_accuracy: acc,
            dev_f1: f1,
            samples_per_sec: seen as f64 / train_secs.max(1e-9),
            seconds: t0.elapsed().as_secs_f64(),
        };
        progress.epoch(&m);
        append_jsonl(&run_dir.join("metrics.jsonl"), &m)?;
        let better = f1.unwrap_or(acc) > ck.best_dev_f1.unwrap_or(ck.best_dev_accuracy);
        ck.epoch = epoch;
        ck.epochs.push(m);
        let adapter = Adapter { meta: meta.clone(), weights: adaptation.to_tensors()? };
        if better {
            ck.best_epoch = epoch;
            ck.best_dev_accuracy = acc;
            ck.best_dev_f1 = f1;
            adapter.save(&run_dir.join("best"))?;
        }
        adapter.save(&run_dir.join("last"))?;
        crate::adapter::write_atomic(&run_dir.join("last/checkpoint.json"), &serde_json::to_vec_pretty(&ck).expect("json"))?;
        crate::training::plot::loss_curve_svg(&ck.epochs, &run_dir.join("loss.svg"))?;
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
        samples_per_sec: seen as f64 / train_secs.max(1e-9),
        epochs: ck.epochs,
    })
}

/// Zero-shot dev score of the frozen model with no soft prompt at all (accuracy, or pass@1 /
/// exact match for generation tasks).
pub fn zero_shot(task: &TaskSpec, dev_file: &Path, dev_limit: usize, fm: &FoundationModel, device: &Device) -> Result<(f64, Option<f64>)> {
    let mut ex = load_rows(task, dev_file, task.dev_rows)?;
    if dev_limit > 0 {
        ex.truncate(dev_limit);
    }
    let data = prepare(&ex, dev_file, fm, None, usize::MAX, device)?;
    if task.kind == TaskKind::Generation {
        return evaluate(task, fm, None, &data, 16, device);
    }
    let label_ids = label_token_ids(task, fm)?;
    let v = fm.decoder.vocab_size();
    let mut preds = vec![];
    for p in &data {
        let ids = Tensor::<2, Int>::from_data(TensorData::new(p.ids.iter().map(|&t| t as i64).collect::<Vec<_>>(), [1, p.ids.len()]), device);
        let logits = crate::device::to_vec(fm.decoder.forward(ids, None)?)?;
        let row = &logits[(p.ids.len() - 1) * v..p.ids.len() * v];
        preds.push((0..label_ids.len()).max_by(|&a, &b| row[label_ids[a] as usize].total_cmp(&row[label_ids[b] as usize])).unwrap_or(0));
    }
    let gold: Vec<usize> = data.iter().map(|p| p.label).collect();
    let positive = task.positive_label.as_ref().and_then(|p| task.labels().iter().position(|l| l == p));
    Ok(scores(&preds, &gold, positive))
}

fn append_jsonl<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::io(path, e))?;
    writeln!(f, "{}", serde_json::to_string(v).expect("json")).map_err(|e| Error::io(path, e))
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

    #[test]
    fn bucketed_batches_cover_every_example_once_and_pad_little() {
        let data: Vec<Prepared> = (0..1000)
            .map(|i| Prepared { ids: vec![1; 1 + (i * 7919) % 60], answer: vec![2], features: vec![], label: 0, fields: Default::default() })
            .collect();
        let batches = length_bucketed_batches(&data, 16, 3);
        assert_eq!(batches.len(), 1000usize.div_ceil(16));
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
        // Padding: tokens in padded batches vs real tokens.
        let real: usize = data.iter().map(|p| p.ids.len()).sum();
        let padded: usize = batches.iter().map(|b| b.len() * b.iter().map(|&j| data[j].ids.len()).max().unwrap()).sum();
        assert!((padded as f64) < 1.1 * real as f64, "{padded} padded vs {real} real tokens");
        // A different seed gives a different order.
        assert_ne!(batches, length_bucketed_batches(&data, 16, 4));
    }
}
