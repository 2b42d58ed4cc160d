//! Personalisation on the user's device: the generator (Z_S and the heads) trains on the user's
//! own labelled examples. The frozen model's part of the gradient, dLoss/dZ, comes from
//! `POST /v1/soft_prompt_grad`; the chain rule through the generator and AdamW run here, so the
//! examples' labels travel only as target text and the adapter never leaves the device.
//!
//! Sans-IO like the rest of the client: [`Personalizer::next_request`] builds one step's request
//! (holding that step's soft prompts and their graph), the caller sends it, and
//! [`Personalizer::apply`] takes the answer and updates the generator.
//!
//! The loss of a step is the mean over its examples of each target's mean negative
//! log-likelihood, as the endpoint reports it; so dLoss/dZ_i is the endpoint's gradient over the
//! batch size.

use super::{Client, Input};
use crate::task::TaskKind;
use crate::adapter::{Adapter, AdapterMeta};
use crate::wire::{Dtype, GradientExample, GradientRequest, GradientResponse, WireSoftPrompt};
use crate::error::{Error, Result};
use crate::model::generator::PromptGenerator;
use crate::model::SoftPrompt;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// One labelled example as the user gives it: an input and its label (a label value of a
/// classification task, or the answer text of a generation task).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelledInput {
    pub input: Input,
    pub label: String,
}

/// An example ready to train on: what the encoder reads, the frozen model's prompt, the target.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingText {
    pub encoder_text: String,
    pub prompt: String,
    pub target: String,
}

/// The optimizer that turns the generator's gradients into a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Optimizer {
    /// AdamW (decoupled weight decay): each coordinate's step is about the learning rate, whatever
    /// its gradient's size, until the gradient falls below `epsilon`.
    #[default]
    #[cfg_attr(feature = "cli", value(name = "adamw"))]
    AdamW,
    /// Plain gradient descent: the step is the learning rate times the gradient (plus L2 weight
    /// decay), so two runs whose gradients agree to float rounding agree to float rounding.
    Sgd,
}

/// How personalisation trains (camelCase, as the JS API passes them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct PersonalizeOptions {
    pub optimizer: Optimizer,
    pub learning_rate: f64,
    /// Examples per step (the last batch of a pass may be smaller).
    pub batch_size: usize,
    pub weight_decay: f64,
    /// AdamW's ε, added to the root of the second moment. A coordinate whose gradient is far below
    /// it moves by about `learning_rate × gradient / epsilon`; far above it, by the learning rate.
    pub epsilon: f64,
    /// Order of the examples, and the weights when starting from scratch.
    pub seed: u64,
    /// Start from freshly initialised weights of the adapter's shape instead of its trained ones.
    pub from_scratch: bool,
}

impl Default for PersonalizeOptions {
    fn default() -> Self {
        PersonalizeOptions { optimizer: Optimizer::AdamW, learning_rate: 1e-3, batch_size: 8, weight_decay: 0.0, epsilon: 1e-5, seed: 0, from_scratch: false }
    }
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StepReport {
    /// Steps done so far (1-based).
    pub step: usize,
    /// The step's loss before its update (mean over its examples).
    pub loss: f32,
}

impl Client {
    /// The training text of a labelled input; a classification label must be one of the task's.
    pub fn training_text(&self, example: &LabelledInput) -> Result<TrainingText> {
        let task = self.task();
        let (prompt, encoder_text) = task.render(&self.fields(&example.input)?);
        let target = match task.kind {
            TaskKind::Classification => task.label_words.get(&example.label).cloned().ok_or_else(|| Error::Input(format!("label `{}` is not one of the task's ({})", example.label, task.labels().join(", "))))?,
            TaskKind::Generation if example.label.is_empty() => return Err(Error::Input("the answer is empty".into())),
            TaskKind::Generation => example.label.clone(),
        };
        Ok(TrainingText { encoder_text, prompt, target })
    }

    /// The training texts of labelled inputs, a refusal naming the example.
    pub fn training_texts(&self, examples: &[LabelledInput]) -> Result<Vec<TrainingText>> {
        examples.iter().enumerate().map(|(i, e)| self.training_text(e).map_err(|err| Error::Input(format!("examples[{i}]: {err}")))).collect()
    }
}

/// The generator being personalised, its optimizer, and the examples.
pub struct Personalizer {
    generator: PromptGenerator,
    meta: AdapterMeta,
    optim: ModuleOptimizer,
    options: PersonalizeOptions,
    /// `[n, encoder_dim]` on the client's device: the frozen encoder runs once per example, and
    /// its output stays a constant of the generator's graph (no read-back, which WebGPU forbids
    /// synchronously). Being off the autodiff device, it also keeps the generator's dropout off:
    /// its masks would come from each backend's own random numbers, so the browser and native
    /// loops could not take the same steps.
    features: Tensor<2>,
    texts: Vec<TrainingText>,
    order: Vec<usize>,
    cursor: usize,
    step: usize,
    /// The soft prompts `[b, m, d]` of the request sent, still attached to the generator's graph.
    pending: Option<Tensor<3>>,
    device: Device,
}

impl Personalizer {
    /// Start from the client's adapter (a shipped task adapter, or one initialised from scratch
    /// with `GeneratorConfig::init`). `device` is where the generator trains; it must be an
    /// autodiff device.
    pub fn new(client: &Client, examples: &[TrainingText], options: PersonalizeOptions, device: &Device) -> Result<Self> {
        let weights = if options.from_scratch { None } else { Some(client.generator.to_tensors()?) };
        Self::from_weights(client, weights, examples, options, device)
    }

    /// The same, reading the client's generator asynchronously (required on WebGPU).
    pub async fn new_async(client: &Client, examples: &[TrainingText], options: PersonalizeOptions, device: &Device) -> Result<Self> {
        let weights = if options.from_scratch { None } else { Some(client.generator.to_tensors_async().await?) };
        Self::from_weights(client, weights, examples, options, device)
    }

    /// `weights`: the client's generator read back, or none to start from scratch.
    fn from_weights(client: &Client, weights: Option<crate::model::weights::TensorMap>, examples: &[TrainingText], options: PersonalizeOptions, device: &Device) -> Result<Self> {
        if !device.is_autodiff() {
            return Err(Error::Config("personalisation needs an autodiff device".into()));
        }
        if examples.is_empty() || options.batch_size == 0 {
            return Err(Error::Input("personalisation needs at least one example and a batch size of at least 1".into()));
        }
        if !(options.learning_rate.is_finite() && options.learning_rate > 0.0) {
            return Err(Error::Input(format!("learning rate {} must be positive", options.learning_rate)));
        }
        if !(options.epsilon.is_finite() && options.epsilon > 0.0) {
            return Err(Error::Input(format!("epsilon {} must be positive", options.epsilon)));
        }
        if !(options.weight_decay.is_finite() && options.weight_decay >= 0.0) {
            return Err(Error::Input(format!("weight decay {} must be zero or positive", options.weight_decay)));
        }
        let c = &client.generator.config;
        let features = if c.method.uses_encoder() {
            let texts: Vec<&str> = examples.iter().map(|e| e.encoder_text.as_str()).collect();
            client.encoder.embed(&texts, &client.device)?
        } else {
            Tensor::zeros([examples.len(), c.encoder_dim], &client.device)
        };
        let generator = match weights {
            Some(w) => PromptGenerator::from_tensors(c, &w, device)?,
            None => {
                device.seed(options.seed);
                c.init(device)?
            }
        };
        let optim = match options.optimizer {
            Optimizer::AdamW => AdamWConfig::new().with_weight_decay(options.weight_decay as f32).with_epsilon(options.epsilon as f32).init(),
            Optimizer::Sgd => SgdConfig::new().with_weight_decay((options.weight_decay > 0.0).then(|| WeightDecayConfig::new(options.weight_decay as f32))).init(),
        };
        let order = (0..examples.len()).collect();
        Ok(Personalizer { generator, meta: client.meta.clone(), optim, options, features, texts: examples.to_vec(), order, cursor: 0, step: 0, pending: None, device: device.clone() })
    }

    /// Steps done.
    pub fn steps(&self) -> usize {
        self.step
    }

    /// The next step's request: the batch's soft prompts (sent as f32) with their prompts and
    /// targets. Each pass over the examples is shuffled by the seed. Reads the soft prompts back
    /// synchronously (native backends).
    pub fn next_request(&mut self) -> Result<GradientRequest> {
        let (batch, z) = self.next_batch()?;
        let values = crate::device::to_vec(z.clone())?;
        self.request(batch, z, values)
    }

    /// The same with an asynchronous read (required on WebGPU).
    pub async fn next_request_async(&mut self) -> Result<GradientRequest> {
        let (batch, z) = self.next_batch()?;
        let values = crate::device::to_vec_async(z.clone()).await?;
        self.request(batch, z, values)
    }

    /// The next batch's example indices and soft prompts `[b, m, d]`, attached to the graph.
    fn next_batch(&mut self) -> Result<(Vec<usize>, Tensor<3>)> {
        if self.cursor == 0 {
            crate::rng::shuffle(&mut self.order, crate::rng::pass_seed(self.options.seed, self.step));
        }
        let n = self.options.batch_size.min(self.order.len() - self.cursor);
        let batch: Vec<usize> = self.order[self.cursor..self.cursor + n].to_vec();
        self.cursor = (self.cursor + n) % self.order.len();
        let idx = Tensor::<1, burn::tensor::Int>::from_data(TensorData::new(batch.iter().map(|&i| i as i64).collect::<Vec<_>>(), [n]), &self.features.device());
        let z = self.generator.forward(self.features.clone().select(0, idx))?;
        Ok((batch, z))
    }

    fn request(&mut self, batch: Vec<usize>, z: Tensor<3>, values: Vec<f32>) -> Result<GradientRequest> {
        let [_, m, d] = z.dims();
        let examples = batch
            .iter()
            .enumerate()
            .map(|(r, &i)| {
                let soft_prompt = SoftPrompt::new(values[r * m * d..(r + 1) * m * d].to_vec(), m, d)?;
                Ok(GradientExample { prompt: self.texts[i].prompt.clone(), target: self.texts[i].target.clone(), soft_prompt: WireSoftPrompt::encode(&soft_prompt, Dtype::F32) })
            })
            .collect::<Result<Vec<_>>>()?;
        self.pending = Some(z);
        Ok(GradientRequest { model: None, examples })
    }

    /// Update the generator with the endpoint's answer to the last request: backpropagate its
    /// dLoss/dZ through the generator, then one optimizer step.
    pub fn apply(&mut self, answer: &GradientResponse) -> Result<StepReport> {
        let z = self.pending.take().ok_or_else(|| Error::Input("no request is waiting for an answer".into()))?;
        let [b, m, d] = z.dims();
        if answer.gradients.len() != b {
            return Err(Error::Input(format!("the answer holds {} gradients for {b} examples", answer.gradients.len())));
        }
        let mut g = Vec::with_capacity(b * m * d);
        for (r, grad) in answer.gradients.iter().enumerate() {
            let values = grad.grad.decode(d, m).map_err(|e| Error::Input(format!("gradient {r}: {e}")))?;
            if values.rows() != m {
                return Err(Error::Input(format!("gradient {r} has {} rows, the soft prompt {m}", values.rows())));
            }
            g.extend_from_slice(values.values());
        }
        let loss = answer.gradients.iter().map(|x| x.loss).sum::<f32>() / b as f32;
        if !loss.is_finite() {
            return Err(Error::Input(format!("the endpoint reported a loss of {loss}")));
        }
        // d(mean loss)/dθ = Σ_i <dL_i/dZ_i, dZ_i/dθ> / b: one backward pass of <Z, G> / b.
        let g = Tensor::<3>::from_data(TensorData::new(g, [b, m, d]), &self.device);
        let surrogate = (z * g).sum() / b as f64;
        let mut grads = surrogate.backward();
        let grads = GradientsParams::from_module(&mut grads, &self.generator);
        self.generator = self.optim.step(self.options.learning_rate, self.generator.clone(), grads);
        self.step += 1;
        Ok(StepReport { step: self.step, loss })
    }

    /// [`Personalizer::apply`] on `lopa serve`'s raw answer (HTTP `status`, `body`); a refusal
    /// becomes the server's message.
    pub fn apply_http(&mut self, status: u16, body: &[u8]) -> Result<StepReport> {
        self.apply(&super::parse_answer(status, body)?)
    }

    /// The personalised adapter, in the format `lopa train` and `lopa export-web` write.
    pub fn adapter(&self) -> Result<Adapter> {
        Ok(Adapter { meta: self.meta.clone(), weights: self.generator.to_tensors()? })
    }

    /// The same with asynchronous reads (required on WebGPU).
    pub async fn adapter_async(&self) -> Result<Adapter> {
        Ok(Adapter { meta: self.meta.clone(), weights: self.generator.to_tensors_async().await? })
    }
}
