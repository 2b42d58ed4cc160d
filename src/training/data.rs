//! Training and evaluation data: task rows tokenized for the frozen model and embedded once by
//! the frozen encoder, and the batches an epoch visits.

use super::examples::Example;
use crate::task::{TaskKind, TaskSpec};
use crate::error::{Error, Result};
use crate::model::decoder::FoundationModel;
use crate::model::encoder::SentenceEncoder;
use burn::tensor::Device;
use std::path::Path;

/// A prepared example: prompt token ids, the answer tokens the model is trained to produce
/// after them (the label word for classification), f(x), and the label.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub ids: Vec<u32>,
    pub answer: Vec<u32>,
    pub features: Vec<f32>,
    pub label: usize,
    /// Generation tasks: the source row (for the pass@1 check).
    pub fields: std::collections::BTreeMap<String, String>,
}

/// The label words' token ids; each must be a single token of the frozen model.
pub fn label_token_ids(spec: &TaskSpec, fm: &FoundationModel) -> Result<Vec<u32>> {
    if spec.kind == TaskKind::Generation {
        return Ok(vec![]);
    }
    spec.labels()
        .iter()
        .map(|l| {
            let w = &spec.label_words[*l];
            let ids = fm.tokenizer.encode(w)?;
            match ids[..] {
                [id] => Ok(id),
                _ => Err(Error::Config(format!("label word {w:?} is {} tokens for this model; it must be exactly one", ids.len()))),
            }
        })
        .collect()
}

/// Tokenize and embed examples; sequences that are too long are reported with file and line.
pub fn prepare(examples: &[Example], file: &Path, fm: &FoundationModel, encoder: Option<&SentenceEncoder>, max_length: usize, enc_device: &Device) -> Result<Vec<Prepared>> {
    let limit = max_length.min(fm.config.max_position_embeddings);
    let mut out = Vec::with_capacity(examples.len());
    for ex in examples {
        let ids = fm.tokenizer.encode(&ex.prompt)?;
        let answer = if ex.answer.is_empty() { vec![] } else { fm.tokenizer.encode(&ex.answer)? };
        if ids.len() + answer.len() > limit {
            return Err(Error::Input(format!(
                "{}:{}: prompt is {} tokens, longer than the maximum of {limit}",
                file.display(),
                ex.line,
                ids.len() + answer.len()
            )));
        }
        if ids.is_empty() {
            return Err(Error::Input(format!("{}:{}: empty prompt", file.display(), ex.line)));
        }
        out.push(Prepared { ids, answer, features: vec![], label: ex.label, fields: ex.fields.clone() });
    }
    if let Some(enc) = encoder {
        for (chunk, prep) in examples.chunks(64).zip(out.chunks_mut(64)) {
            let texts: Vec<&str> = chunk.iter().map(|e| e.encoder_text.as_str()).collect();
            let f = crate::device::to_vec(enc.embed(&texts, enc_device)?)?;
            let h = enc.hidden_size();
            for (i, p) in prep.iter_mut().enumerate() {
                p.features = f[i * h..(i + 1) * h].to_vec();
            }
        }
    }
    Ok(out)
}

/// Batches for one epoch: a shuffled order, sorted by length within windows of 32 batches (so a
/// batch pads little), then the batches shuffled. Every example appears exactly once.
pub fn length_bucketed_batches(data: &[Prepared], batch_size: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..data.len()).collect();
    shuffle(&mut order, seed);
    let len = |j: &usize| data[*j].ids.len() + data[*j].answer.len();
    for window in order.chunks_mut(batch_size * 32) {
        window.sort_by_key(len);
    }
    let mut batches: Vec<Vec<usize>> = order.chunks(batch_size).map(<[usize]>::to_vec).collect();
    shuffle(&mut batches, seed.rotate_left(17));
    batches
}

pub use crate::rng::shuffle;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucketed_batches_cover_every_example_once_and_pad_little() {
        let data: Vec<Prepared> = (0..1000)
            .map(|i| Prepared { ids: vec![1; 1 + (i * 7919) % 60], answer: vec![2], features: vec![], label: 0, fields: Default::default() })
            .collect();
        let batches = length_bucketed_batches(&data, 16, 3);
        assert_eq!(batches.len(), 1000usize.div_ceil(16));
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
        // Padding: tokens in padded batches vs real tokens.
        let real: usize = data.iter().map(|p| p.ids.len()).sum();
        let padded: usize = batches.iter().map(|b| b.len() * b.iter().map(|&j| data[j].ids.len()).max().unwrap()).sum();
        assert!((padded as f64) < 1.1 * real as f64, "{padded} padded vs {real} real tokens");
        // A different seed gives a different order.
        assert_ne!(batches, length_bucketed_batches(&data, 16, 4));
    }
}
