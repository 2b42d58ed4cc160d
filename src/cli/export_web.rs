//! `lopa export-web`: the browser's weight files in one folder: `encoder.safetensors` (the
//! encoder as a single-file bundle, int8 by default), `tokenizer.json`,
//! `adapters/NAME.safetensors` per adapter and `adapters.json` listing them; each file written
//! atomically.

use lopa::adapter::Adapter;
use lopa::fs::write_atomic;
use lopa::model::encoder::SentenceEncoder;
use lopa::model::weights::safetensors::StoreAs;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Sentence encoder: a Hugging Face BERT directory [default: cached all-MiniLM-L6-v2].
    #[arg(long)]
    encoder: Option<PathBuf>,
    /// NAME=DIR: an adapter directory (adapter.json + adapter.safetensors) to add (repeatable).
    #[arg(long)]
    adapter: Vec<String>,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// How the weights are stored: int8 (matrices int8 with an f16 scale per 64 columns, about a
    /// quarter of f32; the default), f16 or f32. The browser computes in f32 whichever is chosen.
    #[arg(long, value_enum, default_value_t = StoreAs::Int8)]
    dtype: StoreAs,
}

pub fn run(a: Args) -> lopa::Result<()> {
    let dir = a.encoder.unwrap_or_else(lopa::paths::default_encoder);
    let enc = SentenceEncoder::from_dir(&dir, &burn::tensor::Device::flex())?;
    let weights = lopa::fs::read_file(dir.join("model.safetensors"))?;
    let mut files = vec![
        ("encoder.safetensors".to_string(), lopa::model::encoder::bundle::encoder_bundle(&enc, &weights, a.dtype)?),
        ("tokenizer.json".to_string(), lopa::fs::read_file(dir.join("tokenizer.json"))?),
    ];
    let mut list = vec![];
    for spec in &a.adapter {
        let (name, path) = spec.split_once('=').ok_or_else(|| lopa::Error::Input(format!("--adapter `{spec}` is not NAME=DIR")))?;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(lopa::Error::Input(format!("adapter name `{name}`: use letters, digits, - and _")));
        }
        let ad = Adapter::load(Path::new(path))?;
        // Refuse here what the browser would refuse (LoRA, another encoder).
        lopa::client::check_runs_on_client(&ad.meta, &enc).map_err(|e| match e {
            lopa::Error::Config(m) => lopa::Error::Config(format!("{path}: {m}")),
            other => other,
        })?;
        let bytes = ad.bundle(a.dtype);
        let file = format!("adapters/{name}.safetensors");
        list.push(serde_json::json!({"name": name, "file": file, "bytes": bytes.len(), "task": ad.meta.task.name, "kind": ad.meta.task.kind,
            "method": ad.meta.adaptation.kind().name(), "trainable_parameters": ad.meta.adaptation.trainable_parameters()}));
        files.push((file, bytes));
    }
    files.push(("adapters.json".to_string(), serde_json::to_vec_pretty(&list).expect("json")));
    std::fs::create_dir_all(a.out.join("adapters")).map_err(|e| lopa::Error::io(&a.out, e))?;
    for (name, bytes) in &files {
        write_atomic(&a.out.join(name), bytes)?;
        eprintln!("lopa: {} {:.2} MB", a.out.join(name).display(), bytes.len() as f64 / 1e6);
    }
    Ok(())
}
