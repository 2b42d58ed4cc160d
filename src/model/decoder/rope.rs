//! RoPE: the unscaled inverse frequencies, and how `rope_scaling` rescales them for a longer
//! context (read from `config.json`, or from a GGUF's `rope_freqs.weight`).

use super::fields::{bad, refuse};
use crate::error::{Error, Result};
use serde_json::{json, Value};

/// How RoPE frequencies are rescaled for a longer context (`rope_scaling`).
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// `linear`: every frequency divided by `factor` (positions interpolated).
    Linear { factor: f64 },
    /// `llama3`: low frequencies divided by `factor`, high ones kept, a smooth ramp between.
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original_max_position_embeddings: usize },
    /// Per-frequency divisors as a GGUF stores them (`rope_freqs.weight`, `head_dim / 2` values).
    FreqFactors(Vec<f64>),
}

impl RopeScaling {
    /// Rescale `inv_freq` (`head_dim / 2` values) in place.
    pub fn apply(&self, inv_freq: &mut [f64]) -> Result<()> {
        match self {
            Self::Linear { factor } => inv_freq.iter_mut().for_each(|f| *f /= factor),
            Self::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
                let old = *original_max_position_embeddings as f64;
                let (low_wavelen, high_wavelen) = (old / low_freq_factor, old / high_freq_factor);
                for f in inv_freq.iter_mut() {
                    let wavelen = 2.0 * std::f64::consts::PI / *f;
                    if wavelen > low_wavelen {
                        *f /= factor;
                    } else if wavelen >= high_wavelen {
                        let smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                        *f = (1.0 - smooth) * *f / factor + smooth * *f;
                    }
                }
            }
            Self::FreqFactors(d) => {
                if d.len() != inv_freq.len() {
                    return Err(Error::tensor("rope_freqs.weight", format!("{} values, head_dim / 2 is {}", d.len(), inv_freq.len())));
                }
                inv_freq.iter_mut().zip(d).for_each(|(f, d)| *f /= d);
            }
        }
        Ok(())
    }

    /// The `rope_scaling` object of `config.json`, or an error where a GGUF's factors match no
    /// known llama3 setting (no `config.json` could reproduce them).
    pub fn to_hf_json(&self, head_dim: usize, theta: f64) -> Result<Value> {
        Ok(match self {
            Self::Linear { factor } => json!({"rope_type": "linear", "factor": factor}),
            Self::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => json!({
                "rope_type": "llama3", "factor": factor, "low_freq_factor": low_freq_factor,
                "high_freq_factor": high_freq_factor, "original_max_position_embeddings": original_max_position_embeddings}),
            Self::FreqFactors(d) => {
                let base = base_inv_freq(theta, head_dim);
                let matches = |s: &Self| -> Result<bool> {
                    let mut f = base.clone();
                    s.apply(&mut f)?;
                    Ok(f.iter().zip(&base).zip(d).all(|((f, b), d)| (b / f - d).abs() <= 1e-5 * d.abs().max(1.0)))
                };
                // The llama3 setting the factors came from. Only ratios of its three lengths show
                // in them, so low_freq_factor is taken as 1 (as every published setting has it)
                // and the others are read off two points of the ramp between the flat ends.
                let factor = d.iter().cloned().fold(1.0, f64::max);
                let ramp: Vec<(f64, f64)> = base.iter().zip(d).filter(|(_, d)| **d > 1.0 + 1e-6 && **d < factor * (1.0 - 1e-6)).map(|(f, d)| (*f / (2.0 * std::f64::consts::PI), (1.0 / d - 1.0 / factor) / (1.0 - 1.0 / factor))).collect();
                let mut candidates = vec![];
                if let (Some(&(x0, y0)), Some(&(x1, y1))) = (ramp.first(), ramp.last()) {
                    if (x1 - x0).abs() > 0.0 {
                        // smooth = orig / wavelength · 1/(high - low) - low/(high - low), linear in 1/wavelength.
                        let a = (y1 - y0) / (x1 - x0);
                        let b = y0 - a * x0;
                        if b < 0.0 {
                            let high = 1.0 - 1.0 / b;
                            candidates.push(Self::Llama3 { factor, low_freq_factor: 1.0, high_freq_factor: (high * 1e6).round() / 1e6, original_max_position_embeddings: (a * (high - 1.0)).round() as usize });
                        }
                    }
                }
                // One point of the ramp: the published ratio of the lengths (low 1, high 4).
                if let Some(&(x0, y0)) = ramp.first() {
                    candidates.push(Self::Llama3 { factor, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: ((3.0 * y0 + 1.0) / x0).round() as usize });
                }
                // Llama 3.1 and 3.2's published settings, for factors with no ramp.
                candidates.extend([8.0, 32.0, 16.0, 4.0, 2.0].map(|factor| Self::Llama3 { factor, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192 }));
                for s in candidates {
                    if matches(&s)? {
                        return s.to_hf_json(head_dim, theta);
                    }
                }
                return Err(Error::Config("rope_freqs.weight matches no llama3 rope_scaling; it cannot be written as config.json".into()));
            }
        })
    }
}

/// RoPE's unscaled inverse frequencies `theta^(-2i/head_dim)`.
pub fn base_inv_freq(theta: f64, head_dim: usize) -> Vec<f64> {
    (0..head_dim / 2).map(|i| theta.powf(-(2.0 * i as f64) / head_dim as f64)).collect()
}


/// `rope_scaling` (or one `rope_parameters` object): `None` for the default RoPE.
pub(super) fn parse_rope_scaling(key: &str, v: &Value) -> Result<Option<RopeScaling>> {
    let o = v.as_object().ok_or_else(|| bad(key, v, "an object"))?;
    // transformers 4.43+ writes `rope_type`, older configs `type`.
    let ty = o.get("rope_type").or(o.get("type")).and_then(Value::as_str).unwrap_or("default");
    let num = |k: &str| -> Result<f64> {
        o.get(k).and_then(Value::as_f64).filter(|f| f.is_finite()).ok_or_else(|| Error::Config(format!("`{key}.{k}` is missing or not a number")))
    };
    Ok(match ty {
        "default" => None,
        "linear" => Some(RopeScaling::Linear { factor: num("factor")? }),
        "llama3" => Some(RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")? as usize,
        }),
        other => return Err(refuse(&format!("{key}.rope_type"), &json!(other), "lopa implements default, linear and llama3 RoPE")),
    })
}

/// A `rope_parameters` object's `rope_theta`.
pub(super) fn theta_of(key: &str, v: &Value) -> Result<Option<f64>> {
    match v.get("rope_theta") {
        None | Some(Value::Null) => Ok(None),
        Some(t) => t.as_f64().filter(|f| f.is_finite()).map(Some).ok_or_else(|| bad(&format!("{key}.rope_theta"), t, "a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_freq_factors_equal_the_llama3_scaling_they_came_from() {
        // Llama 3.2's setting on its head_dim 64 / base 500000, as llama.cpp writes rope_freqs.
        let s = RopeScaling::Llama3 { factor: 32.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192 };
        let base = base_inv_freq(500_000.0, 64);
        let mut scaled = base.clone();
        s.apply(&mut scaled).unwrap();
        // Some frequencies keep their value, some are divided by the factor, some lie between.
        let ratio: Vec<f64> = base.iter().zip(&scaled).map(|(b, f)| b / f).collect();
        assert!(ratio.iter().any(|r| (r - 1.0).abs() < 1e-12) && ratio.iter().any(|r| (r - 32.0).abs() < 1e-9));
        assert!(ratio.iter().any(|r| *r > 1.01 && *r < 31.9));
        let from_gguf = RopeScaling::FreqFactors(ratio);
        let mut f = base.clone();
        from_gguf.apply(&mut f).unwrap();
        assert!(f.iter().zip(&scaled).all(|(a, b)| (a - b).abs() <= 1e-12 * b));
        // export-hf writes the llama3 setting back; factors no setting explains are refused.
        assert_eq!(from_gguf.to_hf_json(64, 500_000.0).unwrap(), s.to_hf_json(64, 500_000.0).unwrap());
        assert!(RopeScaling::FreqFactors(vec![1.5; 32]).to_hf_json(64, 500_000.0).is_err());
    }

    #[test]
    fn linear_scaling_divides_every_frequency() {
        let mut f = base_inv_freq(10_000.0, 8);
        RopeScaling::Linear { factor: 4.0 }.apply(&mut f).unwrap();
        assert_eq!(f, base_inv_freq(10_000.0, 8).iter().map(|x| x / 4.0).collect::<Vec<_>>());
    }
}

