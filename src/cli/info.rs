//! `lopa info`: a model's configuration and identity.

use crate::args::ModelArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    models: ModelArgs,
}

pub fn run(a: Args) -> lopa::Result<()> {
    let dev = a.models.device()?;
    let fm = a.models.load_model(&dev.device)?;
    println!("backend: {}", dev.name);
    println!("model: {} (sha256 {})", fm.id, fm.sha256);
    println!("{}", serde_json::to_string_pretty(&fm.config.to_hf_json()?).expect("json"));
    Ok(())
}
