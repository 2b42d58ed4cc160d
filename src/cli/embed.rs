//! `lopa embed`: the sentence encoder's embeddings of texts, one JSON array per line, from an
//! encoder directory or from the browser's files (`--bundle`, as the package's `embed()` reads them).

use crate::args::ModelArgs;
use lopa::model::encoder::SentenceEncoder;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    models: ModelArgs,
    /// A folder written by `lopa export-web`: its encoder bundle instead of --encoder.
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// Texts, embedded as one batch.
    #[arg(required = true)]
    texts: Vec<String>,
}

pub fn run(a: Args) -> lopa::Result<()> {
    let dev = a.models.device()?;
    let enc = match &a.bundle {
        Some(dir) => {
            let read = |n: &str| lopa::fs::read_file(dir.join(n));
            SentenceEncoder::from_bundle(&read("encoder.safetensors")?, &read("tokenizer.json")?, &dev.device)?
        }
        None => SentenceEncoder::from_dir(a.models.encoder_path(), &dev.device)?,
    };
    let texts: Vec<&str> = a.texts.iter().map(String::as_str).collect();
    let v = lopa::device::to_vec(enc.embed(&texts, &dev.device)?)?;
    for row in v.chunks(enc.hidden_size()) {
        println!("{}", serde_json::to_string(row).expect("json"));
    }
    Ok(())
}
