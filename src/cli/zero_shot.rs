//! `lopa zero-shot`: the frozen model's dev score with no adaptation at all.

use crate::args::ModelArgs;
use lopa::task::TaskSpec;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    models: ModelArgs,
    /// Built-in task: sst2, rte, mrpc, cruxeval-o, cruxeval-i.
    #[arg(long, default_value = "sst2")]
    task: String,
    /// Evaluate on the first N dev rows only (0 = all).
    #[arg(long, default_value_t = 0)]
    dev_limit: usize,
}

pub fn run(a: Args) -> lopa::Result<()> {
    let dev = a.models.device()?;
    let task = TaskSpec::builtin(&a.task)?;
    let (_, dev_file) = lopa::training::examples::default_files(&task, &crate::args::data_dir());
    let fm = a.models.load_model(&dev.device)?;
    let t0 = std::time::Instant::now();
    let (acc, f1) = lopa::training::zero_shot(&task, &dev_file, a.dev_limit, &fm, &dev.device)?;
    println!("{}", serde_json::json!({"task": task.name, "dev_accuracy": acc, "dev_f1": f1, "seconds": t0.elapsed().as_secs_f64(), "backend": dev.name,
        "check": task.check}));
    Ok(())
}
