//! The LoPA soft-prompt generator (Jain et al., "Prompt Tuning Strikes Back: Customizing
//! Foundation Models with Low-Rank Prompt Adaptation", NeurIPS 2024,
//! <https://arxiv.org/abs/2405.15282>), its gate variants and the PT / IDPG baselines.
//!
//! Z (m x d) = Z_S ⊙ σ(u·vᵀ), u = MLP_u(f(x)) (m x r), v = MLP_v(f(x)) (d x r).

use crate::error::{Error, Result};
use crate::model::weights::TensorMap;
use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::activation::{sigmoid, tanh};
use burn::tensor::{Device, Distribution, Tensor};
use serde::{Deserialize, Serialize};

/// How the soft prompt is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Z_S ⊙ σ(u·vᵀ) (the paper's LoPA).
    Lopa,
    /// Z_S + u·vᵀ.
    LopaAdd,
    /// max(Z_S, u·vᵀ) elementwise.
    LopaMax,
    /// [Z_S ; u·vᵀ]: 2m virtual tokens.
    LopaConcat,
    /// Prompt tuning (Lester et al. 2021): Z_S alone, the same for every input.
    Pt,
    /// IDPG (Wu et al. 2022): a full-rank instance prompt MLP(f(x)) reshaped to m x d.
    Idpg,
}

impl Method {
    /// All methods, in the order the paper's tables list them.
    pub const ALL: [Method; 6] = [Method::Pt, Method::Idpg, Method::Lopa, Method::LopaAdd, Method::LopaMax, Method::LopaConcat];

    /// The CLI / config name.
    pub fn name(self) -> &'static str {
        match self {
            Method::Lopa => "lopa",
            Method::LopaAdd => "lopa-add",
            Method::LopaMax => "lopa-max",
            Method::LopaConcat => "lopa-concat",
            Method::Pt => "pt",
            Method::Idpg => "idpg",
        }
    }
    fn has_task_prompt(self) -> bool {
        self != Method::Idpg
    }
    fn has_low_rank_heads(self) -> bool {
        !matches!(self, Method::Pt | Method::Idpg)
    }
    /// Whether the prompt depends on the input (needs the encoder).
    pub fn uses_encoder(self) -> bool {
        self != Method::Pt
    }
}

impl std::str::FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| Error::Config(format!("unknown method `{s}` (one of: lopa, lopa-add, lopa-max, lopa-concat, pt, idpg)")))
    }
}

/// Shape and initialisation of a generator. Defaults are the paper's GLUE settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratorConfig {
    pub method: Method,
    /// m: soft-prompt length.
    pub num_virtual_tokens: usize,
    /// d: the frozen model's embedding width.
    pub token_dim: usize,
    /// h: the encoder's sentence-embedding width.
    pub encoder_dim: usize,
    /// H: hidden width of each head.
    pub hidden_dim: usize,
    /// r: rank of u·vᵀ.
    pub rank: usize,
    /// Dropout on the heads' input.
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    /// Std of Z_S at init (paper: N(0, 1)).
    #[serde(default = "one")]
    pub task_prompt_init_std: f64,
}

fn default_dropout() -> f64 {
    0.1
}
fn one() -> f64 {
    1.0
}

impl GeneratorConfig {
    /// A config with the paper's defaults for m=10, r=4, H=256.
    pub fn new(method: Method, token_dim: usize, encoder_dim: usize) -> Self {
        Self { method, num_virtual_tokens: 10, token_dim, encoder_dim, hidden_dim: 256, rank: 4, dropout: 0.1, task_prompt_init_std: 1.0 }
    }

    /// Check the sizes are usable.
    pub fn validate(&self) -> Result<()> {
        let checks = [
            (self.num_virtual_tokens, "num_virtual_tokens"),
            (self.token_dim, "token_dim"),
            (self.encoder_dim, "encoder_dim"),
            (self.hidden_dim, "hidden_dim"),
            (self.rank, "rank"),
        ];
        for (v, n) in checks {
            if v == 0 {
                return Err(Error::Config(format!("{n} must be positive")));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::Config(format!("dropout {} must be in [0, 1)", self.dropout)));
        }
        Ok(())
    }

    /// Virtual tokens the frozen model sees (2m for concat).
    pub fn prompt_len(&self) -> usize {
        match self.method {
            Method::LopaConcat => 2 * self.num_virtual_tokens,
            _ => self.num_virtual_tokens,
        }
    }

    /// Trainable parameters, in closed form. For LoPA:
    /// P = m·d + 2·(h·H + H) + H·r·(m + d) + r·(m + d).
    pub fn trainable_parameters(&self) -> usize {
        let (m, d, h, hh, r) = (self.num_virtual_tokens, self.token_dim, self.encoder_dim, self.hidden_dim, self.rank);
        match self.method {
            Method::Pt => m * d,
            Method::Idpg => h * hh + hh + hh * m * d + m * d,
            _ => m * d + 2 * (h * hh + hh) + hh * r * (m + d) + r * (m + d),
        }
    }

    /// Fresh weights: Z_S ~ N(0, task_prompt_init_std²), head weights ~ N(0, 0.02²), biases 0.
    pub fn init(&self, device: &Device) -> Result<PromptGenerator> {
        self.validate()?;
        let (m, d, r) = (self.num_virtual_tokens, self.token_dim, self.rank);
        let normal = |shape: [usize; 2], std: f64| Param::from_tensor(Tensor::<2>::random(shape, Distribution::Normal(0.0, std), device));
        let head = |out: usize| MlpHead {
            dropout: DropoutConfig::new(self.dropout).init(),
            hidden: Linear { weight: normal([self.encoder_dim, self.hidden_dim], 0.02), bias: Some(Param::from_tensor(Tensor::zeros([self.hidden_dim], device))) },
            output: Linear { weight: normal([self.hidden_dim, out], 0.02), bias: Some(Param::from_tensor(Tensor::zeros([out], device))) },
        };
        let low_rank = self.method.has_low_rank_heads();
        Ok(PromptGenerator {
            task_prompt: self.method.has_task_prompt().then(|| normal([m, d], self.task_prompt_init_std)),
            u_head: low_rank.then(|| head(m * r)),
            v_head: low_rank.then(|| head(d * r)),
            instance_head: (self.method == Method::Idpg).then(|| head(m * d)),
            config: self.clone(),
        })
    }
}

/// Dropout → Linear(h → H) → tanh → Linear(H → out).
#[derive(Module, Debug)]
pub struct MlpHead {
    pub dropout: Dropout,
    pub hidden: Linear,
    pub output: Linear,
}

impl MlpHead {
    /// `[b, h]` → `[b, out]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.output.forward(tanh(self.hidden.forward(self.dropout.forward(x))))
    }
}

/// The trainable part of LoPA: everything that lives on the client.
#[derive(Module, Debug)]
pub struct PromptGenerator {
    /// Z_S, `[m, d]` (absent for IDPG).
    pub task_prompt: Option<Param<Tensor<2>>>,
    /// MLP_u: h → m·r.
    pub u_head: Option<MlpHead>,
    /// MLP_v: h → d·r.
    pub v_head: Option<MlpHead>,
    /// IDPG's full-rank head: h → m·d.
    pub instance_head: Option<MlpHead>,
    #[module(skip)]
    pub config: GeneratorConfig,
}

impl PromptGenerator {
    /// Soft prompts for sentence embeddings `f`: `[b, h]` → `[b, prompt_len, d]`.
    pub fn forward(&self, f: Tensor<2>) -> Result<Tensor<3>> {
        let c = &self.config;
        let [b, h] = f.dims();
        if h != c.encoder_dim {
            return Err(Error::Input(format!("sentence embedding has width {h}, the generator expects {}", c.encoder_dim)));
        }
        let (m, d, r) = (c.num_virtual_tokens, c.token_dim, c.rank);
        let zs = || self.task_prompt.as_ref().expect("method has Z_S").val().unsqueeze_dim::<3>(0).expand([b, m, d]);
        let low_rank = || {
            let u = self.u_head.as_ref().expect("lopa heads").forward(f.clone()).reshape([b, m, r]);
            let v = self.v_head.as_ref().expect("lopa heads").forward(f.clone()).reshape([b, d, r]);
            u.matmul(v.swap_dims(1, 2))
        };
        Ok(match c.method {
            Method::Lopa => zs() * sigmoid(low_rank()),
            Method::LopaAdd => zs() + low_rank(),
            Method::LopaMax => zs().max_pair(low_rank()),
            Method::LopaConcat => Tensor::cat(vec![zs(), low_rank()], 1),
            Method::Pt => zs(),
            Method::Idpg => self.instance_head.as_ref().expect("idpg head").forward(f).reshape([b, m, d]),
        })
    }

    /// Parameter names and device tensors in PyTorch layout (Linear weights `[out, in]`).
    pub fn named(&self) -> Vec<(String, Tensor<2>)> {
        let mut out = Vec::new();
        if let Some(z) = &self.task_prompt {
            out.push(("task_prompt".to_string(), z.val()));
        }
        for (name, head) in [("u_head", &self.u_head), ("v_head", &self.v_head), ("instance_head", &self.instance_head)] {
            if let Some(hd) = head {
                for (lname, l) in [("hidden", &hd.hidden), ("output", &hd.output)] {
                    out.push((format!("{name}.{lname}.weight"), l.weight.val().transpose()));
                    let bias = l.bias.as_ref().expect("heads have biases").val();
                    let n = bias.dims()[0];
                    out.push((format!("{name}.{lname}.bias"), bias.reshape([1, n])));
                }
            }
        }
        out
    }

    /// Read the weights back to host memory, in PyTorch layout.
    pub fn to_tensors(&self) -> Result<TensorMap> {
        TensorMap::from_device(self.named())
    }

    /// The same with asynchronous reads (required on WebGPU).
    pub async fn to_tensors_async(&self) -> Result<TensorMap> {
        TensorMap::from_device_async(self.named()).await
    }

    /// Build from saved weights (PyTorch layout), checking every shape against `config`.
    pub fn from_tensors(config: &GeneratorConfig, w: &TensorMap, device: &Device) -> Result<Self> {
        config.validate()?;
        let mut g = config.init(device)?;
        let (m, d, h, hh, r) = (config.num_virtual_tokens, config.token_dim, config.encoder_dim, config.hidden_dim, config.rank);
        if g.task_prompt.is_some() {
            g.task_prompt = Some(Param::from_tensor(w.tensor("task_prompt", [m, d], device)?));
        }
        let load = |head: &mut Option<MlpHead>, name: &str, out: usize| -> Result<()> {
            if let Some(hd) = head {
                hd.hidden = crate::model::nn::linear(w, &format!("{name}.hidden"), h, hh, true, device)?;
                hd.output = crate::model::nn::linear(w, &format!("{name}.output"), hh, out, true, device)?;
            }
            Ok(())
        };
        load(&mut g.u_head, "u_head", m * r)?;
        load(&mut g.v_head, "v_head", d * r)?;
        load(&mut g.instance_head, "instance_head", m * d)?;
        Ok(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> Device {
        Device::flex()
    }

    #[test]
    fn parameter_count_matches_formula_and_module() {
        let d = device();
        for method in Method::ALL {
            let mut c = GeneratorConfig::new(method, 576, 384);
            c.num_virtual_tokens = 10;
            let g = c.init(&d).unwrap();
            assert_eq!(g.num_params(), c.trainable_parameters(), "{method:?}");
        }
        // The paper's formula by hand for m=10, d=576, h=384, H=256, r=4.
        let c = GeneratorConfig::new(Method::Lopa, 576, 384);
        assert_eq!(c.trainable_parameters(), 5760 + 2 * (384 * 256 + 256) + 256 * 4 * 586 + 4 * 586);
    }

    #[test]
    fn starts_near_half_the_task_prompt() {
        let d = device();
        let g = GeneratorConfig::new(Method::Lopa, 32, 16).init(&d).unwrap();
        let f = Tensor::<2>::random([3, 16], Distribution::Normal(0.0, 1.0), &d);
        let z = g.forward(f).unwrap();
        assert_eq!(z.dims(), [3, 10, 32]);
        let zs = g.task_prompt.as_ref().unwrap().val().unsqueeze_dim::<3>(0).expand([3, 10, 32]) * 0.5;
        let diff: f32 = (z - zs).abs().max().into_scalar();
        // u·vᵀ ≈ 0 at init (weights N(0, 0.02), zero output bias), so σ ≈ 0.5.
        assert!(diff < 0.01, "{diff}");
    }

    #[test]
    fn wrong_encoder_width_is_an_error() {
        let d = device();
        let g = GeneratorConfig::new(Method::Lopa, 8, 4).init(&d).unwrap();
        let e = g.forward(Tensor::zeros([1, 5], &d)).unwrap_err().to_string();
        assert_eq!(e, "input: sentence embedding has width 5, the generator expects 4");
        assert_eq!("nope".parse::<Method>().unwrap_err().to_string(),
            "config: unknown method `nope` (one of: lopa, lopa-add, lopa-max, lopa-concat, pt, idpg)");
    }

    #[test]
    fn save_load_round_trip() {
        let d = device();
        for method in Method::ALL {
            let mut c = GeneratorConfig::new(method, 8, 4);
            c.hidden_dim = 6;
            c.num_virtual_tokens = 3;
            c.rank = 2;
            let g = c.init(&d).unwrap();
            let w = g.to_tensors().unwrap();
            let g2 = PromptGenerator::from_tensors(&c, &w, &d).unwrap();
            let f = Tensor::<2>::random([2, 4], Distribution::Normal(0.0, 1.0), &d);
            let a = g.forward(f.clone()).unwrap().into_data().try_to_vec::<f32>().unwrap();
            let b = g2.forward(f).unwrap().into_data().try_to_vec::<f32>().unwrap();
            assert_eq!(a, b, "{method:?}");
        }
    }
}
