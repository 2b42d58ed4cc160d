//! The README's Rust API example, compiled by `cargo test` so that it stays true.
//! Run: `cargo run --example quickstart` (needs scripts/fetch-weights.sh first).

use burn::tensor::Device;
use lopa::model::{decoder::FoundationModel, encoder::SentenceEncoder, generate::*, generator::*, sampling::SamplingParams, SoftPrompt};

fn main() -> lopa::Result<()> {
    let device = Device::flex(); // or lopa::device::select(BackendChoice::Auto)?.device
    let fm = FoundationModel::load(lopa::paths::default_foundation_model(), &device)?; // .gguf or HF dir
    let enc = SentenceEncoder::from_dir(lopa::paths::default_encoder(), &device)?;

    // A LoPA generator (m = 10, r = 4, H = 256), fresh or from a trained adapter.
    let generator = GeneratorConfig::new(Method::Lopa, fm.decoder.hidden_size(), enc.hidden_size()).init(&device)?;
    let z = generator.forward(enc.embed(&["a gripping, funny film"], &device)?)?; // [1, 10, 576]

    // The frozen model with the soft prompt in front: generation with a KV cache.
    let ids = fm.tokenizer.encode("The movie was")?;
    let req = GenerationRequest { prompt_ids: ids, soft_prompt: Some(SoftPrompt::from_tensor(z)?) };
    let out = generate(&fm.decoder, &[req], &SamplingParams { max_tokens: 16, ..Default::default() }, &device)?;
    println!("{}", fm.tokenizer.decode(&out[0].tokens)?);
    Ok(())
}
