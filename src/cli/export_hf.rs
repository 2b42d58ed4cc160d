//! `lopa export-hf`: the frozen model as a Hugging Face folder, what vLLM loads to serve exactly
//! the model `lopa serve` runs.

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Frozen foundation model: a .gguf file or a Hugging Face directory [default: cached SmolLM2-135M-Instruct].
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: Args) -> lopa::Result<()> {
    let model = a.model.unwrap_or_else(lopa::paths::default_foundation_model);
    lopa::model::export::export_hf(&model, &a.out)?;
    eprintln!("lopa: wrote {} as a Hugging Face folder in {}", model.display(), a.out.display());
    Ok(())
}
