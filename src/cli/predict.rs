//! `lopa predict`: one input through a saved adapter: a label with its probabilities, or an answer.

use crate::args::AdapterArgs;
use lopa::task::TaskKind;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    adapter: AdapterArgs,
    /// The input, as `column=value` pairs for the task's template (e.g. `sentence=a fine film`).
    #[arg(required = true)]
    fields: Vec<String>,
}

pub fn run(a: Args) -> lopa::Result<()> {
    let (dev, l) = a.adapter.load()?;
    let task = &l.adapter.meta.task;
    let mut row = BTreeMap::new();
    for f in &a.fields {
        let (k, v) = f.split_once('=').ok_or_else(|| lopa::Error::Input(format!("`{f}` is not column=value")))?;
        row.insert(k.to_string(), v.to_string());
    }
    // The label / answer columns only have to be present; prediction does not read them.
    let inputs = task.input_columns();
    for col in task.columns()?.into_iter().filter(|c| !inputs.contains(c)) {
        row.entry(col).or_default();
    }
    if let Some(label) = task.labels().first() {
        row.insert(task.label_column.clone(), label.to_string());
    }
    let ex = lopa::training::examples::example(task, row, 0).map_err(lopa::Error::Input)?;
    let data = lopa::training::prepare(&[ex], Path::new("--field"), &l.fm, l.encoder.as_ref(), usize::MAX, &dev.device)?;
    if task.kind == TaskKind::Generation {
        let answer = lopa::training::generate_answers(&l.fm, Some(&l.adaptation), &data, 64, 1, &dev.device)?;
        println!("{}", json!({"answer": answer[0]}));
        return Ok(());
    }
    let label_ids = lopa::training::label_token_ids(task, &l.fm)?;
    let p = lopa::training::label_probabilities(&l.fm.decoder, Some(&l.adaptation), &data, &label_ids, 1, &dev.device)?.remove(0);
    let labels = task.labels();
    let probs: Map<String, Value> = labels.iter().zip(&p).map(|(l, pr)| (l.to_string(), json!(pr))).collect();
    let best = (0..labels.len()).max_by(|&x, &y| p[x].total_cmp(&p[y])).unwrap_or(0);
    println!("{}", json!({"label": labels[best], "label_word": task.label_words[labels[best]], "probabilities": probs}));
    Ok(())
}
