//! Text generation with a KV cache: greedy or temperature / top-p sampling, stop tokens, a
//! per-row soft prompt. Rows are left-padded so that every row's next token sits in the last slot.

use crate::decoder::{Decoder, KvCache};
use crate::error::{Error, Result};
use burn::tensor::{Device, Int, Tensor, TensorData};

/// Sampling settings (OpenAI-style names).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Most new tokens per row.
    pub max_tokens: usize,
    /// 0 = greedy.
    pub temperature: f32,
    /// Nucleus mass kept when sampling (1 = all).
    pub top_p: f32,
    /// Token ids that end a row (not included in its output).
    pub stop_token_ids: Vec<u32>,
    /// RNG seed for sampling.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self { max_tokens: 16, temperature: 0.0, top_p: 1.0, stop_token_ids: vec![], seed: 0 }
    }
}

/// One row to complete: prompt ids and an optional soft prompt (row-major `[m, d]`).
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    pub prompt_ids: Vec<u32>,
    pub soft_prompt: Option<(Vec<f32>, usize)>,
}

/// One row's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// New token ids (stop token excluded).
    pub tokens: Vec<u32>,
    /// Log-probability of each new token under the (unscaled) model distribution.
    pub logprobs: Vec<f32>,
    /// `"stop"`, `"length"`, or `"abort"` when its consumer went away.
    pub finish_reason: &'static str,
}

/// Small, seedable PRNG (SplitMix64) so sampling is reproducible on every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// log-softmax of one row of logits, in f64 for accuracy.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = logits.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln() + max;
    logits.iter().map(|&x| (x as f64 - lse) as f32).collect()
}

/// Pick the next token from one row of logits.
pub fn sample(logits: &[f32], p: &SamplingParams, rng: &mut Rng) -> u32 {
    let argmax = || logits.iter().enumerate().fold((0, f32::NEG_INFINITY), |a, (i, &x)| if x > a.1 { (i, x) } else { a }).0 as u32;
    if p.temperature <= 0.0 {
        return argmax();
    }
    let scaled: Vec<f32> = logits.iter().map(|&x| x / p.temperature).collect();
    let lp = log_softmax(&scaled);
    let mut idx: Vec<usize> = (0..lp.len()).collect();
    idx.sort_unstable_by(|&a, &b| lp[b].partial_cmp(&lp[a]).unwrap_or(std::cmp::Ordering::Equal));
    let mut kept = Vec::new();
    let mut mass = 0.0f64;
    for &i in &idx {
        kept.push(i);
        mass += (lp[i] as f64).exp();
        if mass >= p.top_p as f64 {
            break;
        }
    }
    let mut u = rng.next_f32() as f64 * mass;
    for &i in &kept {
        u -= (lp[i] as f64).exp();
        if u <= 0.0 {
            return i as u32;
        }
    }
    *kept.last().expect("non-empty vocabulary") as u32
}

/// Complete a batch of requests. With `use_cache = false` every step re-runs the whole sequence
/// (slow; kept to check the cache).
pub fn generate(decoder: &Decoder, requests: &[GenerationRequest], params: &SamplingParams, use_cache: bool, device: &Device) -> Result<Vec<Generation>> {
    generate_with(decoder, requests, params, use_cache, device, &mut |_, _, _| true)
}

/// [`generate`], calling `on_token(row, token, logprob)` as each new token is chosen (streaming).
/// When it returns `false` the row's consumer is gone: the row stops there (finish reason
/// `"abort"`), and the batch ends as soon as no row is left running.
pub fn generate_with(
    decoder: &Decoder,
    requests: &[GenerationRequest],
    params: &SamplingParams,
    use_cache: bool,
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
        if let Some((z, m)) = &r.soft_prompt {
            if z.len() != m * d {
                return Err(Error::Input(format!("request {i}: soft prompt has {} values, [{m}, {d}] needs {}", z.len(), m * d)));
            }
        }
    }
    // Slot layout per row: [padding][soft prompt][prompt ids][generated...].
    let lens: Vec<usize> = requests.iter().map(|r| r.soft_prompt.as_ref().map_or(0, |z| z.1) + r.prompt_ids.len()).collect();
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
        if let Some((z, m)) = &req.soft_prompt {
            parts.push(Tensor::<2>::from_data(TensorData::new(z.clone(), [*m, d]), device));
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
    let mut out: Vec<Generation> = (0..b).map(|_| Generation { tokens: vec![], logprobs: vec![], finish_reason: "length" }).collect();
    let mut done = vec![false; b];
    let mut cache = KvCache::new(decoder, b);
    let mut all_embeds = prompt_embeds.clone();
    let mut all_pos = positions.clone();
    let mut all_mask = mask.clone();
    let mut step_embeds = prompt_embeds;
    let mut step_pos = positions;
    let mut step_mask = mask;
    let mut next_pos: Vec<usize> = lens.clone();
    for _ in 0..params.max_tokens {
        let hidden = if use_cache {
            decoder.forward_embeds(step_embeds, &step_pos, &step_mask, Some(&mut cache))?
        } else {
            decoder.forward_embeds(all_embeds.clone(), &all_pos, &all_mask, None)?
        };
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
                out[r].finish_reason = "stop";
                continue;
            }
            let lp = log_softmax(row)[tok as usize];
            out[r].tokens.push(tok);
            out[r].logprobs.push(lp);
            if !on_token(r, tok, lp) {
                done[r] = true;
                out[r].finish_reason = "abort";
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
        if !use_cache {
            let w = all_pos.len() / b;
            all_embeds = Tensor::cat(vec![all_embeds, step_embeds.clone()], 1);
            all_pos = interleave(&all_pos, &step_pos, b, w);
            all_mask = interleave(&all_mask, &step_mask, b, w);
        }
    }
    Ok(out)
}

/// Append one column to a row-major `[b, w]` buffer.
fn interleave<T: Copy>(rows: &[T], col: &[T], b: usize, w: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(b * (w + 1));
    for r in 0..b {
        v.extend_from_slice(&rows[r * w..(r + 1) * w]);
        v.push(col[r]);
    }
    v
}


/// Teacher-forced logits: row r is `[prefix_r ; prompt_r ++ answer_r[..n-1]]`, right-padded, and
/// the rows returned are the positions that predict each answer token (`[Σ max(n_r, 1), vocab]`;
/// an empty answer yields the one slot after the prompt). `prefix` is `[b, m, d]` or none. This is
/// the one mechanism behind training losses, classification and continuation scoring.
pub fn teacher_forced_logits(decoder: &Decoder, prefix: Option<Tensor<3>>, rows: &[(&[u32], &[u32])], device: &Device) -> Result<Tensor<2>> {
    let b = rows.len();
    let d = decoder.hidden_size();
    let m = prefix.as_ref().map_or(0, |z| z.dims()[1]);
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
    let mut embeds = decoder.embed(Tensor::<2, Int>::from_data(TensorData::new(ids, [b, s]), device));
    if let Some(z) = prefix {
        embeds = Tensor::cat(vec![z, embeds], 1);
    }
    let hidden = decoder.forward_embeds(embeds, &positions, &mask, None)?;
    let n = picks.len();
    let picked = hidden.reshape([b * (m + s), d]).select(0, Tensor::<1, Int>::from_data(TensorData::new(picks, [n]), device));
    Ok(decoder.logits(picked))
}

/// Log-probability of each candidate continuation after `[soft prompt ; prompt]`, summed over the
/// candidate's tokens (teacher forcing, one batched forward with a row per candidate). This is
/// how a classifier reads label words through the frozen model.
pub fn score_continuations(decoder: &Decoder, prompt_ids: &[u32], soft_prompt: Option<(&[f32], usize)>, candidates: &[Vec<u32>], device: &Device) -> Result<Vec<f32>> {
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
        Some((z, rows)) if z.len() != rows * d => {
            return Err(Error::Input(format!("soft prompt has {} values, [{rows}, {d}] needs {}", z.len(), rows * d)));
        }
        Some((z, rows)) => Some(Tensor::<2>::from_data(TensorData::new(z.to_vec(), [rows, d]), device).unsqueeze_dim::<3>(0).repeat_dim(0, k)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_is_argmax_and_top_p_keeps_the_nucleus() {
        let mut rng = Rng::new(1);
        let p = SamplingParams::default();
        assert_eq!(sample(&[0.1, 3.0, -1.0], &p, &mut rng), 1);
        // A tiny top_p keeps only the most likely token, whatever the temperature.
        let p = SamplingParams { temperature: 5.0, top_p: 1e-6, ..Default::default() };
        for _ in 0..20 {
            assert_eq!(sample(&[0.1, 3.0, -1.0], &p, &mut rng), 1);
        }
        // Full nucleus at high temperature visits every token.
        let p = SamplingParams { temperature: 100.0, top_p: 1.0, ..Default::default() };
        let mut seen = [false; 3];
        for _ in 0..200 {
            seen[sample(&[0.1, 3.0, -1.0], &p, &mut rng) as usize] = true;
        }
        assert_eq!(seen, [true; 3]);
    }

    #[test]
    fn log_softmax_normalises() {
        let lp = log_softmax(&[1.0, 2.0, 3.0]);
        let s: f32 = lp.iter().map(|x| x.exp()).sum();
        assert!((s - 1.0).abs() < 1e-6);
        assert!((lp[2] - (-0.407_605_9)).abs() < 1e-6);
    }
}
