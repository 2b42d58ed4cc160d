//! Text generation with a KV cache: greedy or temperature / top-p sampling, stop tokens, a
//! per-row soft prompt. Rows are left-padded so that every row's next token sits in the last slot.

use crate::error::{Error, Result};
use crate::model::decoder::{Decoder, KvCache};
use crate::model::sampling::{log_softmax, sample, FinishReason, SamplingParams};
use crate::model::SoftPrompt;
use crate::rng::Rng;
use burn::tensor::{Device, Int, Tensor, TensorData};

/// One row to complete: prompt ids and an optional soft prompt.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    pub prompt_ids: Vec<u32>,
    pub soft_prompt: Option<SoftPrompt>,
}

/// One row's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// New token ids (stop token excluded).
    pub tokens: Vec<u32>,
    /// Log-probability of each new token under the (unscaled) model distribution.
    pub logprobs: Vec<f32>,
    pub finish_reason: FinishReason,
}

/// Complete a batch of requests, each row behind its own soft prompt, through the KV cache.
pub fn generate(decoder: &Decoder, requests: &[GenerationRequest], params: &SamplingParams, device: &Device) -> Result<Vec<Generation>> {
    generate_with(decoder, requests, params, device, &mut |_, _, _| true)
}

/// [`generate`], calling `on_token(row, token, logprob)` as each new token is chosen (streaming).
/// When it returns `false` the row's consumer is gone: the row stops there (finish reason
/// [`FinishReason::Abort`]), and the batch ends as soon as no row is left running.
pub fn generate_with(
    decoder: &Decoder,
    requests: &[GenerationRequest],
    params: &SamplingParams,
    device: &Device,
    on_token: &mut dyn FnMut(usize, u32, f32) -> bool,
) -> Result<Vec<Generation>> {
    let b = requests.len();
    if b == 0 {
        return Ok(vec![]);
    }
    let d = decoder.hidden_size();
    let vocab = decoder.vocab_size();
    for (i, r) in requests.iter().enumerate() {
        if r.prompt_ids.is_empty() && r.soft_prompt.is_none() {
            return Err(Error::Input(format!("request {i}: empty prompt")));
        }
        if let Some(&bad) = r.prompt_ids.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::Input(format!("request {i}: token id {bad} is outside the vocabulary ({vocab})")));
        }
        if let Some(z) = &r.soft_prompt {
            if z.width() != d {
                return Err(Error::Input(format!("request {i}: soft prompt has width {}, the model {d}", z.width())));
            }
        }
    }
    // Slot layout per row: [padding][soft prompt][prompt ids][generated...].
    let lens: Vec<usize> = requests.iter().map(|r| r.soft_prompt.as_ref().map_or(0, SoftPrompt::rows) + r.prompt_ids.len()).collect();
    let width = *lens.iter().max().expect("b > 0");
    let mut rows_embeds = Vec::with_capacity(b);
    let mut positions = Vec::with_capacity(b * width);
    let mut mask = Vec::with_capacity(b * width);
    for (r, req) in requests.iter().enumerate() {
        let pad = width - lens[r];
        let mut parts = vec![];
        if pad > 0 {
            parts.push(Tensor::<2>::zeros([pad, d], device));
        }
        if let Some(z) = &req.soft_prompt {
            parts.push(z.to_tensor(device));
        }
        if !req.prompt_ids.is_empty() {
            let ids: Vec<i64> = req.prompt_ids.iter().map(|&t| t as i64).collect();
            let n = ids.len();
            parts.push(decoder.embed(Tensor::<2, Int>::from_data(TensorData::new(ids, [1, n]), device)).reshape([n, d]));
        }
        rows_embeds.push(Tensor::cat(parts, 0).unsqueeze_dim::<3>(0));
        positions.extend((0..pad).map(|_| 0).chain(0..lens[r]));
        mask.extend((0..pad).map(|_| 0.0).chain((0..lens[r]).map(|_| 1.0)));
    }
    let prompt_embeds = Tensor::cat(rows_embeds, 0);
    let mut rng = Rng::new(params.seed);
    let mut out: Vec<Generation> = (0..b).map(|_| Generation { tokens: vec![], logprobs: vec![], finish_reason: FinishReason::Length }).collect();
    let mut done = vec![false; b];
    let mut cache = KvCache::new(decoder, b);
    let mut step_embeds = prompt_embeds;
    let mut step_pos = positions;
    let mut step_mask = mask;
    let mut next_pos: Vec<usize> = lens.clone();
    for _ in 0..params.max_tokens {
        let hidden = decoder.forward_embeds(step_embeds, &step_pos, &step_mask, Some(&mut cache))?;
        let s = hidden.dims()[1];
        let last = hidden.narrow(1, s - 1, 1).reshape([b, d]);
        let logits = crate::device::to_vec(decoder.logits(last))?;
        let mut next = vec![0i64; b];
        for r in 0..b {
            if done[r] {
                continue;
            }
            let row = &logits[r * vocab..(r + 1) * vocab];
            let tok = sample(row, params, &mut rng);
            if params.stop_token_ids.contains(&tok) {
                done[r] = true;
                out[r].finish_reason = FinishReason::Stop;
                continue;
            }
            let lp = log_softmax(row)[tok as usize];
            out[r].tokens.push(tok);
            out[r].logprobs.push(lp);
            if !on_token(r, tok, lp) {
                done[r] = true;
                out[r].finish_reason = FinishReason::Abort;
            }
            next[r] = tok as i64;
        }
        if done.iter().zip(&out).all(|(&d, g)| d || g.tokens.len() >= params.max_tokens) {
            break;
        }
        step_embeds = decoder.embed(Tensor::<2, Int>::from_data(TensorData::new(next, [b, 1]), device));
        step_pos = next_pos.clone();
        // Finished rows keep running (cheaper than reshaping the batch); their outputs are ignored.
        step_mask = vec![1.0; b];
        next_pos.iter_mut().for_each(|p| *p += 1);
    }
    Ok(out)
}

/// Teacher-forced logits: row r is `[prefix_r ; prompt_r ++ answer_r[..n-1]]`, right-padded, and
/// the rows returned are the positions that predict each answer token (`[Σ max(n_r, 1), vocab]`;
/// an empty answer yields the one slot after the prompt). `prefix` is `[b, m, d]` or none. This is
/// the one mechanism behind training losses, classification and continuation scoring.
pub fn teacher_forced_logits(decoder: &Decoder, prefix: Option<Tensor<3>>, rows: &[(&[u32], &[u32])], device: &Device) -> Result<Tensor<2>> {
    let d = decoder.hidden_size();
    let m = prefix.as_ref().map_or(0, |z| z.dims()[1]);
    let l = TeacherForcing::new(rows, m)?;
    let mut embeds = decoder.embed(l.ids(device));
    if let Some(z) = prefix {
        embeds = Tensor::cat(vec![z, embeds], 1);
    }
    let hidden = decoder.forward_embeds(embeds, &l.positions, &l.mask, None)?;
    Ok(decoder.logits(l.pick(hidden.reshape([l.b * l.slots(), d]), device)))
}

/// The layout of a teacher-forced batch: row r is `[prefix (m slots) ; prompt ; answer without
/// its last token ; padding]`, and the logits read are those at the last prompt slot and each
/// answer slot but the last (one slot when the answer is empty).
pub(crate) struct TeacherForcing {
    pub b: usize,
    pub m: usize,
    /// Token slots per row after the prefix.
    pub s: usize,
    ids: Vec<i64>,
    pub mask: Vec<f32>,
    pub positions: Vec<usize>,
    /// Row-major `[b, m + s]` indices of the slots whose logits are read.
    picks: Vec<i64>,
}

impl TeacherForcing {
    pub fn new(rows: &[(&[u32], &[u32])], m: usize) -> Result<Self> {
        let b = rows.len();
        if rows.iter().any(|(prompt, _)| prompt.is_empty() && m == 0) {
            return Err(Error::Input("empty prompt".into()));
        }
        let input = |(prompt, answer): &(&[u32], &[u32])| prompt.len() + answer.len().saturating_sub(1);
        let s = rows.iter().map(input).max().unwrap_or(1).max(1);
        let mut ids = vec![0i64; b * s];
        let mut mask = vec![0f32; b * (m + s)];
        let positions: Vec<usize> = (0..b).flat_map(|_| 0..m + s).collect();
        let mut picks = Vec::new();
        for (r, row @ (prompt, answer)) in rows.iter().enumerate() {
            for (c, &t) in prompt.iter().chain(answer.iter().take(answer.len().saturating_sub(1))).enumerate() {
                ids[r * s + c] = t as i64;
            }
            mask[r * (m + s)..r * (m + s) + m + input(row)].iter_mut().for_each(|x| *x = 1.0);
            for j in 0..answer.len().max(1) {
                picks.push((r * (m + s) + m + prompt.len() - 1 + j) as i64);
            }
        }
        Ok(Self { b, m, s, ids, mask, positions, picks })
    }

    /// Slots per row, prefix included.
    pub fn slots(&self) -> usize {
        self.m + self.s
    }

    /// The token ids `[b, s]`.
    pub fn ids(&self, device: &Device) -> Tensor<2, Int> {
        Tensor::from_data(TensorData::new(self.ids.clone(), [self.b, self.s]), device)
    }

    /// The read slots' rows of `hidden` (`[b · (m + s), d]`).
    pub fn pick(&self, hidden: Tensor<2>, device: &Device) -> Tensor<2> {
        let n = self.picks.len();
        hidden.select(0, Tensor::<1, Int>::from_data(TensorData::new(self.picks.clone(), [n]), device))
    }
}

/// Log-probability of each candidate continuation after `[soft prompt ; prompt]`, summed over the
/// candidate's tokens (teacher forcing, one batched forward with a row per candidate). This is
/// how a classifier reads label words through the frozen model.
pub fn score_continuations(decoder: &Decoder, prompt_ids: &[u32], soft_prompt: Option<&SoftPrompt>, candidates: &[Vec<u32>], device: &Device) -> Result<Vec<f32>> {
    let d = decoder.hidden_size();
    let vocab = decoder.vocab_size();
    if candidates.is_empty() || candidates.iter().any(Vec::is_empty) {
        return Err(Error::Input("every candidate needs at least one token".into()));
    }
    if let Some(&bad) = prompt_ids.iter().chain(candidates.iter().flatten()).find(|&&t| t as usize >= vocab) {
        return Err(Error::Input(format!("token id {bad} is outside the vocabulary ({vocab})")));
    }
    let k = candidates.len();
    let prefix = match soft_prompt {
        Some(z) if z.width() != d => return Err(Error::Input(format!("soft prompt has width {}, the model {d}", z.width()))),
        Some(z) => Some(z.to_tensor(device).unsqueeze_dim::<3>(0).repeat_dim(0, k)),
        None => None,
    };
    let rows: Vec<(&[u32], &[u32])> = candidates.iter().map(|c| (prompt_ids, c.as_slice())).collect();
    let logits = crate::device::to_vec(teacher_forced_logits(decoder, prefix, &rows, device)?)?;
    let mut out = vec![0f32; k];
    let targets = candidates.iter().enumerate().flat_map(|(r, c)| c.iter().map(move |&t| (r, t)));
    for (i, (r, t)) in targets.enumerate() {
        out[r] += log_softmax(&logits[i * vocab..(i + 1) * vocab])[t as usize];
    }
    Ok(out)
}

