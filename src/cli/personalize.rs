//! `lopa personalize`: train a copy of an adapter on your own labelled examples against a
//! `lopa serve` endpoint, which answers only dLoss/dZ (`/v1/soft_prompt_grad`). The same loop as
//! the browser package's `personalize`; the examples' text and targets leave this machine, the
//! adapter does not.

use crate::args::ModelArgs;
use lopa::task::TaskKind;
use lopa::training::examples::load_examples;
use lopa::adapter::Adapter;
use lopa::client::personalize::{Optimizer, PersonalizeOptions, Personalizer, TrainingText};
use lopa::client::Client;
use lopa::wire::GRADIENT_PATH;
use lopa::model::encoder::SentenceEncoder;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    models: ModelArgs,
    /// The adapter to start from (adapter.json + adapter.safetensors).
    #[arg(long, required_unless_present = "bundle")]
    adapter: Option<PathBuf>,
    /// Start from the browser's files instead (a folder `lopa export-web` wrote: its encoder
    /// and the adapter `--bundle-adapter`), as the browser package does.
    #[arg(long, conflicts_with = "adapter")]
    bundle: Option<PathBuf>,
    /// Which adapter of `--bundle` [default: the only one].
    #[arg(long, requires = "bundle")]
    bundle_adapter: Option<String>,
    /// `lopa serve` base URL (the embedded engine: the vLLM gateway has no backward pass).
    #[arg(long)]
    endpoint: String,
    /// Your labelled examples: a TSV or JSONL file with the task's columns.
    #[arg(long)]
    data: PathBuf,
    /// Where the personalised adapter is written.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 32)]
    steps: usize,
    #[arg(long, value_enum, default_value_t = Optimizer::AdamW)]
    optimizer: Optimizer,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// AdamW's ε: a coordinate whose gradient is far below it moves by lr × gradient / ε.
    #[arg(long, default_value_t = 1e-5)]
    epsilon: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Start from fresh weights of the adapter's shape (its task, sizes and models) instead of its trained ones.
    #[arg(long)]
    from_scratch: bool,
}

pub fn run(a: Args) -> lopa::Result<()> {
    let dev = a.models.device()?;
    let client = match (&a.adapter, &a.bundle) {
        (_, Some(dir)) => crate::args::bundle_client(dir, a.bundle_adapter.as_deref(), &dev.device)?,
        (Some(adapter), None) => Client::new(SentenceEncoder::from_dir(a.models.encoder_path(), &dev.device)?, Adapter::load(adapter)?, &dev.device)?,
        (None, None) => return Err(lopa::Error::Config("give --adapter DIR, or --bundle DIR".into())),
    };
    let task = client.task().clone();
    let texts: Vec<TrainingText> = load_examples(&task, &a.data)?
        .into_iter()
        .map(|e| TrainingText {
            target: match task.kind {
                TaskKind::Classification => task.label_words[task.labels()[e.label]].clone(),
                TaskKind::Generation => e.answer,
            },
            encoder_text: e.encoder_text,
            prompt: e.prompt,
        })
        .collect();
    let options = PersonalizeOptions { optimizer: a.optimizer, learning_rate: a.lr, batch_size: a.batch_size, weight_decay: a.weight_decay, epsilon: a.epsilon, seed: a.seed, from_scratch: a.from_scratch };
    let mut p = Personalizer::new(&client, &texts, options, &dev.device.clone().autodiff())?;
    let url = format!("{}{GRADIENT_PATH}", a.endpoint.trim_end_matches('/'));
    let http = reqwest::Client::new();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| lopa::Error::Backend(e.to_string()))?;
    eprintln!("lopa: personalising on {} examples through {url} ({})", texts.len(), dev.name);
    for _ in 0..a.steps {
        let t0 = std::time::Instant::now();
        let request = p.next_request()?;
        let (status, body) = rt.block_on(async {
            let r = http.post(&url).json(&request).send().await?;
            Ok::<_, reqwest::Error>((r.status().as_u16(), r.bytes().await?))
        })
        .map_err(|e| lopa::Error::Endpoint(format!("{url}: {e}")))?;
        let report = p.apply_http(status, &body)?;
        println!("{}", serde_json::json!({"step": report.step, "loss": report.loss, "seconds": t0.elapsed().as_secs_f64()}));
    }
    p.adapter()?.save(&a.out)?;
    eprintln!("lopa: wrote {}", a.out.display());
    Ok(())
}
