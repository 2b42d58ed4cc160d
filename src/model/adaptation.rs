//! What a trained adapter changes: the prompt, through a soft-prompt [`PromptGenerator`] that runs
//! on the client, or the model, through a [`DecoderLora`] inside the frozen decoder, which needs
//! the server's weights (the paper's reference point). No adaptation at all is the bare frozen
//! model: the zero-shot baseline.

use crate::error::Result;
use crate::model::decoder::Decoder;
use crate::model::generator::{GeneratorConfig, Method, PromptGenerator};
use crate::model::lora::{DecoderLora, LoraConfig};
use crate::model::weights::TensorMap;
use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// Which adaptation to train: a prompt method, or a LoRA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdaptationKind {
    Prompt(Method),
    Lora,
}

impl AdaptationKind {
    /// Every kind, in the order the paper's tables list them.
    pub const ALL: [AdaptationKind; 7] = [
        AdaptationKind::Prompt(Method::Pt),
        AdaptationKind::Prompt(Method::Idpg),
        AdaptationKind::Prompt(Method::Lopa),
        AdaptationKind::Prompt(Method::LopaAdd),
        AdaptationKind::Prompt(Method::LopaMax),
        AdaptationKind::Prompt(Method::LopaConcat),
        AdaptationKind::Lora,
    ];

    /// The CLI and report name (`lopa`, …, `lora`).
    pub fn name(self) -> &'static str {
        match self {
            AdaptationKind::Prompt(m) => m.name(),
            AdaptationKind::Lora => "lora",
        }
    }
}

#[cfg(feature = "cli")]
impl clap::ValueEnum for AdaptationKind {
    fn value_variants<'a>() -> &'a [Self] {
        &Self::ALL
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()))
    }
}

/// The sizes of an adaptation, as `adapter.json` records them: `"generator": {…}` for a prompt
/// method, `"lora": {…}` for a LoRA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AdaptationConfig {
    #[serde(rename = "generator")]
    Prompt(GeneratorConfig),
    #[serde(rename = "lora")]
    Lora(LoraConfig),
}

impl AdaptationConfig {
    /// Which kind this is.
    pub fn kind(&self) -> AdaptationKind {
        match self {
            AdaptationConfig::Prompt(g) => AdaptationKind::Prompt(g.method),
            AdaptationConfig::Lora(_) => AdaptationKind::Lora,
        }
    }

    /// Trainable parameters.
    pub fn trainable_parameters(&self) -> usize {
        match self {
            AdaptationConfig::Prompt(g) => g.trainable_parameters(),
            AdaptationConfig::Lora(l) => l.parameters(),
        }
    }

    /// Whether it reads the input through the sentence encoder.
    pub fn uses_encoder(&self) -> bool {
        matches!(self, AdaptationConfig::Prompt(g) if g.method.uses_encoder())
    }

    /// The soft-prompt generator's config, if this makes soft prompts.
    pub fn generator(&self) -> Option<&GeneratorConfig> {
        match self {
            AdaptationConfig::Prompt(g) => Some(g),
            AdaptationConfig::Lora(_) => None,
        }
    }

    /// Fresh weights.
    pub fn init(&self, device: &Device) -> Result<Adaptation> {
        Ok(match self {
            AdaptationConfig::Prompt(g) => Adaptation::Prompt(g.init(device)?),
            AdaptationConfig::Lora(l) => {
                l.validate()?;
                Adaptation::Lora(l.init(device))
            }
        })
    }
}

/// A trainable adaptation of the frozen model.
// One per run, moved once per optimizer step: its size is nothing next to the step.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Adaptation {
    Prompt(PromptGenerator),
    Lora(DecoderLora),
}

impl Adaptation {
    /// Build from saved weights, checking every shape against `config`.
    pub fn from_tensors(config: &AdaptationConfig, w: &TensorMap, device: &Device) -> Result<Self> {
        Ok(match config {
            AdaptationConfig::Prompt(g) => Adaptation::Prompt(PromptGenerator::from_tensors(g, w, device)?),
            AdaptationConfig::Lora(l) => Adaptation::Lora(DecoderLora::from_tensors(l, w, device)?),
        })
    }

    /// The weights on the host (PyTorch / PEFT layout).
    pub fn to_tensors(&self) -> Result<TensorMap> {
        TensorMap::from_device(match self {
            Adaptation::Prompt(g) => g.named(),
            Adaptation::Lora(l) => l.named(),
        })
    }

    /// The soft-prompt generator, if this makes soft prompts.
    pub fn generator(&self) -> Option<&PromptGenerator> {
        match self {
            Adaptation::Prompt(g) => Some(g),
            Adaptation::Lora(_) => None,
        }
    }

    /// The decoder its outputs go to: the frozen one, or the frozen one with this LoRA inside.
    pub fn decoder<'a>(&self, decoder: &'a Decoder) -> Cow<'a, Decoder> {
        match self {
            Adaptation::Prompt(_) => Cow::Borrowed(decoder),
            Adaptation::Lora(l) => Cow::Owned(decoder.with_lora(Some(l.clone()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::decoder::Decoder;

    #[test]
    fn parameter_counts_and_the_saved_layout() {
        let d = Device::flex();
        // LoRA r = 16 on q/k/v of SmolLM2-135M: 30 layers · 16 · (3·576 + 576 + 2·192).
        let c = AdaptationConfig::Lora(Decoder::smollm2_135m_config().lora(16, 32.0));
        assert_eq!(c.trainable_parameters(), 1_290_240);
        assert_eq!(c.init(&d).unwrap().num_params(), 1_290_240);
        let small = AdaptationConfig::Lora(LoraConfig { rank: 2, alpha: 4.0, num_hidden_layers: 2, hidden_size: 8, q_dim: 8, kv_dim: 4 });
        let a = small.init(&d).unwrap();
        let w = a.to_tensors().unwrap();
        assert_eq!(w.len(), 2 * 3 * 2);
        assert_eq!(w.get("lora.layers.1.k_proj.lora_A.weight").unwrap().shape, vec![2, 8], "PEFT layout [r, d_in]");
        let w2 = Adaptation::from_tensors(&small, &w, &d).unwrap().to_tensors().unwrap();
        assert!(w.names().all(|n| w.get(n).unwrap().data == w2.get(n).unwrap().data), "lora weights round-trip");
        let zero = AdaptationConfig::Lora(LoraConfig { rank: 0, alpha: 1.0, num_hidden_layers: 2, hidden_size: 8, q_dim: 8, kv_dim: 4 });
        assert!(zero.init(&d).unwrap_err().to_string().starts_with("config: a LoRA needs positive sizes"));
        let p = AdaptationConfig::Prompt(GeneratorConfig::new(Method::Lopa, 576, 384));
        assert_eq!((p.kind().name(), p.uses_encoder(), c.uses_encoder()), ("lopa", true, false));
    }

    #[test]
    fn adapter_json_names_the_adaptation() {
        let p = AdaptationConfig::Prompt(GeneratorConfig::new(Method::Pt, 8, 4));
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["generator"]["method"], "pt");
        let l = AdaptationConfig::Lora(LoraConfig { rank: 2, alpha: 4.0, num_hidden_layers: 2, hidden_size: 8, q_dim: 8, kv_dim: 4 });
        assert_eq!(serde_json::to_value(&l).unwrap()["lora"]["rank"], 2);
        assert_eq!(serde_json::from_value::<AdaptationConfig>(v).unwrap(), p);
    }
}
