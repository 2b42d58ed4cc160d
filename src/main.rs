//! The `lopa` command line.

use burn::module::Module;
use clap::{Parser, Subcommand};
use lopa::decoder::FoundationModel;
use lopa::device::{select, BackendChoice};
use lopa::encoder::SentenceEncoder;
use lopa::generate::{generate, GenerationRequest, SamplingParams};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "lopa", version, about = "Low-Rank Prompt Adaptation: private soft prompts for one frozen model")]
// A later flag overrides an earlier one, so scripts/run.sh "$@" can change its defaults.
#[command(args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct ModelArgs {
    /// Frozen foundation model: a .gguf file or a Hugging Face directory [default: cached SmolLM2-135M-Instruct].
    #[arg(long)]
    model: Option<PathBuf>,
    /// Sentence encoder: a Hugging Face BERT directory [default: cached all-MiniLM-L6-v2].
    #[arg(long)]
    encoder: Option<PathBuf>,
    /// Compute backend: auto (GPU through wgpu if present, else CPU), cpu, wgpu.
    #[arg(long, default_value = "auto")]
    backend: String,
}

impl ModelArgs {
    fn model_path(&self) -> PathBuf {
        self.model.clone().unwrap_or_else(lopa::paths::default_foundation_model)
    }
    fn encoder_path(&self) -> PathBuf {
        self.encoder.clone().unwrap_or_else(lopa::paths::default_encoder)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Print a model's configuration.
    Info {
        #[command(flatten)]
        models: ModelArgs,
    },
    /// Complete a prompt with the frozen model (no soft prompt).
    Generate {
        #[command(flatten)]
        models: ModelArgs,
        /// The prompt.
        prompt: String,
        #[arg(long, default_value_t = 64)]
        max_tokens: usize,
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Print the sentence embedding of a text.
    Embed {
        #[command(flatten)]
        models: ModelArgs,
        text: String,
    },
    /// Train a soft-prompt generator (LoPA, a variant, or a baseline) against the frozen model.
    Train(TrainArgs),
    /// Measure training throughput (samples/s) with random weights of the default models' shapes.
    BenchTrain {
        /// auto, cpu, wgpu.
        #[arg(long, default_value = "auto")]
        backend: String,
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        /// Prompt tokens per example (the soft prompt adds m more).
        #[arg(long, default_value_t = 256)]
        seq_len: usize,
        /// Decoder layers (SmolLM2-135M has 30).
        #[arg(long, default_value_t = 30)]
        layers: usize,
        #[arg(long, default_value = "lopa")]
        method: String,
        /// Timed steps (after the warm-up steps).
        #[arg(long, default_value_t = 5)]
        steps: usize,
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// Also time the model's largest matmul ([batch·(seq+m), 576] × [576, 1536]) alone.
        #[arg(long)]
        matmul: bool,
    },
    /// Serve the frozen model over HTTP (OpenAI-style /v1/completions with a `soft_prompt` field),
    /// in this process or as the gateway in front of vLLM (`--upstream`).
    #[cfg(feature = "server")]
    Serve(ServeArgs),
    /// Write the frozen model as a Hugging Face folder (config.json, model.safetensors in f32,
    /// tokenizer.json): what vLLM loads to serve exactly the model `lopa serve` runs.
    ExportHf {
        /// Frozen foundation model: a .gguf file or a Hugging Face directory [default: cached SmolLM2-135M-Instruct].
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Dev score of the frozen model alone (no soft prompt): the zero-shot baseline.
    ZeroShot {
        #[command(flatten)]
        models: ModelArgs,
        /// Built-in task: sst2, rte, mrpc.
        #[arg(long, default_value = "sst2")]
        task: String,
        /// Evaluate on the first N dev rows only (0 = all).
        #[arg(long, default_value_t = 0)]
        dev_limit: usize,
    },
    /// Evaluate a saved adapter on a labelled file.
    Eval {
        #[command(flatten)]
        models: ModelArgs,
        /// Adapter directory (adapter.json + adapter.safetensors).
        #[arg(long)]
        adapter: PathBuf,
        /// Labelled file [default: the task's dev split].
        #[arg(long)]
        file: Option<PathBuf>,
        #[arg(long, default_value_t = 0)]
        limit: usize,
    },
    /// Write the browser's weight files into one folder: encoder.safetensors (the encoder as a
    /// single-file bundle), tokenizer.json, adapters/NAME.safetensors for each adapter, and
    /// adapters.json listing them. f16 by default.
    ExportWeb {
        /// Sentence encoder: a Hugging Face BERT directory [default: cached all-MiniLM-L6-v2].
        #[arg(long)]
        encoder: Option<PathBuf>,
        /// NAME=DIR: an adapter directory (adapter.json + adapter.safetensors) to add (repeatable).
        #[arg(long)]
        adapter: Vec<String>,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// f16 or f32.
        #[arg(long, default_value = "f16")]
        dtype: String,
    },
    /// Print the soft prompts of inputs (JSON), computed from the browser files as the browser
    /// package does: the native reference for its parity test.
    SoftPrompt {
        /// Folder written by `lopa export-web`.
        #[arg(long)]
        bundle: PathBuf,
        /// Which adapter of the folder [default: the only one].
        #[arg(long)]
        adapter: Option<String>,
        /// cpu or wgpu.
        #[arg(long, default_value = "cpu")]
        backend: String,
        /// Inputs: plain texts, or JSON objects of the task's fields.
        #[arg(required = true)]
        inputs: Vec<String>,
    },
    /// Classify one input with a saved adapter.
    Predict {
        #[command(flatten)]
        models: ModelArgs,
        #[arg(long)]
        adapter: PathBuf,
        /// The input, as `column=value` pairs for the task's template (e.g. `sentence=a fine film`).
        #[arg(required = true)]
        fields: Vec<String>,
    },
}

#[derive(clap::Args)]
struct TrainArgs {
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
    #[arg(long, default_value = "lopa")]
    method: String,
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
    #[arg(long, default_value = "constant")]
    lr_schedule: String,
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

fn run(cli: Cli) -> lopa::Result<()> {
    match cli.command {
        Command::Info { models } => {
            let dev = select(models.backend.parse::<BackendChoice>()?)?;
            let fm = FoundationModel::load(models.model_path(), &dev.device)?;
            println!("backend: {}", dev.name);
            println!("model: {} (sha256 {})", fm.id, fm.sha256);
            println!("{}", serde_json::to_string_pretty(&fm.config).expect("json"));
        }
        Command::Generate { models, prompt, max_tokens, temperature, top_p, seed } => {
            let dev = select(models.backend.parse::<BackendChoice>()?)?;
            let fm = FoundationModel::load(models.model_path(), &dev.device)?;
            let req = GenerationRequest { prompt_ids: fm.tokenizer.encode(&prompt)?, soft_prompt: None };
            let p = SamplingParams { max_tokens, temperature, top_p, stop_token_ids: fm.tokenizer.eos_token_ids.clone(), seed };
            let out = generate(&fm.decoder, &[req], &p, true, &dev.device)?;
            println!("{prompt}{}", fm.tokenizer.decode(&out[0].tokens)?);
        }
        Command::Embed { models, text } => {
            let dev = select(models.backend.parse::<BackendChoice>()?)?;
            let enc = SentenceEncoder::from_dir(models.encoder_path(), &dev.device)?;
            let v = lopa::device::to_vec(enc.embed(&[&text], &dev.device)?)?;
            println!("{}", serde_json::to_string(&v).expect("json"));
        }
        Command::Train(a) => train(a)?,
        #[cfg(feature = "server")]
        Command::Serve(a) => serve(a)?,
        Command::ExportHf { model, out } => {
            let model = model.unwrap_or_else(lopa::paths::default_foundation_model);
            lopa::export::export_hf(&model, &out)?;
            eprintln!("lopa: wrote {} as a Hugging Face folder in {}", model.display(), out.display());
        }
        Command::BenchTrain { backend, batch_size, seq_len, layers, method, steps, warmup, matmul } => {
            bench_train(&backend, batch_size, seq_len, layers, &method, steps, warmup, matmul)?
        }
        Command::ZeroShot { models, task, dev_limit } => {
            let dev = select(models.backend.parse::<BackendChoice>()?)?;
            let task = lopa::tasks::TaskSpec::builtin(&task)?;
            let (_, dev_file) = task.default_files(&lopa::tasks::data_dir());
            let fm = FoundationModel::load(models.model_path(), &dev.device)?;
            let t0 = std::time::Instant::now();
            let (acc, f1) = lopa::train::zero_shot(&task, &dev_file, dev_limit, &fm, &dev.device)?;
            println!("{}", serde_json::json!({"task": task.name, "dev_accuracy": acc, "dev_f1": f1, "seconds": t0.elapsed().as_secs_f64(), "backend": dev.name,
                "check_template": task.check_template, "reject_if_contains": task.reject_if_contains}));
        }
        Command::Eval { models, adapter, file, limit } => {
            let dev = select(models.backend.parse::<BackendChoice>()?)?;
            let (fm, enc, a, g) = load_adapter(&models, &adapter, &dev.device)?;
            let task = &a.meta.task;
            let (file, rows) = match file {
                Some(f) => (f, None),
                None => (task.default_files(&lopa::tasks::data_dir()).1, task.dev_rows),
            };
            let mut ex = lopa::tasks::load_rows(task, &file, rows)?;
            if limit > 0 {
                ex.truncate(limit);
            }
            let data = lopa::train::prepare(&ex, &file, &fm, enc.as_ref(), usize::MAX, &dev.device)?;
            let (score, f1) = lopa::train::evaluate(task, &fm, &g, &data, 16, &dev.device)?;
            println!("{}", serde_json::json!({"file": file, "examples": data.len(), "metric": task.metric, "score": score, "f1": f1}));
        }
        Command::ExportWeb { encoder, adapter, out, dtype } => export_web(encoder, &adapter, &out, &dtype)?,
        Command::SoftPrompt { bundle, adapter, backend, inputs } => {
            let dev = select(backend.parse::<BackendChoice>()?)?;
            let read = |n: &str| lopa::error::read_file(bundle.join(n));
            let name = match adapter {
                Some(n) => n,
                None => {
                    let list: Vec<serde_json::Value> = serde_json::from_slice(&read("adapters.json")?).map_err(|e| lopa::Error::Config(format!("adapters.json: {e}")))?;
                    match &list[..] {
                        [one] => one["name"].as_str().unwrap_or_default().to_string(),
                        _ => return Err(lopa::Error::Config(format!("{} holds {} adapters: pick one with --adapter", bundle.display(), list.len()))),
                    }
                }
            };
            let client = lopa::client::Client::from_bundles(&read("encoder.safetensors")?, &read("tokenizer.json")?, &read(&format!("adapters/{name}.safetensors"))?, &dev.device)?;
            let mut out = vec![];
            for text in &inputs {
                let input = match serde_json::from_str::<std::collections::BTreeMap<String, String>>(text) {
                    Ok(fields) => lopa::client::Input::Fields(fields),
                    Err(_) => lopa::client::Input::Text(text.clone()),
                };
                let sp = client.soft_prompt(&input)?;
                out.push(serde_json::json!({"input": input, "prompt": sp.prompt, "shape": [sp.rows, sp.width], "values": sp.values}));
            }
            println!("{}", serde_json::Value::Array(out));
        }
        Command::Predict { models, adapter, fields } => {
            let dev = select(models.backend.parse::<BackendChoice>()?)?;
            let (fm, enc, a, g) = load_adapter(&models, &adapter, &dev.device)?;
            let mut row = serde_json::Map::new();
            for f in &fields {
                let (k, v) = f.split_once('=').ok_or_else(|| lopa::Error::Input(format!("`{f}` is not column=value")))?;
                row.insert(k.to_string(), serde_json::Value::String(v.to_string()));
            }
            // The label / answer column only has to be present; it is not used for prediction.
            if let Some(label) = a.meta.task.labels().first() {
                row.insert(a.meta.task.label_column.clone(), serde_json::Value::String(label.to_string()));
            }
            for col in a.meta.task.answer_template.iter().flat_map(|t| lopa::tasks::TaskSpec::placeholders(t)) {
                row.entry(col).or_insert(serde_json::Value::String(String::new()));
            }
            let tmp = std::env::temp_dir().join(format!("lopa-predict-{}.jsonl", std::process::id()));
            std::fs::write(&tmp, serde_json::to_string(&row).expect("json")).map_err(|e| lopa::Error::io(&tmp, e))?;
            let ex = lopa::tasks::load_examples(&a.meta.task, &tmp);
            let _ = std::fs::remove_file(&tmp);
            let data = lopa::train::prepare(&ex?, &tmp, &fm, enc.as_ref(), usize::MAX, &dev.device)?;
            if a.meta.task.kind == lopa::tasks::TaskKind::Generation {
                let answer = lopa::train::generate_answers(&fm, &g, &data, 64, 1, &dev.device)?;
                println!("{}", serde_json::json!({"answer": answer[0]}));
                return Ok(());
            }
            let label_ids = lopa::train::label_token_ids(&a.meta.task, &fm)?;
            let p = lopa::train::label_probabilities(&fm.decoder, &g, &data, &label_ids, 1, &dev.device)?.remove(0);
            let labels = a.meta.task.labels();
            let probs: serde_json::Map<String, serde_json::Value> = labels.iter().zip(&p).map(|(l, pr)| (l.to_string(), serde_json::json!(pr))).collect();
            let best = (0..labels.len()).max_by(|&x, &y| p[x].total_cmp(&p[y])).unwrap_or(0);
            println!("{}", serde_json::json!({"label": labels[best], "label_word": a.meta.task.label_words[labels[best]], "probabilities": probs}));
        }
    }
    Ok(())
}

/// `lopa export-web`: the encoder bundle, its tokenizer and one bundle per adapter, each file
/// written atomically, plus `adapters.json` for pages that offer a choice.
/// `lopa serve` flags; unset limits take [`lopa::server::ServeConfig::default`].
#[cfg(feature = "server")]
#[derive(clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    models: ModelArgs,
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Serve through a vLLM server instead of this process: `vllm=http://HOST:PORT`. The gateway
    /// loads only the tokenizer and token embeddings of --model, which vLLM must serve too.
    #[arg(long)]
    upstream: Option<lopa::server::Upstream>,
    /// Accepted Host name (repeatable; `*` for any). Loopback names are always accepted.
    #[arg(long)]
    allow_host: Vec<String>,
    /// Allowed CORS origin (repeatable), e.g. http://127.0.0.1:8000, or `*` for any.
    #[arg(long)]
    cors_origin: Vec<String>,
    /// Most requests per forward pass (1 = one at a time).
    #[arg(long)]
    max_batch: Option<usize>,
    /// Most token positions per forward pass, summed over its requests.
    #[arg(long)]
    max_batch_tokens: Option<usize>,
    /// Milliseconds to wait for more requests after the first.
    #[arg(long)]
    batch_window_ms: Option<u64>,
    /// Waiting requests beyond this get 429.
    #[arg(long)]
    queue: Option<usize>,
    #[arg(long)]
    max_body_bytes: Option<usize>,
    #[arg(long)]
    max_tokens_limit: Option<usize>,
    /// Most token positions per request (soft prompt + prompt + new tokens; all candidates of a score).
    #[arg(long)]
    max_request_tokens: Option<usize>,
    #[arg(long)]
    max_soft_prompt_rows: Option<usize>,
    /// Requests in flight at once (503 beyond).
    #[arg(long)]
    max_concurrent: Option<usize>,
    /// Seconds a request may wait for its answer.
    #[arg(long)]
    timeout_s: Option<u64>,
    /// Seconds a streamed completion may run.
    #[arg(long)]
    stream_timeout_s: Option<u64>,
}

#[cfg(feature = "server")]
fn serve(a: ServeArgs) -> lopa::Result<()> {
    use lopa::server::{Backend, ServeConfig};
    use std::time::Duration;
    let d = ServeConfig::default();
    let mut cfg = ServeConfig {
        engine: lopa::server::EngineConfig {
            max_batch: a.max_batch.unwrap_or(d.engine.max_batch),
            max_batch_tokens: a.max_batch_tokens.unwrap_or(d.engine.max_batch_tokens),
            batch_window: a.batch_window_ms.map_or(d.engine.batch_window, Duration::from_millis),
            queue: a.queue.unwrap_or(d.engine.queue),
        },
        max_soft_prompt_rows: a.max_soft_prompt_rows.unwrap_or(d.max_soft_prompt_rows),
        max_body_bytes: a.max_body_bytes.unwrap_or(d.max_body_bytes),
        max_tokens_limit: a.max_tokens_limit.unwrap_or(d.max_tokens_limit),
        max_request_tokens: a.max_request_tokens.unwrap_or(d.max_request_tokens),
        request_timeout: a.timeout_s.map_or(d.request_timeout, Duration::from_secs),
        stream_timeout: a.stream_timeout_s.map_or(d.stream_timeout, Duration::from_secs),
        max_concurrent: a.max_concurrent.unwrap_or(d.max_concurrent),
        cors_origins: a.cors_origin,
        allowed_hosts: a.allow_host,
        ..d
    };
    // A server bound to one address answers to that address as a Host name too.
    if let Ok(sa) = a.addr.parse::<std::net::SocketAddr>() {
        if !sa.ip().is_unspecified() {
            cfg.allowed_hosts.push(match sa.ip() {
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                ip => ip.to_string(),
            });
        }
    }
    cfg.validate().map_err(lopa::Error::Config)?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| lopa::Error::Backend(e.to_string()))?;
    rt.block_on(async move {
        let (app, what) = match &a.upstream {
            None => {
                let dev = select(a.models.backend.parse::<BackendChoice>()?)?;
                let fm = FoundationModel::load(a.models.model_path(), &dev.device)?;
                let what = format!("{} ({})", fm.id, dev.name);
                (lopa::server::router(fm, dev.device, cfg.clone()), what)
            }
            Some(up) => {
                let emb = lopa::decoder::TokenEmbedding::load(a.models.model_path())?;
                let vllm = lopa::server::Vllm::connect(&up.url, emb).await?;
                let info = vllm.model_info();
                let what = format!("{} through vLLM at {}", info.id, up.url);
                (lopa::server::router_with(Backend::Vllm(std::sync::Arc::new(vllm)), info, cfg.clone()), what)
            }
        };
        let listener = tokio::net::TcpListener::bind(&a.addr).await.map_err(|e| lopa::Error::Backend(format!("bind {}: {e}", a.addr)))?;
        let at = listener.local_addr().map(|x| x.to_string()).unwrap_or(a.addr.clone());
        eprintln!("lopa: serving {what} on http://{at}");
        if cfg.allowed_hosts.is_empty() && at.starts_with("0.0.0.0") {
            eprintln!("lopa: only loopback Host names are accepted; add --allow-host NAME for the names clients use");
        }
        lopa::server::serve(listener, app, &cfg, async { let _ = tokio::signal::ctrl_c().await; }).await.map_err(|e| lopa::Error::Backend(e.to_string()))
    })
}

fn export_web(encoder: Option<PathBuf>, adapters: &[String], out: &std::path::Path, dtype: &str) -> lopa::Result<()> {
    use lopa::weights::safetensors::StoreAs;
    let store_as = match dtype {
        "f16" => StoreAs::F16,
        "f32" => StoreAs::F32,
        other => return Err(lopa::Error::Config(format!("--dtype `{other}` (f16, f32)"))),
    };
    let dir = encoder.unwrap_or_else(lopa::paths::default_encoder);
    let enc = SentenceEncoder::from_dir(&dir, &burn::tensor::Device::flex())?;
    let weights = lopa::error::read_file(dir.join("model.safetensors"))?;
    let mut files = vec![
        ("encoder.safetensors".to_string(), lopa::bundle::encoder_bundle(&enc, &weights, store_as)?),
        ("tokenizer.json".to_string(), lopa::error::read_file(dir.join("tokenizer.json"))?),
    ];
    let mut list = vec![];
    for spec in adapters {
        let (name, path) = spec.split_once('=').ok_or_else(|| lopa::Error::Input(format!("--adapter `{spec}` is not NAME=DIR")))?;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(lopa::Error::Input(format!("adapter name `{name}`: use letters, digits, - and _")));
        }
        let a = lopa::adapter::Adapter::load(std::path::Path::new(path))?;
        // Refuse here what the browser would refuse (LoRA, another encoder).
        lopa::client::check_runs_on_client(&a.meta, &enc).map_err(|e| match e {
            lopa::Error::Config(m) => lopa::Error::Config(format!("{path}: {m}")),
            other => other,
        })?;
        let bytes = a.bundle(store_as);
        let file = format!("adapters/{name}.safetensors");
        list.push(serde_json::json!({"name": name, "file": file, "bytes": bytes.len(), "task": a.meta.task.name, "kind": a.meta.task.kind,
            "method": a.meta.generator.method.name(), "trainable_parameters": a.meta.generator.trainable_parameters()}));
        files.push((file, bytes));
    }
    files.push(("adapters.json".to_string(), serde_json::to_vec_pretty(&list).expect("json")));
    std::fs::create_dir_all(out.join("adapters")).map_err(|e| lopa::Error::io(out, e))?;
    for (name, bytes) in &files {
        lopa::adapter::write_atomic(&out.join(name), bytes)?;
        eprintln!("lopa: {} {:.2} MB", out.join(name).display(), bytes.len() as f64 / 1e6);
    }
    Ok(())
}

type Loaded = (FoundationModel, Option<SentenceEncoder>, lopa::adapter::Adapter, lopa::generator::PromptGenerator);

fn load_adapter(models: &ModelArgs, dir: &std::path::Path, device: &burn::tensor::Device) -> lopa::Result<Loaded> {
    let a = lopa::adapter::Adapter::load(dir)?;
    let fm = FoundationModel::load(models.model_path(), device)?;
    let enc = if a.meta.generator.method.uses_encoder() { Some(SentenceEncoder::from_dir(models.encoder_path(), device)?) } else { None };
    a.meta.check_compatible(&fm, enc.as_ref())?;
    let g = lopa::generator::PromptGenerator::from_tensors(&a.meta.generator, &a.weights, device)?;
    Ok((fm, enc, a, g))
}

struct Bar(indicatif::ProgressBar, usize);

impl lopa::train::Progress for Bar {
    fn step(&mut self, epoch: usize, step: usize, steps: usize, loss: f64, sps: f64) {
        if self.0.length() != Some(steps as u64) || step == 1 {
            self.0.set_length(steps as u64);
            self.0.reset_eta();
        }
        self.0.set_position(step as u64);
        self.0.set_message(format!("epoch {epoch}/{} loss {loss:.4} {sps:.1} samples/s", self.1));
    }
    fn epoch(&mut self, m: &lopa::train::EpochMetrics) {
        let line = format!(
            "epoch {}: train loss {:.4}, dev {} {:.4}{}, {:.1} samples/s, {:.0} s",
            m.epoch,
            m.train_loss,
            if m.metric == "pass@1" || m.metric == "exact_match" { m.metric.as_str() } else { "accuracy" },
            m.dev_accuracy,
            m.dev_f1.map(|f| format!(", dev F1 {f:.4}")).unwrap_or_default(),
            m.samples_per_sec,
            m.seconds
        );
        // A hidden bar (output not a terminal) prints nothing; logs still get the epoch line.
        if self.0.is_hidden() { eprintln!("{line}") } else { self.0.println(line) }
    }
}

#[allow(clippy::too_many_arguments)]
fn bench_train(backend: &str, b: usize, s: usize, layers: usize, method: &str, steps: usize, warmup: usize, matmul: bool) -> lopa::Result<()> {
    use burn::optim::{AdamWConfig, GradientsParams};
    use lopa::generator::{GeneratorConfig, Method};
    use lopa::train::Prepared;
    let dev = select(backend.parse::<BackendChoice>()?)?;
    let ad = dev.device.clone().autodiff();
    let mut cfg = lopa::decoder::Decoder::smollm2_135m_config();
    cfg.num_hidden_layers = layers;
    let t0 = std::time::Instant::now();
    let decoder = lopa::decoder::Decoder::random(&cfg, 1, &ad)?;
    let load_s = t0.elapsed().as_secs_f64();
    let mut g = GeneratorConfig::new(method.parse::<Method>()?, 576, 384).init(&ad)?;
    let mut optim = AdamWConfig::new().init();
    let mut rng = lopa::generate::Rng::new(3);
    let data: Vec<Prepared> = (0..b)
        .map(|i| Prepared {
            ids: (0..s).map(|_| (rng.next_u64() % 49152) as u32).collect(),
            answer: vec![[1000u32, 2000][i % 2]],
            features: (0..384).map(|_| rng.next_f32() - 0.5).collect(),
            label: i % 2,
            fields: Default::default(),
        })
        .collect();
    let batch: Vec<&Prepared> = data.iter().collect();
    let mut times = vec![];
    for step in 0..warmup + steps {
        let t = std::time::Instant::now();
        let logits = lopa::train::answer_logits(&decoder, &g, &batch, &ad)?;
        let l = lopa::train::loss(logits, &batch, &ad);
        let mut grads = l.backward();
        let grads = GradientsParams::from_module(&mut grads, &g);
        g = optim.step(1e-3, g, grads);
        // Reading one parameter back forces the step to finish on asynchronous backends.
        let _: f32 = g.task_prompt.as_ref().map(|z| z.val().sum().into_scalar()).unwrap_or(0.0);
        let dt = t.elapsed().as_secs_f64();
        eprintln!("step {step}: {dt:.3} s{}", if step < warmup { " (warm-up)" } else { "" });
        if step >= warmup {
            times.push(dt);
        }
    }
    let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
    let matmul_tflops = if matmul {
        let rows = b * (s + 10);
        let x = burn::tensor::Tensor::<2>::random([rows, 576], burn::tensor::Distribution::Normal(0.0, 1.0), &dev.device);
        let w = burn::tensor::Tensor::<2>::random([576, 1536], burn::tensor::Distribution::Normal(0.0, 1.0), &dev.device);
        // Warm up until autotuning and shader compilation for this shape are done.
        for _ in 0..3 {
            let mut acc = x.clone().matmul(w.clone());
            for _ in 0..10 {
                acc = acc + x.clone().matmul(w.clone());
            }
            let _: f32 = acc.sum().into_scalar();
        }
        let t = std::time::Instant::now();
        let reps = 50;
        let mut acc = burn::tensor::Tensor::<2>::zeros([rows, 1536], &dev.device);
        for _ in 0..reps {
            acc = acc + x.clone().matmul(w.clone());
        }
        let _: f32 = acc.sum().into_scalar();
        let dt = t.elapsed().as_secs_f64();
        Some(2.0 * rows as f64 * 576.0 * 1536.0 * reps as f64 / dt / 1e12)
    } else {
        None
    };
    println!("{}", serde_json::json!({
        "matmul_tflops": matmul_tflops,
        "backend": dev.name, "method": method, "batch_size": b, "seq_len": s, "layers": layers,
        "virtual_tokens": g.config.prompt_len(), "step_seconds": mean, "samples_per_sec": b as f64 / mean,
        "weights_init_seconds": load_s
    }));
    Ok(())
}

fn train(a: TrainArgs) -> lopa::Result<()> {
    use lopa::generator::{GeneratorConfig, Method};
    let task = match &a.task_spec {
        Some(p) => serde_json::from_slice(&lopa::error::read_file(p)?).map_err(|e| lopa::Error::Config(format!("{}: {e}", p.display())))?,
        None => lopa::tasks::TaskSpec::builtin(&a.task)?,
    };
    let (train_file, dev_file) = task.default_files(&lopa::tasks::data_dir());
    let method: Method = a.method.parse()?;
    let dev = select(a.models.backend.parse::<BackendChoice>()?)?;
    eprintln!("lopa: backend {}", dev.name);
    let ad = dev.device.clone().autodiff();
    let fm = FoundationModel::load(a.models.model_path(), &ad)?;
    let enc = if method.uses_encoder() { Some(SentenceEncoder::from_dir(a.models.encoder_path(), &dev.device)?) } else { None };
    let mut generator = GeneratorConfig::new(method, fm.decoder.hidden_size(), enc.as_ref().map_or(1, |e| e.hidden_size()));
    generator.num_virtual_tokens = a.m;
    generator.rank = a.rank;
    generator.hidden_dim = a.hidden;
    if method == Method::Lora {
        generator.lora = Some(lopa::lora::LoraConfig::for_decoder(&fm.config, a.lora_rank, a.lora_alpha));
    }
    generator.task_prompt_init_std = match a.prompt_init_std {
        Some(s) => s,
        None => fm.decoder.embedding_std()?,
    };
    let cfg = lopa::train::TrainConfig {
        task,
        train_file: a.train_file.unwrap_or(train_file),
        dev_file: a.dev_file.unwrap_or(dev_file),
        generator,
        learning_rate: a.lr,
        warmup_ratio: a.warmup,
        lr_schedule: a.lr_schedule.clone(),
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
        let (acc, f1) = lopa::train::zero_shot(&cfg.task, &cfg.dev_file, cfg.dev_limit, &FoundationModel { decoder: plain.decoder.valid(), ..plain }, &dev.device)?;
        eprintln!("lopa: zero-shot dev accuracy {acc:.4}{}", f1.map(|f| format!(", F1 {f:.4}")).unwrap_or_default());
        Some(acc)
    } else {
        None
    };
    let style = indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} eta {eta}").expect("template");
    let mut bar = Bar(indicatif::ProgressBar::new(1).with_style(style), cfg.epochs);
    let mut summary = lopa::train::train(&cfg, &fm, enc.as_ref(), &dev.device, &ad, &a.run_dir, a.resume, &mut bar)?;
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

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lopa: {e}");
            ExitCode::FAILURE
        }
    }
}
