//! `lopa generate`: the frozen model alone completes a prompt.

use crate::args::ModelArgs;
use lopa::model::generate::{generate, GenerationRequest};
use lopa::model::sampling::SamplingParams;

#[derive(clap::Args)]
pub struct Args {
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
}

pub fn run(a: Args) -> lopa::Result<()> {
    let dev = a.models.device()?;
    let fm = a.models.load_model(&dev.device)?;
    let req = GenerationRequest { prompt_ids: fm.tokenizer.encode(&a.prompt)?, soft_prompt: None };
    let p = SamplingParams { max_tokens: a.max_tokens, temperature: a.temperature, top_p: a.top_p, stop_token_ids: fm.tokenizer.eos_token_ids.clone(), seed: a.seed };
    let out = generate(&fm.decoder, &[req], &p, &dev.device)?;
    println!("{}{}", a.prompt, fm.tokenizer.decode(&out[0].tokens)?);
    Ok(())
}
