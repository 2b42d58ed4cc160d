//! Evaluation: logits behind an adaptation's soft prompts (or inside its LoRA, or of the bare
//! model), label probabilities, greedy answers, and the task's dev score.

use super::data::{label_token_ids, prepare, Prepared};
use super::examples::load_rows;
use crate::task::{Metric, TaskKind, TaskSpec};
use crate::error::Result;
use crate::model::adaptation::Adaptation;
use crate::model::decoder::{Decoder, FoundationModel};
use crate::model::generator::PromptGenerator;
use burn::tensor::{Device, Tensor, TensorData};
use std::path::Path;

/// Soft prompts `[b, m, d]` for a batch: f(x) of each example (zeros for methods without an
/// encoder) through the generator.
fn soft_prompts(generator: &PromptGenerator, batch: &[&Prepared], device: &Device) -> Result<Tensor<3>> {
    let h = generator.config.encoder_dim;
    let feats: Vec<f32> = batch.iter().flat_map(|p| if p.features.is_empty() { vec![0.0; h] } else { p.features.clone() }).collect();
    generator.forward(Tensor::<2>::from_data(TensorData::new(feats, [batch.len(), h]), device))
}

/// Teacher-forced logits for every answer token behind each example's soft prompt
/// (`[Σ answer lengths, vocab]`; an empty answer counts as the one slot after the prompt, which
/// is what classification scores). See [`crate::model::generate::teacher_forced_logits`].
/// `adaptation` is none for the bare frozen model.
pub fn answer_logits(decoder: &Decoder, adaptation: Option<&Adaptation>, batch: &[&Prepared], device: &Device) -> Result<Tensor<2>> {
    let z = adaptation.and_then(Adaptation::generator).map(|g| soft_prompts(g, batch, device)).transpose()?;
    let rows: Vec<(&[u32], &[u32])> = batch.iter().map(|p| (p.ids.as_slice(), p.answer.as_slice())).collect();
    crate::model::generate::teacher_forced_logits(&adapted(decoder, adaptation), z, &rows, device)
}

/// The decoder an adaptation's outputs go to: the frozen one, or the frozen one with a LoRA.
fn adapted<'a>(decoder: &'a Decoder, adaptation: Option<&Adaptation>) -> std::borrow::Cow<'a, Decoder> {
    match adaptation {
        Some(a) => a.decoder(decoder),
        None => std::borrow::Cow::Borrowed(decoder),
    }
}

/// Classification predictions (argmax over the label words only) for `data`.
pub fn predict(decoder: &Decoder, adaptation: Option<&Adaptation>, data: &[Prepared], label_ids: &[u32], batch_size: usize, device: &Device) -> Result<Vec<usize>> {
    Ok(label_probabilities(decoder, adaptation, data, label_ids, batch_size, device)?
        .iter()
        .map(|p| (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap_or(0))
        .collect())
}

/// Probabilities of each label word at the slot, renormalised over the label words.
pub fn label_probabilities(decoder: &Decoder, adaptation: Option<&Adaptation>, data: &[Prepared], label_ids: &[u32], batch_size: usize, device: &Device) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(data.len());
    let v = decoder.vocab_size();
    for chunk in data.chunks(batch_size.max(1)) {
        // Only the slot after the prompt is scored.
        let slots: Vec<Prepared> = chunk.iter().map(|p| Prepared { answer: vec![], ..p.clone() }).collect();
        let refs: Vec<&Prepared> = slots.iter().collect();
        let logits = crate::device::to_vec(answer_logits(decoder, adaptation, &refs, device)?)?;
        for r in 0..chunk.len() {
            let picked: Vec<f32> = label_ids.iter().map(|&i| logits[r * v + i as usize]).collect();
            out.push(crate::model::sampling::log_softmax(&picked).iter().map(|x| x.exp()).collect());
        }
    }
    Ok(out)
}

/// Greedy answers for a generation task, cut at the first newline.
pub fn generate_answers(fm: &FoundationModel, adaptation: Option<&Adaptation>, data: &[Prepared], max_tokens: usize, batch_size: usize, device: &Device) -> Result<Vec<String>> {
    use crate::model::generate::{generate, GenerationRequest};
    use crate::model::sampling::SamplingParams;
    use crate::model::SoftPrompt;
    let d = fm.decoder.hidden_size();
    let params = SamplingParams { max_tokens, stop_token_ids: fm.tokenizer.eos_token_ids.clone(), ..Default::default() };
    let mut out = Vec::with_capacity(data.len());
    for chunk in data.chunks(batch_size.max(1)) {
        let refs: Vec<&Prepared> = chunk.iter().collect();
        let generator = adaptation.and_then(Adaptation::generator);
        let m = generator.map_or(0, |g| g.config.prompt_len());
        let z = match generator {
            Some(g) => crate::device::to_vec(soft_prompts(g, &refs, device)?)?,
            None => vec![],
        };
        let row = |r: usize| SoftPrompt::new(z[r * m * d..(r + 1) * m * d].to_vec(), m, d);
        let reqs: Vec<GenerationRequest> = chunk
            .iter()
            .enumerate()
            .map(|(r, p)| Ok(GenerationRequest { prompt_ids: p.ids.clone(), soft_prompt: if m > 0 { Some(row(r)?) } else { None } }))
            .collect::<Result<_>>()?;
        for g in generate(&adapted(&fm.decoder, adaptation), &reqs, &params, device)? {
            let text = fm.tokenizer.decode(&g.tokens)?;
            out.push(text.split('\n').next().unwrap_or("").to_string());
        }
    }
    Ok(out)
}

/// The task's dev score: (accuracy or pass@1 / exact match, F1 if the task has one).
pub fn evaluate(task: &TaskSpec, fm: &FoundationModel, adaptation: Option<&Adaptation>, data: &[Prepared], batch_size: usize, device: &Device) -> Result<(f64, Option<f64>)> {
    match task.kind {
        TaskKind::Classification => {
            let label_ids = label_token_ids(task, fm)?;
            let preds = predict(&fm.decoder, adaptation, data, &label_ids, batch_size, device)?;
            let gold: Vec<usize> = data.iter().map(|p| p.label).collect();
            let positive = task.positive_label.as_ref().and_then(|p| task.labels().iter().position(|l| l == p));
            Ok(scores(&preds, &gold, positive))
        }
        TaskKind::Generation => {
            let max_tokens = data.iter().map(|p| p.answer.len()).max().unwrap_or(16) + 8;
            let answers = generate_answers(fm, adaptation, data, max_tokens, batch_size, device)?;
            let mut ok = 0usize;
            for (p, a) in data.iter().zip(&answers) {
                let pass = match task.metric {
                    Metric::PassAt1 => super::judge::task_passes(task, &p.fields, a)?,
                    _ => fm.tokenizer.decode(&p.answer)?.trim() == a.trim(),
                };
                ok += pass as usize;
            }
            Ok((ok as f64 / data.len().max(1) as f64, None))
        }
    }
}

/// Zero-shot dev score of the frozen model with no soft prompt at all (accuracy, or pass@1 /
/// exact match for generation tasks): [`evaluate`] without an adaptation.
pub fn zero_shot(task: &TaskSpec, dev_file: &Path, dev_limit: usize, fm: &FoundationModel, device: &Device) -> Result<(f64, Option<f64>)> {
    let mut ex = load_rows(task, dev_file, task.dev_rows)?;
    if dev_limit > 0 {
        ex.truncate(dev_limit);
    }
    let data = prepare(&ex, dev_file, fm, None, usize::MAX, device)?;
    evaluate(task, fm, None, &data, 16, device)
}

/// Binary F1 for the positive class and accuracy.
pub fn scores(pred: &[usize], gold: &[usize], positive: Option<usize>) -> (f64, Option<f64>) {
    let n = gold.len().max(1) as f64;
    let acc = pred.iter().zip(gold).filter(|(p, g)| p == g).count() as f64 / n;
    let f1 = positive.map(|pos| {
        let tp = pred.iter().zip(gold).filter(|(p, g)| **p == pos && **g == pos).count() as f64;
        let fp = pred.iter().zip(gold).filter(|(p, g)| **p == pos && **g != pos).count() as f64;
        let fneg = pred.iter().zip(gold).filter(|(p, g)| **p != pos && **g == pos).count() as f64;
        if tp == 0.0 { 0.0 } else { 2.0 * tp / (2.0 * tp + fp + fneg) }
    });
    (acc, f1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn f1_and_accuracy() {
        let (acc, f1) = super::scores(&[1, 1, 0, 0], &[1, 0, 1, 0], Some(1));
        assert_eq!(acc, 0.5);
        assert_eq!(f1, Some(0.5));
    }
}
