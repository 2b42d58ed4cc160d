//! dLoss/dZ through the frozen decoder, in bounded memory: what a client needs to train its own
//! generator by the chain rule (`/v1/soft_prompt_grad`).
//!
//! A plain backward pass keeps every layer's attention scores, `layers × heads × positions²`
//! values: 52 GB for one 4,000-token example on a 135M model. Here the forward pass keeps only
//! each layer's input (`[b, s, d]`), and the backward pass recomputes one layer at a time, in
//! blocks of [`QUERY_BLOCK`] queries: what it holds at once grows linearly with the positions
//! (the additive mask aside, `positions²` values once). [`GradientCost`] says how much that is
//! before any work starts; examples are computed in chunks within a byte budget, and an example
//! that alone exceeds it is refused. `step` is called after every layer of either pass and
//! stops the work when it returns `false`.

use crate::error::{Error, Result};
use crate::model::decoder::{Decoder, DecoderConfig};
use crate::model::generate::TeacherForcing;
use crate::model::SoftPrompt;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

pub use crate::model::nn::QUERY_BLOCK;

/// One example: `target` should follow `prompt` behind `soft_prompt`.
#[derive(Debug, Clone)]
pub struct GradientRequest {
    pub prompt_ids: Vec<u32>,
    pub target_ids: Vec<u32>,
    pub soft_prompt: SoftPrompt,
}

impl GradientRequest {
    /// Slots this example puts through the model (soft prompt, prompt, target).
    pub fn positions(&self) -> usize {
        self.soft_prompt.rows() + self.prompt_ids.len() + self.target_ids.len()
    }
}

/// The loss of one [`GradientRequest`] and its gradient with respect to that soft prompt.
#[derive(Debug, Clone)]
pub struct SoftPromptGradient {
    /// Mean negative log-likelihood of the target's tokens (nats per token).
    pub loss: f32,
    /// dLoss/dZ, `[m, d]` like the soft prompt.
    pub grad: SoftPrompt,
}

/// The shape that decides what a gradient computation holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GradientCost {
    layers: usize,
    hidden: usize,
    heads: usize,
    kv_dim: usize,
    intermediate: usize,
    vocab: usize,
}

impl GradientCost {
    pub fn of(cfg: &DecoderConfig) -> Self {
        Self {
            layers: cfg.num_hidden_layers,
            hidden: cfg.hidden_size,
            heads: cfg.num_attention_heads,
            kv_dim: cfg.kv_heads() * cfg.head_dim(),
            intermediate: cfg.intermediate_size,
            vocab: cfg.vocab_size,
        }
    }

    /// Peak bytes (f32) of [`soft_prompt_gradients`] for `rows` examples padded to `positions`
    /// slots with `targets` target tokens in all: each layer's stored input, the masks, one
    /// block's graph (scores and their gradients, keys and values, the MLP) and the logits. The
    /// factors count the tensors autodiff keeps per value, with a margin (measured by
    /// `scripts/benchmark.sh gradient-memory`).
    pub fn bytes(&self, rows: usize, positions: usize, targets: usize) -> u64 {
        let (r, p, t) = (rows as u64, positions as u64, targets as u64);
        let q = p.min(QUERY_BLOCK as u64);
        let (l, d, h, kv, ff, v) = (self.layers as u64, self.hidden as u64, self.heads as u64, self.kv_dim as u64, self.intermediate as u64, self.vocab as u64);
        let stored = (l + 3) * r * p * d;
        let masks = 2 * r * p * p;
        let block = r * (8 * h * q * p + 8 * kv * p + 8 * q * ff + 24 * q * d + 4 * p * d);
        let top = 6 * t * v + 6 * r * p * d;
        4 * (stored + masks + block + top)
    }
}

/// Each request's loss and dLoss/dZ through the frozen decoder. `device` must be autodiff; the
/// decoder's parameters take no gradient and nothing of it changes. Requests are computed in
/// chunks of equal soft-prompt length whose [`GradientCost::bytes`] stays within `max_bytes`.
pub fn soft_prompt_gradients(decoder: &Decoder, cost: &GradientCost, requests: &[GradientRequest], max_bytes: u64, device: &Device, step: &mut dyn FnMut() -> bool) -> Result<Vec<SoftPromptGradient>> {
    if !device.is_autodiff() {
        return Err(Error::Config("soft-prompt gradients need an autodiff device".into()));
    }
    let (d, vocab) = (decoder.hidden_size(), decoder.vocab_size());
    for (i, r) in requests.iter().enumerate() {
        if r.target_ids.is_empty() {
            return Err(Error::Input("every target needs at least one token".into()));
        }
        if r.soft_prompt.width() != d {
            return Err(Error::Input(format!("soft prompt width {} is not the model's {d}", r.soft_prompt.width())));
        }
        if let Some(&bad) = r.prompt_ids.iter().chain(&r.target_ids).find(|&&t| t as usize >= vocab) {
            return Err(Error::Input(format!("token id {bad} is outside the vocabulary ({vocab})")));
        }
        let alone = cost.bytes(1, r.positions(), r.target_ids.len());
        if alone > max_bytes {
            return Err(Error::Input(format!("example {i}: its backward pass would hold {} MiB, more than the limit of {} MiB", alone >> 20, max_bytes >> 20)));
        }
    }
    let mut out: Vec<Option<SoftPromptGradient>> = vec![None; requests.len()];
    for chunk in chunks(cost, requests, max_bytes) {
        let group: Vec<&GradientRequest> = chunk.iter().map(|&i| &requests[i]).collect();
        for (i, g) in chunk.into_iter().zip(chunk_gradients(decoder, &group, device, step)?) {
            out[i] = Some(g);
        }
    }
    Ok(out.into_iter().map(|o| o.expect("every chunk filled")).collect())
}

/// Indices of requests that share a forward and backward pass: equal soft-prompt lengths, by
/// length, as many as fit `max_bytes` padded to the longest.
fn chunks(cost: &GradientCost, requests: &[GradientRequest], max_bytes: u64) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..requests.len()).collect();
    order.sort_by_key(|&i| (requests[i].soft_prompt.rows(), requests[i].positions()));
    let mut out: Vec<Vec<usize>> = vec![];
    let (mut rows, mut targets) = (0, 0);
    for i in order {
        let r = &requests[i];
        let fits = out.last().is_some_and(|c| {
            let same_m = requests[c[0]].soft_prompt.rows() == r.soft_prompt.rows();
            same_m && cost.bytes(rows + 1, r.positions(), targets + r.target_ids.len()) <= max_bytes
        });
        if !fits {
            out.push(vec![]);
            (rows, targets) = (0, 0);
        }
        out.last_mut().expect("pushed").push(i);
        rows += 1;
        targets += r.target_ids.len();
    }
    out
}

/// A tensor's values as a leaf on `device` (a copy: the recomputation's graph starts here).
fn leaf(x: Tensor<3>, device: &Device) -> Tensor<3> {
    Tensor::from_data(x.into_data(), device).require_grad()
}

fn cancelled() -> Error {
    Error::Backend("the gradient computation was cancelled".into())
}

/// One chunk: the forward pass keeps each layer's input, then the backward pass walks the layers
/// down, recomputing each in blocks of queries from its input.
fn chunk_gradients(decoder: &Decoder, requests: &[&GradientRequest], device: &Device, step: &mut dyn FnMut() -> bool) -> Result<Vec<SoftPromptGradient>> {
    let plain = device.clone().inner();
    let (g, m, d) = (requests.len(), requests[0].soft_prompt.rows(), decoder.hidden_size());
    let rows: Vec<(&[u32], &[u32])> = requests.iter().map(|r| (r.prompt_ids.as_slice(), r.target_ids.as_slice())).collect();
    let layout = TeacherForcing::new(&rows, m)?;
    let t = layout.slots();
    let values: Vec<f32> = requests.iter().flat_map(|r| r.soft_prompt.values().iter().copied()).collect();
    let z = Tensor::<3>::from_data(TensorData::new(values, [g, m, d]), &plain);
    let x0 = Tensor::cat(vec![z, decoder.embed(layout.ids(&plain))], 1).cast(decoder.precision().dtype());
    let pass = decoder.pass(&layout.positions, &layout.mask, g, t, None, &plain);
    // Forward in blocks of queries too: a whole layer at once would hold `heads × t²` scores.
    let blocks: Vec<(usize, usize)> = (0..t).step_by(QUERY_BLOCK).map(|from| (from, QUERY_BLOCK.min(t - from))).collect();
    let mut inputs = vec![x0];
    for li in 0..decoder.num_layers() {
        let outs = blocks.iter().map(|&(from, n)| decoder.layer_queries(li, inputs[li].clone(), &pass, from, n)).collect();
        inputs.push(Tensor::cat(outs, 1));
        if !step() {
            return Err(cancelled());
        }
    }
    // The loss, from the last layer's output, and its gradient there.
    let top = leaf(inputs.pop().expect("the last output"), device);
    let logits = decoder.logits(layout.pick(decoder.final_norm(top.clone()).reshape([g * t, d]), device));
    let targets: Vec<i64> = requests.iter().flat_map(|r| r.target_ids.iter().map(|&t| t as i64)).collect();
    let n = targets.len();
    let nll = log_softmax(logits, 1).gather(1, Tensor::<2, Int>::from_data(TensorData::new(targets, [n, 1]), device)).neg();
    // Row r's mean over its own tokens: a [g, n] averaging matrix, so one backward serves all.
    let mut avg = vec![0f32; g * n];
    let mut at = 0;
    for (r, req) in requests.iter().enumerate() {
        let k = req.target_ids.len();
        avg[r * n + at..r * n + at + k].iter_mut().for_each(|w| *w = 1.0 / k as f32);
        at += k;
    }
    let per_row = Tensor::<2>::from_data(TensorData::new(avg, [g, n]), device).matmul(nll);
    let losses = crate::device::to_vec(per_row.clone().detach())?;
    let grads = per_row.sum().backward();
    let mut upstream = top.grad(&grads).ok_or_else(|| Error::Backend("no gradient reached the last layer".into()))?;
    // Down the layers: each block's output against its share of the upstream gradient.
    for li in (0..decoder.num_layers()).rev() {
        let input = inputs.pop().expect("one input per layer");
        let mut below: Option<Tensor<3>> = None;
        for &(from, n) in &blocks {
            let x = leaf(input.clone(), device);
            let out = decoder.layer_queries(li, x.clone(), &pass, from, n);
            let up = Tensor::<3>::from_data(upstream.clone().narrow(1, from, n).into_data(), device);
            let grads = (out * up).sum().backward();
            let gx = x.grad(&grads).ok_or_else(|| Error::Backend("no gradient reached a layer's input".into()))?;
            below = Some(match below {
                Some(b) => b + gx,
                None => gx,
            });
        }
        upstream = below.expect("at least one block");
        if !step() {
            return Err(cancelled());
        }
    }
    let dz = crate::device::to_vec(upstream.narrow(1, 0, m))?;
    requests
        .iter()
        .enumerate()
        .map(|(r, _)| Ok(SoftPromptGradient { loss: losses[r], grad: SoftPrompt::new(dz[r * m * d..(r + 1) * m * d].to_vec(), m, d)? }))
        .collect()
}
