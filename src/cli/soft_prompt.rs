//! `lopa soft-prompt`: the soft prompts of inputs computed from the browser files as the browser
//! package computes them; the native reference of its parity test.

use lopa::client::{Client, Input};
use lopa::device::{select, BackendChoice};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Folder written by `lopa export-web`.
    #[arg(long)]
    bundle: PathBuf,
    /// Which adapter of the folder [default: the only one].
    #[arg(long)]
    adapter: Option<String>,
    #[arg(long, value_enum, default_value_t = BackendChoice::Cpu)]
    backend: BackendChoice,
    /// Inputs: plain texts, or JSON objects of the task's fields.
    #[arg(required = true)]
    inputs: Vec<String>,
}

pub fn run(a: Args) -> lopa::Result<()> {
    let dev = select(a.backend)?;
    let read = |n: &str| lopa::error::read_file(a.bundle.join(n));
    let name = match a.adapter {
        Some(n) => n,
        None => {
            let list: Vec<serde_json::Value> = serde_json::from_slice(&read("adapters.json")?).map_err(|e| lopa::Error::Config(format!("adapters.json: {e}")))?;
            match &list[..] {
                [one] => one["name"].as_str().unwrap_or_default().to_string(),
                _ => return Err(lopa::Error::Config(format!("{} holds {} adapters: pick one with --adapter", a.bundle.display(), list.len()))),
            }
        }
    };
    let client = Client::from_bundles(&read("encoder.safetensors")?, &read("tokenizer.json")?, &read(&format!("adapters/{name}.safetensors"))?, &dev.device)?;
    let mut out = vec![];
    for text in &a.inputs {
        let input = match serde_json::from_str::<BTreeMap<String, String>>(text) {
            Ok(fields) => Input::Fields(fields),
            Err(_) => Input::Text(text.clone()),
        };
        let q = client.query(&input)?;
        let z = &q.soft_prompt;
        out.push(serde_json::json!({"input": input, "prompt": q.prompt, "shape": [z.rows(), z.width()], "values": z.values()}));
    }
    println!("{}", serde_json::Value::Array(out));
    Ok(())
}
