//! `lopa train`: a soft-prompt generator (LoPA, a variant, or a baseline) against the frozen model.

use crate::args::ModelArgs;
use burn::module::Module;
use lopa::model::adaptation::{AdaptationConfig, AdaptationKind};
use lopa::model::decoder::FoundationModel;
use lopa::model::encoder::SentenceEncoder;
use lopa::model::generator::{GeneratorConfig, Method};
use lopa::training::{LrSchedule, Models, Start};
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A JSON object of these flags (e.g. configs/sst2-long.json); flags given here override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
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
    #[arg(long, value_enum, default_value_t = AdaptationKind::Prompt(Method::Lopa))]
    method: AdaptationKind,
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
    /// Continue from run_dir/last exactly where it stopped (adapter, AdamW's moments, position).
    #[arg(long)]
    resume: bool,
    /// Also write run_dir/last every N optimizer steps inside an epoch (0: at epoch ends only).
    #[arg(long, default_value_t = 0)]
    checkpoint_every: usize,
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

pub fn run(a: Args, matches: &clap::ArgMatches) -> lopa::Result<()> {
    let task = match &a.task_spec {
        Some(p) => serde_json::from_slice(&lopa::fs::read_file(p)?).map_err(|e| lopa::Error::Config(format!("{}: {e}", p.display())))?,
        None => lopa::task::TaskSpec::builtin(&a.task)?,
    };
    let (train_file, dev_file) = lopa::training::examples::default_files(&task, &crate::args::data_dir());
    let dev = a.models.device()?;
    eprintln!("lopa: backend {}", dev.name);
    let ad = dev.device.clone().autodiff();
    let fm = a.models.load_model(&ad)?;
    let uses_encoder = matches!(a.method, AdaptationKind::Prompt(m) if m.uses_encoder());
    let enc = if uses_encoder { Some(SentenceEncoder::from_dir(a.models.encoder_path(), &dev.device)?) } else { None };
    let adaptation = match a.method {
        AdaptationKind::Prompt(method) => {
            let mut g = GeneratorConfig::new(method, fm.decoder.hidden_size(), enc.as_ref().map_or(1, |e| e.hidden_size()));
            g.num_virtual_tokens = a.m;
            g.rank = a.rank;
            g.hidden_dim = a.hidden;
            g.task_prompt_init_std = match a.prompt_init_std {
                Some(s) => s,
                None => fm.decoder.embedding_std()?,
            };
            AdaptationConfig::Prompt(g)
        }
        AdaptationKind::Lora => AdaptationConfig::Lora(fm.config.lora(a.lora_rank, a.lora_alpha)),
    };
    let cfg = lopa::training::TrainConfig {
        task,
        train_file: a.train_file.unwrap_or(train_file),
        dev_file: a.dev_file.unwrap_or(dev_file),
        adaptation,
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
        checkpoint_every: a.checkpoint_every,
    };
    eprintln!("lopa: {} on {} with {} trainable parameters", a.method.name(), cfg.task.name, cfg.adaptation.trainable_parameters());
    let zero = if a.zero_shot {
        let plain = fm.clone();
        let (acc, f1) = lopa::training::zero_shot(&cfg.task, &cfg.dev_file, cfg.dev_limit, &FoundationModel { decoder: plain.decoder.valid(), ..plain }, &dev.device)?;
        eprintln!("lopa: zero-shot dev accuracy {acc:.4}{}", f1.map(|f| format!(", F1 {f:.4}")).unwrap_or_default());
        Some(acc)
    } else {
        None
    };
    // The run's record is the format of configs/*.json: every flag with the value it had, so
    // `lopa train --config RUN/config.json` runs it again.
    std::fs::create_dir_all(&a.run_dir).map_err(|e| lopa::Error::io(&a.run_dir, e))?;
    let flags = serde_json::to_vec_pretty(&effective_flags(matches)).expect("json");
    lopa::fs::write_atomic(&a.run_dir.join("config.json"), &flags)?;
    let style = indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} eta {eta}").expect("template");
    let mut bar = Bar(indicatif::ProgressBar::new(1).with_style(style), cfg.epochs);
    let mut summary = lopa::training::train(&cfg, Models { fm: &fm, encoder: enc.as_ref(), encoder_device: &dev.device, device: &ad }, &a.run_dir, if a.resume { Start::Resume } else { Start::Fresh }, &mut bar)?;
    bar.0.finish_and_clear();
    summary.zero_shot_dev_accuracy = zero;
    let best = lopa::adapter::Adapter::load(&a.run_dir.join("best"))?;
    if best.weights.contains("task_prompt") {
        best.export_peft(&a.run_dir.join("peft"), &fm)?;
    }
    let s = serde_json::to_string_pretty(&summary).expect("json");
    lopa::fs::write_atomic(&a.run_dir.join("summary.json"), s.as_bytes())?;
    println!("{s}");
    Ok(())
}

/// Every flag of a parsed `lopa train` with its value (given, from a config, or the default) as
/// a config file holds it: `true`/`false` for switches, strings otherwise, lists for repeated
/// flags. `--config` and `--resume` are left out: they say how a run started, not what it is.
pub fn effective_flags(m: &clap::ArgMatches) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::Value;
    use clap::CommandFactory;
    let cli = crate::Cli::command();
    let train = cli.find_subcommand("train").expect("the train subcommand");
    let mut out = serde_json::Map::new();
    // The command's arguments, not `m.ids()`: that also lists argument groups.
    for id in train.get_arguments().map(|a| a.get_id().as_str().to_string()) {
        if id == "config" || id == "resume" {
            continue;
        }
        let Ok(Some(raw)) = m.try_get_raw(&id) else { continue };
        let values: Vec<String> = raw.map(|v| v.to_string_lossy().into_owned()).collect();
        let value = match &values[..] {
            [one] if one == "true" || one == "false" => Value::Bool(one == "true"),
            [one] => Value::String(one.clone()),
            many => Value::Array(many.iter().cloned().map(Value::String).collect()),
        };
        out.insert(id.replace('_', "-"), value);
    }
    out
}

/// `lopa train --config FILE`: the file's JSON object becomes flags placed before the command
/// line's own, so that flags given there override it (`args_override_self`). Keys are flag
/// names (`train-limit` or `train_limit`); `true` is a bare switch, `false` and `null` leave it
/// out, a list repeats the flag. Unknown keys are refused by the parser like unknown flags.
pub fn expand_config(args: Vec<OsString>) -> lopa::Result<Vec<OsString>> {
    if args.get(1).is_none_or(|a| a != "train") {
        return Ok(args);
    }
    let mut rest = Vec::with_capacity(args.len());
    let mut files = vec![];
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--config") => files.push(PathBuf::from(it.next().ok_or_else(|| lopa::Error::Config("--config needs a file".into()))?)),
            Some(s) if s.starts_with("--config=") => files.push(PathBuf::from(&s["--config=".len()..])),
            _ => rest.push(a),
        }
    }
    let mut flags: Vec<OsString> = vec![];
    for path in &files {
        let bad = |why: String| lopa::Error::Config(format!("{}: {why}", path.display()));
        let v: serde_json::Value = serde_json::from_slice(&lopa::fs::read_file(path)?).map_err(|e| bad(e.to_string()))?;
        let obj = v.as_object().ok_or_else(|| bad("must be a JSON object of `lopa train` flags".into()))?;
        for (key, value) in obj {
            let flag = format!("--{}", key.replace('_', "-"));
            if flag == "--config" {
                return Err(bad("a config cannot name another config".into()));
            }
            let values = match value {
                serde_json::Value::Array(items) => items.clone(),
                other => vec![other.clone()],
            };
            for v in values {
                match v {
                    serde_json::Value::Bool(true) => flags.push(flag.clone().into()),
                    serde_json::Value::Bool(false) | serde_json::Value::Null => {}
                    serde_json::Value::String(s) => flags.extend([flag.clone().into(), s.into()]),
                    serde_json::Value::Number(n) => flags.extend([flag.clone().into(), n.to_string().into()]),
                    _ => return Err(bad(format!("`{key}`: a flag takes a string, a number, a boolean or a list of them"))),
                }
            }
        }
    }
    // `lopa train`, the files' flags, then the command line's.
    let mut out: Vec<OsString> = rest.drain(..2).collect();
    out.extend(flags);
    out.extend(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    fn parse(config: &str, cli: &[&str]) -> Result<Args, String> {
        let dir = std::env::temp_dir().join(format!("lopa-config-{}-{}", std::process::id(), config.len()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.json");
        std::fs::write(&path, config).unwrap();
        let mut argv: Vec<OsString> = vec!["lopa".into(), "train".into(), "--config".into(), path.clone().into()];
        argv.extend(cli.iter().map(OsString::from));
        let argv = expand_config(argv).map_err(|e| e.to_string())?;
        match crate::Cli::try_parse_from(argv).map_err(|e| e.to_string())?.command {
            crate::Command::Train(a) => Ok(a),
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_config_sets_flags_and_the_command_line_overrides_them() {
        let a = parse(r#"{"task": "rte", "train_limit": 800, "epochs": 5, "zero-shot": true, "lr-schedule": "linear", "method": "pt", "resume": false}"#, &["--epochs", "2"]).unwrap();
        assert_eq!((a.task.as_str(), a.train_limit, a.epochs, a.zero_shot, a.lr_schedule, a.method, a.resume), ("rte", 800, 2, true, LrSchedule::Linear, AdaptationKind::Prompt(Method::Pt), false));
        assert_eq!(parse("{}", &[]).unwrap().epochs, 3, "an empty config changes nothing");
    }

    #[test]
    fn bad_configs_are_refused_with_the_file_and_the_key() {
        let e = parse(r#"{"epochz": 2}"#, &[]).unwrap_err();
        assert!(e.contains("--epochz"), "{e}");
        let e = parse(r#"{"epochs": "two"}"#, &[]).unwrap_err();
        assert!(e.contains("two"), "{e}");
        let e = parse(r#"{"method": "bert"}"#, &[]).unwrap_err();
        assert!(e.contains("bert"), "{e}");
        assert!(parse("[1]", &[]).unwrap_err().ends_with("c.json: must be a JSON object of `lopa train` flags"));
        assert!(parse(r#"{"task": {"name": "x"}}"#, &[]).unwrap_err().ends_with("`task`: a flag takes a string, a number, a boolean or a list of them"));
        assert!(parse(r#"{"config": "other.json"}"#, &[]).unwrap_err().ends_with("a config cannot name another config"));
        assert!(parse("{oops", &[]).unwrap_err().contains("c.json: key must be a string"));
    }

    /// A run's config.json is a config: read back, it gives the same flags.
    #[test]
    fn a_runs_flags_are_a_config_that_reproduces_it() {
        let argv = expand_config(["lopa", "train", "--task", "rte", "--epochs", "2", "--zero-shot", "--method", "pt", "--resume"].iter().map(OsString::from).collect()).unwrap();
        let m = crate::Cli::command().get_matches_from(argv);
        let flags = effective_flags(m.subcommand_matches("train").unwrap());
        assert_eq!(flags["task"], "rte");
        assert_eq!(flags["epochs"], "2");
        assert_eq!(flags["zero-shot"], true);
        assert_eq!(flags["lr"], "0.001", "defaults are recorded too");
        assert!(!flags.contains_key("resume") && !flags.contains_key("config"));
        let again = parse(&serde_json::to_string(&flags).unwrap(), &[]).unwrap();
        assert_eq!((again.task.as_str(), again.epochs, again.zero_shot, again.method, again.resume), ("rte", 2, true, AdaptationKind::Prompt(Method::Pt), false));
        let m2 = crate::Cli::command().get_matches_from(expand_config(vec!["lopa".into(), "train".into(), "--config".into(), write_config(&flags).into()]).unwrap());
        assert_eq!(effective_flags(m2.subcommand_matches("train").unwrap()), flags);
    }

    fn write_config(flags: &serde_json::Map<String, serde_json::Value>) -> PathBuf {
        let path = std::env::temp_dir().join(format!("lopa-config-{}-again.json", std::process::id()));
        std::fs::write(&path, serde_json::to_vec(flags).unwrap()).unwrap();
        path
    }

    #[test]
    fn the_shipped_configs_parse() {
        for f in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/configs")).unwrap() {
            let path = f.unwrap().path();
            let argv = expand_config(vec!["lopa".into(), "train".into(), "--config".into(), path.clone().into()]).unwrap();
            assert!(crate::Cli::try_parse_from(argv).is_ok(), "{}", path.display());
        }
    }
}
