//! `lopa soft-prompt`: the soft prompts of inputs computed from the browser files as the browser
//! package computes them; the native reference of its parity test.

use lopa::client::Input;
use lopa::device::BackendChoice;
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
    let dev = crate::args::select_quietly(a.backend)?;
    let client = crate::args::bundle_client(&a.bundle, a.adapter.as_deref(), &dev.device)?;
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
