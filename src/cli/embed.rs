//! `lopa embed`: the sentence encoder's embedding of a text.

use crate::args::ModelArgs;
use lopa::model::encoder::SentenceEncoder;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    models: ModelArgs,
    text: String,
}

pub fn run(a: Args) -> lopa::Result<()> {
    let dev = a.models.device()?;
    let enc = SentenceEncoder::from_dir(a.models.encoder_path(), &dev.device)?;
    let v = lopa::device::to_vec(enc.embed(&[&a.text], &dev.device)?)?;
    println!("{}", serde_json::to_string(&v).expect("json"));
    Ok(())
}
