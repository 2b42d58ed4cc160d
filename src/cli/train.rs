//! `lopa train`: a soft-prompt generator (LoPA, a variant, or a baseline) against the frozen model.

use crate::args::ModelArgs;
use burn::module::Module;
use lopa::model::decoder::FoundationModel;
use lopa::model::encoder::SentenceEncoder;
use lopa::model::generator::{GeneratorConfig, Method};
use lopa::training::LrSchedule;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    models: ModelArgs,
    /// Built-in task: sst2, rte, mrpc, cruxeval-o, cruxeval-i.
    #[arg(long, default_value = "sst2")]
    task: String,
    /// A task spec JSON (template, label words, columns) for any TSV/JSONL; overrides --task.
    #[arg(long)]
    task_spec: Option<PathBuf>,
    /// Training file [default: <data>/<task>/train.tsv].
    #[arg(long)]
    train_file: Option<PathBuf>,
    /// Dev file [default: <data>/<task>/dev.tsv].
    #[arg(long)]
    dev_file: Option<PathBuf>,
    /// lopa, lopa-add, lopa-max, lopa-concat, pt, idpg, or lora (the baseline that needs
    /// server-side weights: a LoRA on the frozen model's q/k/v).
    #[arg(long, value_enum, default_value_t = Method::Lopa)]
    method: Method,
    /// Number of virtual tokens m.
    #[arg(long, default_value_t = 10)]
    m: usize,
    /// Rank r of u·vᵀ.
    #[arg(long, default_value_t = 4)]
    rank: usize,
    /// Hidden width H of the heads.
    #[arg(long, default_value_t = 256)]
    hidden: usize,
    /// LoRA (`--method lora`): rank of the q/k/v updates.
    #[arg(long, default_value_t = 16)]
    lora_rank: usize,
    /// LoRA: the update is scaled by alpha / rank.
    #[arg(long, default_value_t = 32.0)]
    lora_alpha: f64,
    /// Std of Z_S at init [default: the std of the frozen model's token embeddings; the paper's
    /// N(0, 1) was in RoBERTa's embedding scale].
    #[arg(long)]
    prompt_init_std: Option<f64>,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, default_value_t = 0.06)]
    warmup: f64,
    /// After warm-up: constant (the paper's) or linear (decay to 0 at the last step).
    #[arg(long, value_enum, default_value_t)]
    lr_schedule: LrSchedule,
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    #[arg(long, default_value_t = 256)]
    max_length: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Train on the first N shuffled rows only (0 = all).
    #[arg(long, default_value_t = 0)]
    train_limit: usize,
    /// Evaluate on the first N dev rows only (0 = all).
    #[arg(long, default_value_t = 0)]
    dev_limit: usize,
    /// Run directory (metrics.jsonl, loss.svg, best/, last/).
    #[arg(long, default_value = "runs/sst2-lopa")]
    run_dir: PathBuf,
    /// Continue from run_dir/last.
    #[arg(long)]
    resume: bool,
    /// Also measure the frozen model's zero-shot dev score first.
    #[arg(long)]
    zero_shot: bool,
}

struct Bar(indicatif::ProgressBar, usize);

impl lopa::training::Progress for Bar {
    fn step(&mut self, epoch: usize, step: usize, steps: usize, loss: f64, sps: f64) {
        if self.0.length() != Some(steps as u64) || step == 1 {
            self.0.set_length(steps as u64);
            self.0.reset_eta();
        }
        self.0.set_position(step as u64);
        self.0.set_message(format!("epoch {epoch}/{} loss {loss:.4} {sps:.1} samples/s", self.1));
    }
    fn epoch(&mut self, m: &lopa::training::EpochMetrics) {
        let line = format!(
            "epoch {}: train loss {:.4}, dev {} {:.4}{}, {:.1} samples/s, {:.0} s",
            m.epoch,
            m.train_loss,
            m.metric.headline(),
            m.dev_accuracy,
            m.dev_f1.map(|f| format!(", dev F1 {f:.4}")).unwrap_or_default(),
            m.samples_per_sec,
            m.seconds
        );
        // A hidden bar (output not a terminal) prints nothing; logs still get the epoch line.
        if self.0.is_hidden() { eprintln!("{line}") } else { self.0.println(line) }
    }
}

pub fn run(a: Args) -> lopa::Result<()> {
    let task = match &a.task_spec {
        Some(p) => serde_json::from_slice(&lopa::error::read_file(p)?).map_err(|e| lopa::Error::Config(format!("{}: {e}", p.display())))?,
        None => lopa::adapter::task::TaskSpec::builtin(&a.task)?,
    };
    let (train_file, dev_file) = task.default_files(&lopa::adapter::task::data_dir());
    let method = a.method;
    let dev = a.models.device()?;
    eprintln!("lopa: backend {}", dev.name);
    let ad = dev.device.clone().autodiff();
    let fm = FoundationModel::load(a.models.model_path(), &ad)?;
    let enc = if method.uses_encoder() { Some(SentenceEncoder::from_dir(a.models.encoder_path(), &dev.device)?) } else { None };
    let mut generator = GeneratorConfig::new(method, fm.decoder.hidden_size(), enc.as_ref().map_or(1, |e| e.hidden_size()));
    generator.num_virtual_tokens = a.m;
    generator.rank = a.rank;
    generator.hidden_dim = a.hidden;
    if method == Method::Lora {
        generator.lora = Some(fm.config.lora(a.lora_rank, a.lora_alpha));
    }
    generator.task_prompt_init_std = match a.prompt_init_std {
        Some(s) => s,
        None => fm.decoder.embedding_std()?,
    };
    let cfg = lopa::training::TrainConfig {
        task,
        train_file: a.train_file.unwrap_or(train_file),
        dev_file: a.dev_file.unwrap_or(dev_file),
        generator,
        learning_rate: a.lr,
        warmup_ratio: a.warmup,
        lr_schedule: a.lr_schedule,
        weight_decay: a.weight_decay,
        epochs: a.epochs,
        batch_size: a.batch_size,
        max_length: a.max_length,
        seed: a.seed,
        train_limit: a.train_limit,
        dev_limit: a.dev_limit,
    };
    eprintln!("lopa: {} on {} with {} trainable parameters", method.name(), cfg.task.name, cfg.generator.trainable_parameters());
    let zero = if a.zero_shot {
        let plain = fm.clone();
        let (acc, f1) = lopa::training::zero_shot(&cfg.task, &cfg.dev_file, cfg.dev_limit, &FoundationModel { decoder: plain.decoder.valid(), ..plain }, &dev.device)?;
        eprintln!("lopa: zero-shot dev accuracy {acc:.4}{}", f1.map(|f| format!(", F1 {f:.4}")).unwrap_or_default());
        Some(acc)
    } else {
        None
    };
    let style = indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} eta {eta}").expect("template");
    let mut bar = Bar(indicatif::ProgressBar::new(1).with_style(style), cfg.epochs);
    let mut summary = lopa::training::train(&cfg, &fm, enc.as_ref(), &dev.device, &ad, &a.run_dir, a.resume, &mut bar)?;
    bar.0.finish_and_clear();
    summary.zero_shot_dev_accuracy = zero;
    let best = lopa::adapter::Adapter::load(&a.run_dir.join("best"))?;
    if best.weights.contains("task_prompt") {
        best.export_peft(&a.run_dir.join("peft"), &fm)?;
    }
    let s = serde_json::to_string_pretty(&summary).expect("json");
    lopa::adapter::write_atomic(&a.run_dir.join("summary.json"), s.as_bytes())?;
    println!("{s}");
    Ok(())
}

