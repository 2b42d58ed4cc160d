//! `lopa eval`: a saved adapter's score on a labelled file.

use crate::args::AdapterArgs;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    adapter: AdapterArgs,
    /// Labelled file [default: the task's dev split].
    #[arg(long)]
    file: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    limit: usize,
}

pub fn run(a: Args) -> lopa::Result<()> {
    let (dev, l) = a.adapter.load()?;
    let task = &l.adapter.meta.task;
    let (file, rows) = match a.file {
        Some(f) => (f, None),
        None => (lopa::training::examples::default_files(task, &crate::args::data_dir()).1, task.dev_rows),
    };
    let mut ex = lopa::training::examples::load_rows(task, &file, rows)?;
    if a.limit > 0 {
        ex.truncate(a.limit);
    }
    let data = lopa::training::prepare(&ex, &file, &l.fm, l.encoder.as_ref(), usize::MAX, &dev.device)?;
    let (score, f1) = lopa::training::evaluate(task, &l.fm, Some(&l.adaptation), &data, 16, &dev.device)?;
    println!("{}", serde_json::json!({"file": file, "examples": data.len(), "metric": task.metric, "score": score, "f1": f1}));
    Ok(())
}
