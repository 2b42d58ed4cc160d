//! LoRA (Hu et al. 2021, <https://arxiv.org/abs/2106.09685>) on the frozen decoder's q/k/v
//! projections: the reference point of the LoPA paper's tables. Unlike a soft prompt it changes
//! the server's model, so a LoRA adapter has to live on the server, one per task or user. lopa
//! trains and evaluates it in-process for comparison; `lopa serve` and the browser refuse it.

use crate::error::{Error, Result};
use crate::model::weights::TensorMap;
use burn::module::{Module, Param};
use burn::tensor::{Device, Distribution, Tensor};
use serde::{Deserialize, Serialize};

/// Sizes of a LoRA on q/k/v of every layer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// r.
    pub rank: usize,
    /// The update is scaled by alpha / r.
    pub alpha: f64,
    pub num_hidden_layers: usize,
    /// d: the decoder's width (input of q/k/v).
    pub hidden_size: usize,
    /// Output width of q_proj (heads · head_dim).
    pub q_dim: usize,
    /// Output width of k_proj and v_proj (kv_heads · head_dim).
    pub kv_dim: usize,
}

impl LoraConfig {
    /// Check the sizes are usable.
    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 || self.num_hidden_layers == 0 || self.hidden_size == 0 || self.q_dim == 0 || self.kv_dim == 0 {
            return Err(Error::Config(format!("a LoRA needs positive sizes, got {self:?}")));
        }
        if !self.alpha.is_finite() {
            return Err(Error::Config(format!("LoRA alpha {} is not finite", self.alpha)));
        }
        Ok(())
    }

    /// Trainable parameters: r·(d + out) for each of q, k, v in every layer.
    pub fn parameters(&self) -> usize {
        let (r, d) = (self.rank, self.hidden_size);
        self.num_hidden_layers * r * (3 * d + self.q_dim + 2 * self.kv_dim)
    }

    /// PEFT's initialisation: A uniform(±1/√d) (kaiming-uniform with a = √5), B = 0, so the
    /// adapted model starts equal to the frozen one.
    pub fn init(&self, device: &Device) -> DecoderLora {
        let bound = 1.0 / (self.hidden_size as f64).sqrt();
        let pair = |out: usize| LoraPair {
            lora_a: Param::from_tensor(Tensor::random([self.hidden_size, self.rank], Distribution::Uniform(-bound, bound), device)),
            lora_b: Param::from_tensor(Tensor::zeros([self.rank, out], device)),
        };
        DecoderLora {
            layers: (0..self.num_hidden_layers).map(|_| LoraLayer { q_proj: pair(self.q_dim), k_proj: pair(self.kv_dim), v_proj: pair(self.kv_dim) }).collect(),
            scale: self.alpha / self.rank as f64,
        }
    }
}

/// One low-rank update x·A·B.
#[derive(Module, Debug)]
pub struct LoraPair {
    /// `[d_in, r]`.
    pub lora_a: Param<Tensor<2>>,
    /// `[r, d_out]`.
    pub lora_b: Param<Tensor<2>>,
}

impl LoraPair {
    /// The update for `x`: `[b, s, d_in]` → `[b, s, d_out]`.
    pub fn delta(&self, x: Tensor<3>, scale: f64) -> Tensor<3> {
        x.matmul(self.lora_a.val().unsqueeze()).matmul(self.lora_b.val().unsqueeze()) * scale
    }
}

#[derive(Module, Debug)]
pub struct LoraLayer {
    pub q_proj: LoraPair,
    pub k_proj: LoraPair,
    pub v_proj: LoraPair,
}

/// The updates of every layer.
#[derive(Module, Debug)]
pub struct DecoderLora {
    pub layers: Vec<LoraLayer>,
    #[module(skip)]
    pub scale: f64,
}

impl DecoderLora {
    /// Parameter names and device tensors in PEFT's layout: lora_A `[r, d_in]`, lora_B `[d_out, r]`.
    pub fn named(&self) -> Vec<(String, Tensor<2>)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            for (n, p) in [("q_proj", &l.q_proj), ("k_proj", &l.k_proj), ("v_proj", &l.v_proj)] {
                out.push((format!("lora.layers.{i}.{n}.lora_A.weight"), p.lora_a.val().transpose()));
                out.push((format!("lora.layers.{i}.{n}.lora_B.weight"), p.lora_b.val().transpose()));
            }
        }
        out
    }

    /// Build from saved weights (PEFT layout), checking every shape against `config`.
    pub fn from_tensors(config: &LoraConfig, w: &TensorMap, device: &Device) -> Result<Self> {
        config.validate()?;
        let mut lora = config.init(device);
        for (i, l) in lora.layers.iter_mut().enumerate() {
            for (n, p, out) in [("q_proj", &mut l.q_proj, config.q_dim), ("k_proj", &mut l.k_proj, config.kv_dim), ("v_proj", &mut l.v_proj, config.kv_dim)] {
                p.lora_a = Param::from_tensor(w.linear_weight(&format!("lora.layers.{i}.{n}.lora_A.weight"), config.hidden_size, config.rank, device)?);
                p.lora_b = Param::from_tensor(w.linear_weight(&format!("lora.layers.{i}.{n}.lora_B.weight"), config.rank, out, device)?);
            }
        }
        Ok(lora)
    }
}
