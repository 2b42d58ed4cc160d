//! BERT-family sentence encoder (Devlin et al. 2019, <https://arxiv.org/abs/1810.04805>), the
//! frozen f(x) of LoPA. Config field names follow Hugging Face `config.json`; the module layout
//! mirrors the checkpoint's tensor names (`embeddings.word_embeddings.weight`, `encoder.layer.N...`).

pub mod bundle;

use crate::error::{Error, Result};
use crate::model::fast_math::{add_layer_norm, gelu_in_place};
use crate::model::int8_linear::Int8Linear;
use crate::model::nn::{attention, gelu_tanh, host_values, key_padding_bias, layer_norm, linear, merge_heads, self_attention_rows, split_heads, Projection};
use crate::model::parallel;
use crate::model::tokenizer::Tokenizer;
use crate::model::weights::{safetensors, TensorMap};
use burn::module::{Module, Param};
use burn::nn::{LayerNorm, Linear};
use burn::tensor::activation::tanh;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// Hugging Face `BertConfig` fields lopa uses.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_ln_eps")]
    pub layer_norm_eps: f64,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_type_vocab() -> usize {
    2
}
fn default_ln_eps() -> f64 {
    1e-12
}

impl BertConfig {
    /// Parse `config.json`, checking the values lopa depends on.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let c: Self = serde_json::from_slice(bytes).map_err(|e| Error::Config(format!("encoder config.json: {e}")))?;
        if c.hidden_size == 0 || c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            return Err(Error::Config(format!(
                "hidden_size {} is not a positive multiple of num_attention_heads {}",
                c.hidden_size, c.num_attention_heads
            )));
        }
        if !matches!(c.hidden_act.as_str(), "gelu" | "gelu_new" | "gelu_pytorch_tanh") {
            return Err(Error::Config(format!("hidden_act `{}` is not supported", c.hidden_act)));
        }
        Ok(c)
    }
    fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// How token states become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Mean over non-padding tokens (sentence-transformers).
    Mean,
    /// The first token's state (`[CLS]` / `<s>`; the LoPA paper's GLUE setting).
    FirstToken,
    /// BERT's pooler: tanh(dense(first token)) (`pooler_output`).
    Pooler,
}

#[derive(Module, Debug)]
pub struct BertEmbeddings {
    pub word_embeddings: Param<Tensor<2>>,
    pub position_embeddings: Param<Tensor<2>>,
    pub token_type_embeddings: Param<Tensor<2>>,
    pub layer_norm: LayerNorm,
}

impl BertEmbeddings {
    /// `embeddings.*` (word, position, token type, LayerNorm).
    pub fn load(w: &TensorMap, cfg: &BertConfig, device: &Device) -> Result<Self> {
        let h = cfg.hidden_size;
        let e = |n: &str, rows: usize| -> Result<Param<Tensor<2>>> { Ok(Param::from_tensor(w.tensor(&format!("embeddings.{n}.weight"), [rows, h], device)?)) };
        Ok(Self {
            word_embeddings: e("word_embeddings", cfg.vocab_size)?,
            position_embeddings: e("position_embeddings", cfg.max_position_embeddings)?,
            token_type_embeddings: e("token_type_embeddings", cfg.type_vocab_size)?,
            layer_norm: layer_norm(w, "embeddings.LayerNorm", h, cfg.layer_norm_eps, device)?,
        })
    }

    /// Ids `[b, s]` → `[b, s, h]` (one segment: token type 0).
    pub fn forward(&self, input_ids: Tensor<2, Int>) -> Tensor<3> {
        let [b, s] = input_ids.dims();
        let word = self.word_embeddings.val();
        let h = word.dims()[1];
        let tok = word.select(0, input_ids.reshape([b * s])).reshape([b, s, h]);
        let pos = self.position_embeddings.val().narrow(0, 0, s).unsqueeze_dim::<3>(0);
        let typ = self.token_type_embeddings.val().narrow(0, 0, 1).unsqueeze_dim::<3>(0);
        self.layer_norm.forward(tok + pos + typ)
    }
}

/// `encoder.layer.N`: post-norm self-attention and feed-forward, each with a residual.
#[derive(Module, Debug)]
pub struct BertLayer {
    pub query: Projection,
    pub key: Projection,
    pub value: Projection,
    pub attention_output: Projection,
    pub attention_layer_norm: LayerNorm,
    pub intermediate: Projection,
    pub output: Projection,
    pub output_layer_norm: LayerNorm,
    heads: usize,
    head_dim: usize,
    tanh_gelu: bool,
    layer_norm_eps: f64,
}

impl BertLayer {
    /// Weights under `prefix` (`encoder.layer.N`).
    pub fn load(w: &TensorMap, prefix: &str, cfg: &BertConfig, device: &Device) -> Result<Self> {
        let (h, eps, p) = (cfg.hidden_size, cfg.layer_norm_eps, prefix);
        Ok(Self {
            query: Projection::load(w, &format!("{p}.attention.self.query"), h, h, device)?,
            key: Projection::load(w, &format!("{p}.attention.self.key"), h, h, device)?,
            value: Projection::load(w, &format!("{p}.attention.self.value"), h, h, device)?,
            attention_output: Projection::load(w, &format!("{p}.attention.output.dense"), h, h, device)?,
            attention_layer_norm: layer_norm(w, &format!("{p}.attention.output.LayerNorm"), h, eps, device)?,
            intermediate: Projection::load(w, &format!("{p}.intermediate.dense"), h, cfg.intermediate_size, device)?,
            output: Projection::load(w, &format!("{p}.output.dense"), cfg.intermediate_size, h, device)?,
            output_layer_norm: layer_norm(w, &format!("{p}.output.LayerNorm"), h, eps, device)?,
            heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim(),
            tanh_gelu: cfg.hidden_act != "gelu",
            layer_norm_eps: eps,
        })
    }

    /// The projections' int8 weights where the layer runs on host values ([`Self::forward_host`]):
    /// every projection int8 (the CPU with an int8 file) and the exact GELU.
    fn int8_projections(&self) -> Option<[&Int8Linear; 6]> {
        let [q, k, v, o, i, out] = [&self.query, &self.key, &self.value, &self.attention_output, &self.intermediate, &self.output].map(Projection::as_int8);
        if self.tanh_gelu { None } else { Some([q?, k?, v?, o?, i?, out?]) }
    }

    /// The two LayerNorms' (gamma, beta) as host values, for [`Self::forward_host`]: read once a
    /// call, not once for each group of sentences.
    fn host_norms(&self) -> [(Vec<f32>, Vec<f32>); 2] {
        [&self.attention_layer_norm, &self.output_layer_norm]
            .map(|ln| (host_values(ln.gamma.val()), ln.beta.as_ref().map(|b| host_values(b.val())).unwrap_or_else(|| vec![0.0; ln.gamma.dims()[0]])))
    }

    /// [`Self::forward`] for sentences of `s` tokens on host values: `x` is `[n · s, h]`,
    /// `key_bias` `[n · s]`, `norms` [`Self::host_norms`]. The projections take all `n · s` rows at
    /// once; attention reads their rows as they are, a sentence at a time; each residual sum and
    /// LayerNorm runs in its projection's piece of work, on rows still in cache.
    fn forward_host(&self, x: &[f32], key_bias: &[f32], s: usize, norms: &[(Vec<f32>, Vec<f32>); 2]) -> Vec<f32> {
        let [q, k, v, o, i, out] = self.int8_projections().expect("a layer with int8 projections");
        let eps = self.layer_norm_eps as f32;
        let [qx, kx, vx] = [q, k, v].map(|p| p.forward(x));
        let (scale, w) = ((self.head_dim as f64).powf(-0.5) as f32, self.heads * self.head_dim);
        let mut ctx = vec![0f32; qx.len()];
        for (i, ctx) in ctx.chunks_mut(s * w).enumerate() {
            let at = i * s * w..(i + 1) * s * w;
            self_attention_rows(&qx[at.clone()], &kx[at.clone()], &vx[at], [self.heads, self.head_dim], &key_bias[i * s..][..s], scale, ctx);
        }
        let [(g1, b1), (g2, b2)] = norms;
        let h = g1.len();
        let a = o.forward_then(&ctx, |r0, band| add_layer_norm(band, &x[r0 * h..][..band.len()], g1, b1, eps));
        let mid = i.forward_then(&a, |_, band| gelu_in_place(band));
        out.forward_then(&mid, |r0, band| add_layer_norm(band, &a[r0 * h..][..band.len()], g2, b2, eps))
    }

    /// `[b, s, h]` → `[b, s, h]`; `bias` masks padding keys.
    pub fn forward(&self, x: Tensor<3>, bias: Tensor<4>) -> Tensor<3> {
        let [q, k, v] = Projection::forward_each([&self.query, &self.key, &self.value], x.clone()).map(|t| split_heads(t, self.heads, self.head_dim));
        let ctx = merge_heads(attention(q, k, v, bias, (self.head_dim as f64).powf(-0.5)));
        let a = self.attention_layer_norm.forward(self.attention_output.forward(ctx) + x);
        let i = if self.tanh_gelu { gelu_tanh(self.intermediate.forward(a.clone())) } else { self.intermediate.forward_gelu(a.clone()) };
        self.output_layer_norm.forward(self.output.forward(i) + a)
    }
}

/// A BERT encoder with an optional pooler.
#[derive(Module, Debug)]
pub struct Bert {
    pub embeddings: BertEmbeddings,
    pub layers: Vec<BertLayer>,
    pub pooler: Option<Linear>,
}

impl Bert {
    /// Build from checkpoint tensors (an optional `bert.` prefix is accepted).
    pub fn from_tensors(cfg: &BertConfig, mut w: TensorMap, device: &Device) -> Result<Self> {
        w.strip_prefix("bert.");
        let h = cfg.hidden_size;
        let embeddings = BertEmbeddings::load(&w, cfg, device)?;
        let layers = (0..cfg.num_hidden_layers).map(|i| BertLayer::load(&w, &format!("encoder.layer.{i}"), cfg, device)).collect::<Result<Vec<_>>>()?;
        let pooler = if w.contains("pooler.dense.weight") { Some(linear(&w, "pooler.dense", h, h, true, device)?) } else { None };
        Ok(Self { embeddings, layers, pooler }.no_grad())
    }

    /// Token states. `input_ids`: `[b, s]`; `mask`: row-major `[b, s]` of 0/1. Returns `[b, s, h]`.
    pub fn forward(&self, input_ids: Tensor<2, Int>, mask: &[f32]) -> Tensor<3> {
        let ([b, s], device) = (input_ids.dims(), input_ids.device());
        let bias = key_padding_bias(mask, b, s, &device);
        let mut x = self.embeddings.forward(input_ids);
        if b * s > 0 && !self.layers.is_empty() && self.layers.iter().all(|l| l.int8_projections().is_some()) {
            let (h, key_bias, x) = (x.dims()[2], host_values(bias), host_values(x));
            let mut out = vec![0f32; b * s * h];
            // The sentences in groups, each one piece of work through every layer: no pool-wide
            // wait between layers, and each projection multiplies a group's rows at once (its
            // weights are read once for them). One group on one thread; else twice as many as
            // threads, so that a slow thread is caught up, and the layers split their work too,
            // which a thread out of groups takes up.
            let t = parallel::threads();
            let per = b.div_ceil(if t == 1 { 1 } else { b.min(2 * t) });
            let norms: Vec<_> = self.layers.iter().map(BertLayer::host_norms).collect();
            parallel::for_each_piece(&mut out, per * s * h, |g, o| {
                let (first, rows) = (g * per * s, o.len() / h);
                let (x, key_bias) = (&x[first * h..][..rows * h], &key_bias[first..][..rows]);
                let states = self.layers.iter().zip(&norms).fold(x.to_vec(), |x, (layer, norms)| layer.forward_host(&x, key_bias, s, norms));
                o.copy_from_slice(&states);
            });
            return Tensor::from_data(TensorData::new(out, [b, s, h]), &device);
        }
        for layer in &self.layers {
            x = layer.forward(x, bias.clone());
        }
        x
    }

    /// Pool token states `[b, s, h]` into `[b, h]`.
    pub fn pool(&self, states: Tensor<3>, mask: &[f32], pooling: Pooling) -> Result<Tensor<2>> {
        let [b, s, h] = states.dims();
        Ok(match pooling {
            Pooling::Mean => {
                let m = Tensor::<3>::from_data(TensorData::new(mask.to_vec(), [b, s, 1]), &states.device());
                let sum = (states * m.clone()).sum_dim(1).reshape([b, h]);
                sum / m.sum_dim(1).reshape([b, 1]).clamp_min(1e-9)
            }
            Pooling::FirstToken => states.narrow(1, 0, 1).reshape([b, h]),
            Pooling::Pooler => {
                let p = self.pooler.as_ref().ok_or_else(|| Error::Config("pooling `pooler` needs pooler.dense weights".into()))?;
                tanh(p.forward(states.narrow(1, 0, 1).reshape([b, h])))
            }
        })
    }
}

/// Scale rows `[b, h]` to unit L2 norm.
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let n = x.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
    x / n
}

/// The full f(x): tokenizer + BERT + pooling (+ optional L2 normalisation).
#[derive(Debug, Clone)]
pub struct SentenceEncoder {
    pub bert: Bert,
    pub tokenizer: Tokenizer,
    pub pooling: Pooling,
    pub normalize: bool,
    pub config: BertConfig,
    /// Identity for adapter compatibility checks.
    pub id: String,
    /// sha256 of the weights file.
    pub sha256: String,
}

impl SentenceEncoder {
    /// Load from Hugging Face files held in memory: `config.json`, `model.safetensors`, `tokenizer.json`.
    pub fn from_bytes(config: &[u8], weights: &[u8], tokenizer: &[u8], pooling: Pooling, normalize: bool, device: &Device) -> Result<Self> {
        let cfg = BertConfig::from_json(config)?;
        let w = safetensors::parse(weights)?.tensors;
        let bert = Bert::from_tensors(&cfg, w, device)?;
        let tokenizer = Tokenizer::from_json_bytes(tokenizer, cfg.max_position_embeddings)?;
        let sha256 = crate::model::weights::sha256_hex(weights);
        Ok(Self { bert, tokenizer, pooling, normalize, config: cfg, id: "encoder".into(), sha256 })
    }

    /// Load from a Hugging Face model directory (mean pooling + L2 norm, the sentence-transformers
    /// default, unless the directory's `1_Pooling/config.json` says CLS).
    pub fn from_dir(dir: impl AsRef<std::path::Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let read = |n: &str| crate::fs::read_file(dir.join(n));
        let pooling = match read("1_Pooling/config.json") {
            Ok(b) if String::from_utf8_lossy(&b).contains("\"pooling_mode_cls_token\": true") => Pooling::FirstToken,
            _ => Pooling::Mean,
        };
        let normalize = dir.join("2_Normalize").exists() || read("modules.json").map(|b| String::from_utf8_lossy(&b).contains("Normalize")).unwrap_or(false);
        let mut enc = Self::from_bytes(&read("config.json")?, &read("model.safetensors")?, &read("tokenizer.json")?, pooling, normalize, device)?;
        enc.id = dir.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        Ok(enc)
    }

    /// Token ids and 0/1 mask for a batch, right-padded with id 0.
    pub fn tokenize(&self, texts: &[&str]) -> Result<(Vec<i64>, Vec<f32>, usize)> {
        let ids: Vec<Vec<u32>> = texts.iter().map(|t| self.tokenizer.encode_with_special_tokens(t)).collect::<Result<_>>()?;
        let s = ids.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut flat = vec![0i64; texts.len() * s];
        let mut mask = vec![0f32; texts.len() * s];
        for (r, row) in ids.iter().enumerate() {
            for (c, &id) in row.iter().enumerate() {
                flat[r * s + c] = id as i64;
                mask[r * s + c] = 1.0;
            }
        }
        Ok((flat, mask, s))
    }

    /// Sentence embeddings `[b, h]` of `texts`.
    pub fn embed(&self, texts: &[&str], device: &Device) -> Result<Tensor<2>> {
        if texts.is_empty() {
            return Err(Error::Input("no texts to embed".into()));
        }
        let (ids, mask, s) = self.tokenize(texts)?;
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [texts.len(), s]), device);
        let states = self.bert.forward(ids, &mask);
        let pooled = self.bert.pool(states, &mask, self.pooling)?;
        Ok(if self.normalize { l2_normalize(pooled) } else { pooled })
    }

    /// Width of the sentence embedding (h).
    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::weights::safetensors::quantize_int8;
    use crate::model::weights::{HostTensor, Int8Matrix};
    use crate::rng::Rng;

    /// A small random BERT whose projections are int8, as an int8 file loads on the CPU: its
    /// layers on host values (`Bert::forward`) against the same layers on tensors, which run
    /// burn's LayerNorm and split and merge heads. Padded rows check the key bias.
    #[test]
    fn int8_layers_on_host_values_match_the_tensor_path() {
        let cfg = BertConfig {
            vocab_size: 50,
            hidden_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 128,
            hidden_act: "gelu".into(),
            max_position_embeddings: 40,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
        };
        let (h, m) = (cfg.hidden_size, cfg.intermediate_size);
        let mut rng = Rng::new(5);
        let mut w = TensorMap::new();
        let mut put = |w: &mut TensorMap, name: String, shape: Vec<usize>, around: f32| {
            let n = shape.iter().product();
            let t = HostTensor::new(shape, (0..n).map(|_| around + rng.next_f32() - 0.5).collect()).unwrap();
            if t.shape.len() == 2 && name.starts_with("encoder") {
                let (values, scales, groups) = quantize_int8(&t, 32);
                let (rows, cols) = (t.shape[0], t.shape[1]);
                w.insert_int8(name.clone(), Int8Matrix { rows, cols, group: cols / groups, values, scales: scales.iter().map(|s| s.to_f32()).collect() });
            }
            w.insert(name, t);
        };
        for (n, rows) in [("word", cfg.vocab_size), ("position", cfg.max_position_embeddings), ("token_type", 2)] {
            put(&mut w, format!("embeddings.{n}_embeddings.weight"), vec![rows, h], 0.0);
        }
        put(&mut w, "embeddings.LayerNorm.weight".into(), vec![h], 1.0);
        put(&mut w, "embeddings.LayerNorm.bias".into(), vec![h], 0.0);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            for (name, d_in, d_out) in [("attention.self.query", h, h), ("attention.self.key", h, h), ("attention.self.value", h, h), ("attention.output.dense", h, h), ("intermediate.dense", h, m), ("output.dense", m, h)] {
                put(&mut w, format!("{p}.{name}.weight"), vec![d_out, d_in], 0.0);
                put(&mut w, format!("{p}.{name}.bias"), vec![d_out], 0.0);
            }
            for ln in ["attention.output.LayerNorm", "output.LayerNorm"] {
                put(&mut w, format!("{p}.{ln}.weight"), vec![h], 1.0);
                put(&mut w, format!("{p}.{ln}.bias"), vec![h], 0.0);
            }
        }
        let device = Device::flex();
        let bert = Bert::from_tensors(&cfg, w, &device).unwrap();
        assert!(bert.layers.iter().all(|l| l.int8_projections().is_some()), "the layers run on host values");
        // Three rows, the second and third padded (4 and 2 tokens).
        let (b, s) = (3, 13);
        let ids: Vec<i64> = (0..b * s).map(|i| (i * 7 % cfg.vocab_size) as i64).collect();
        let mask: Vec<f32> = (0..b * s).map(|i| if i % s >= s - [0, 4, 2][i / s] { 0.0 } else { 1.0 }).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, s]), &device);
        let host = host_values(bert.forward(ids.clone(), &mask));
        let bias = key_padding_bias(&mask, b, s, &device);
        let tensors = host_values(bert.layers.iter().fold(bert.embeddings.forward(ids.clone()), |x, layer| layer.forward(x, bias.clone())));
        let worst = host.iter().zip(&tensors).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        // The two LayerNorms round differently in the last bits, which can move an input of the next
        // projection by one i16 step (max|row| / 32767, ~1e-4 here); a wrong residual, head or
        // mask moves values by ~1.
        assert!(worst < 1e-3, "host values differ from the tensor path by {worst}");
        assert!(host.iter().all(|v| v.is_finite()) && host.len() == b * s * h);
        // The sentences go in groups (all 3 on one thread, one each on more): the same bits
        // whatever the grouping.
        #[cfg(feature = "parallel")]
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let got = pool.install(|| host_values(bert.forward(ids.clone(), &mask)));
            assert!(got.iter().zip(&host).all(|(a, b)| a.to_bits() == b.to_bits()), "{threads} threads differ");
        }
    }
}
