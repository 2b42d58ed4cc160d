//! Choosing the next token from logits: greedy or temperature / top-p sampling, and why a row
//! stopped. Sampling lives outside the model: the decoder returns logits, nothing more.

use crate::rng::Rng;

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


/// Why a row stopped (OpenAI's `finish_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// A stop token or stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The consumer went away (a closed stream, a timed-out request).
    Abort,
}

impl FinishReason {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Abort => "abort",
        }
    }
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
