//! Training a soft-prompt generator against a frozen foundation model (LoPA §3; PT and IDPG
//! baselines share the loop). Only the generator is trainable; the encoder runs once per
//! example up front (it is frozen, so f(x) never changes) and the decoder's parameters are
//! `no_grad`.

use crate::adapter::{Adapter, AdapterMeta};
use crate::decoder::{Decoder, FoundationModel};
use crate::encoder::SentenceEncoder;
use crate::error::{Error, Result};
use crate::generator::{GeneratorConfig, PromptGenerator};
use crate::tasks::{load_examples, scores, Example, TaskSpec};
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
    pub generator: GeneratorConfig,
    pub learning_rate: f64,
    /// Fraction of steps with linear warm-up, then constant (paper: 6%).
    pub warmup_ratio: f64,
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

/// A prepared example: prompt token ids, f(x), label.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub ids: Vec<u32>,
    pub features: Vec<f32>,
    pub label: usize,
}

/// Per-epoch record written to `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f64,
    pub dev_accuracy: f64,
    pub dev_f1: Option<f64>,
    pub samples_per_sec: f64,
    pub seconds: f64,
}

/// The label words' token ids; each must be a single token of the frozen model.
pub fn label_token_ids(spec: &TaskSpec, fm: &FoundationModel) -> Result<Vec<u32>> {
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
        if ids.len() > limit {
            return Err(Error::Input(format!("{}:{}: prompt is {} tokens, longer than the maximum of {limit}", file.display(), ex.line, ids.len())));
        }
        out.push(Prepared { ids, features: vec![], label: ex.label });
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

/// Label-slot logits `[b, vocab]` for a batch: [Z ; E(prompt)] right-padded, read at each row's
/// last prompt token.
pub fn slot_logits(decoder: &Decoder, generator: &PromptGenerator, batch: &[&Prepared], device: &Device) -> Result<Tensor<2>> {
    let b = batch.len();
    let h = generator.config.encoder_dim;
    let d = decoder.hidden_size();
    let feats: Vec<f32> = batch.iter().flat_map(|p| if p.features.is_empty() { vec![0.0; h] } else { p.features.clone() }).collect();
    let z = generator.forward(Tensor::<2>::from_data(TensorData::new(feats, [b, h]), device))?;
    let m = z.dims()[1];
    let s = batch.iter().map(|p| p.ids.len()).max().unwrap_or(1).max(1);
    let mut ids = vec![0i64; b * s];
    let mut mask = vec![0f32; b * (m + s)];
    let mut positions = vec![0usize; b * (m + s)];
    let mut slot = Vec::with_capacity(b);
    for (r, p) in batch.iter().enumerate() {
        for (c, &t) in p.ids.iter().enumerate() {
            ids[r * s + c] = t as i64;
        }
        for c in 0..m + p.ids.len() {
            mask[r * (m + s) + c] = 1.0;
        }
        for c in 0..m + s {
            positions[r * (m + s) + c] = c;
        }
        slot.push((r * (m + s) + m + p.ids.len() - 1) as i64);
    }
    let e = decoder.embed(Tensor::<2, Int>::from_data(TensorData::new(ids, [b, s]), device));
    let hidden = decoder.forward_embeds(Tensor::cat(vec![z, e], 1), &positions, &mask, None)?;
    let rows = hidden.reshape([b * (m + s), d]).select(0, Tensor::<1, Int>::from_data(TensorData::new(slot, [b]), device));
    Ok(decoder.logits(rows))
}

/// Mean cross-entropy of the label words over the full vocabulary.
pub fn loss(logits: Tensor<2>, batch: &[&Prepared], label_ids: &[u32], device: &Device) -> Tensor<1> {
    let b = batch.len();
    let targets: Vec<i64> = batch.iter().map(|p| label_ids[p.label] as i64).collect();
    let t = Tensor::<2, Int>::from_data(TensorData::new(targets, [b, 1]), device);
    log_softmax(logits, 1).gather(1, t).mean().neg()
}

/// Predictions (argmax over the label words only) for `data`, no gradients, no dropout.
pub fn predict(decoder: &Decoder, generator: &PromptGenerator, data: &[Prepared], label_ids: &[u32], batch_size: usize, device: &Device) -> Result<Vec<usize>> {
    let mut preds = Vec::with_capacity(data.len());
    for chunk in data.chunks(batch_size.max(1)) {
        let refs: Vec<&Prepared> = chunk.iter().collect();
        let logits = crate::device::to_vec(slot_logits(decoder, generator, &refs, device)?)?;
        let v = decoder.vocab_size();
        for r in 0..chunk.len() {
            let row = &logits[r * v..(r + 1) * v];
            let best = (0..label_ids.len()).max_by(|&a, &b| row[label_ids[a] as usize].total_cmp(&row[label_ids[b] as usize])).unwrap_or(0);
            preds.push(best);
        }
    }
    Ok(preds)
}

/// Deterministic shuffle (Fisher–Yates with the crate's SplitMix64).
pub fn shuffle<T>(v: &mut [T], seed: u64) {
    let mut rng = crate::generate::Rng::new(seed);
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
    if cfg.generator.method.uses_encoder() && encoder.is_none() {
        return Err(Error::Config(format!("method {} needs an encoder", cfg.generator.method.name())));
    }
    // Validate everything before the first step.
    let label_ids = label_token_ids(&cfg.task, fm)?;
    let mut train_ex = load_examples(&cfg.task, &cfg.train_file)?;
    let mut dev_ex = load_examples(&cfg.task, &cfg.dev_file)?;
    shuffle(&mut train_ex, cfg.seed);
    if cfg.train_limit > 0 {
        train_ex.truncate(cfg.train_limit);
    }
    if cfg.dev_limit > 0 {
        dev_ex.truncate(cfg.dev_limit);
    }
    let enc = if cfg.generator.method.uses_encoder() { encoder } else { None };
    let train_data = prepare(&train_ex, &cfg.train_file, fm, enc, cfg.max_length, enc_device)?;
    let dev_data = prepare(&dev_ex, &cfg.dev_file, fm, enc, cfg.max_length, enc_device)?;
    std::fs::create_dir_all(run_dir).map_err(|e| Error::io(run_dir, e))?;
    std::fs::write(run_dir.join("config.json"), serde_json::to_vec_pretty(cfg).expect("json")).map_err(|e| Error::io(run_dir, e))?;

    device.seed(cfg.seed);
    let meta = AdapterMeta::new(&cfg.generator, &cfg.task, fm, encoder);
    let (mut generator, mut ck) = match resume.then(|| Adapter::load(&run_dir.join("last"))).transpose() {
        Ok(Some(a)) => {
            a.meta.check_compatible(fm, encoder)?;
            let ck: Checkpoint = serde_json::from_slice(&crate::error::read_file(run_dir.join("last/checkpoint.json"))?)
                .map_err(|e| Error::Config(format!("checkpoint.json: {e}")))?;
            (PromptGenerator::from_tensors(&a.meta.generator, &a.weights, device)?, ck)
        }
        Ok(None) => (cfg.generator.init(device)?, Checkpoint { epoch: 0, step: 0, best_epoch: 0, best_dev_accuracy: -1.0, best_dev_f1: None, epochs: vec![] }),
        Err(e) => return Err(Error::Config(format!("--resume: no usable checkpoint in {}: {e}", run_dir.display()))),
    };
    let mut optim = AdamWConfig::new().with_weight_decay(cfg.weight_decay as f32).init();
    let steps_per_epoch = train_data.len().div_ceil(cfg.batch_size);
    let total_steps = steps_per_epoch * cfg.epochs;
    let warmup = ((total_steps as f64) * cfg.warmup_ratio).ceil().max(1.0) as usize;
    let positive = cfg.task.positive_label.as_ref().and_then(|p| cfg.task.labels().iter().position(|l| l == p));
    let mut seen = 0usize;
    let mut train_secs = 0.0f64;
    for epoch in ck.epoch + 1..=cfg.epochs {
        let t0 = Instant::now();
        let mut order: Vec<usize> = (0..train_data.len()).collect();
        shuffle(&mut order, cfg.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9));
        let mut loss_sum = 0.0;
        for (i, idx) in order.chunks(cfg.batch_size).enumerate() {
            let batch: Vec<&Prepared> = idx.iter().map(|&j| &train_data[j]).collect();
            let logits = slot_logits(&fm.decoder, &generator, &batch, device)?;
            let l = loss(logits, &batch, &label_ids, device);
            let lv: f32 = l.clone().into_scalar();
            if !lv.is_finite() {
                return Err(Error::Backend(format!("loss became {lv} at epoch {epoch} step {}", i + 1)));
            }
            let mut grads = l.backward();
            let grads = GradientsParams::from_module(&mut grads, &generator);
            ck.step += 1;
            let lr = cfg.learning_rate * (ck.step as f64 / warmup as f64).min(1.0);
            generator = optim.step(lr, generator, grads);
            loss_sum += lv as f64;
            seen += batch.len();
            let sps = seen as f64 / (train_secs + t0.elapsed().as_secs_f64()).max(1e-9);
            progress.step(epoch, i + 1, steps_per_epoch, lv as f64, sps);
        }
        train_secs += t0.elapsed().as_secs_f64();
        let preds = predict(&fm.decoder.valid(), &generator.valid(), &dev_data, &label_ids, cfg.batch_size.max(16), &device.clone().inner())?;
        let gold: Vec<usize> = dev_data.iter().map(|p| p.label).collect();
        let (acc, f1) = scores(&preds, &gold, positive);
        let m = EpochMetrics {
            epoch,
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
        let adapter = Adapter { meta: meta.clone(), weights: generator.to_tensors()? };
        if better {
            ck.best_epoch = epoch;
            ck.best_dev_accuracy = acc;
            ck.best_dev_f1 = f1;
            adapter.save(&run_dir.join("best"))?;
        }
        adapter.save(&run_dir.join("last"))?;
        crate::adapter::write_atomic(&run_dir.join("last/checkpoint.json"), &serde_json::to_vec_pretty(&ck).expect("json"))?;
        crate::plot::loss_curve_svg(&ck.epochs, &run_dir.join("loss.svg"))?;
    }
    Ok(TrainSummary {
        best_epoch: ck.best_epoch,
        best_dev_accuracy: ck.best_dev_accuracy,
        best_dev_f1: ck.best_dev_f1,
        zero_shot_dev_accuracy: None,
        trainable_parameters: cfg.generator.trainable_parameters(),
        train_examples: train_data.len(),
        dev_examples: dev_data.len(),
        seconds: started.elapsed().as_secs_f64(),
        samples_per_sec: seen as f64 / train_secs.max(1e-9),
        epochs: ck.epochs,
    })
}

/// Zero-shot accuracy of the frozen model with no soft prompt at all.
pub fn zero_shot(task: &TaskSpec, dev_file: &Path, dev_limit: usize, fm: &FoundationModel, device: &Device) -> Result<(f64, Option<f64>)> {
    let label_ids = label_token_ids(task, fm)?;
    let mut ex = load_examples(task, dev_file)?;
    if dev_limit > 0 {
        ex.truncate(dev_limit);
    }
    let data = prepare(&ex, dev_file, fm, None, usize::MAX, device)?;
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
