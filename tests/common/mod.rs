//! Shared helpers for the integration tests.
#![allow(dead_code)]

use serde_json::Value;
use std::path::PathBuf;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub fn json(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixture(name)).unwrap()).unwrap()
}

pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Compare logits `[s, vocab]` (row-major) with a `sample_logits` record from make_fixtures.py.
/// Returns the max abs difference divided by the logit scale.
pub fn logits_rel_diff(logits: &[f32], vocab: usize, rec: &Value) -> f32 {
    let k = rec["k"].as_u64().unwrap() as usize;
    let head = rec["head"].as_array().unwrap();
    let s = head.len();
    assert_eq!(logits.len(), s * vocab, "positions");
    let mut worst = 0f32;
    for (p, row) in head.iter().enumerate() {
        let want = floats(row);
        worst = worst.max(max_abs_diff(&logits[p * vocab..p * vocab + k], &want));
    }
    let last = &logits[(s - 1) * vocab..s * vocab];
    for (id, v) in ids(&rec["top_ids"]).iter().zip(floats(&rec["top_values"])) {
        worst = worst.max((last[*id as usize] - v).abs());
    }
    let top = ids(&rec["top_ids"])[0];
    let argmax = last.iter().enumerate().fold((0, f32::MIN), |a, (i, &x)| if x > a.1 { (i, x) } else { a }).0;
    assert_eq!(argmax as u32, top, "argmax of the last position");
    worst / rec["scale"].as_f64().unwrap() as f32
}

/// Weights fetched by scripts/fetch-weights.sh. Missing weights fail the test (CI fetches them)
/// unless LOPA_SKIP_REAL=1 is set explicitly.
pub fn real_weights() -> Option<(PathBuf, PathBuf)> {
    let fm = lopa::paths::default_foundation_model();
    let enc = lopa::paths::default_encoder();
    if fm.exists() && enc.join("model.safetensors").exists() {
        return Some((fm, enc));
    }
    if std::env::var("LOPA_SKIP_REAL").as_deref() == Ok("1") {
        eprintln!("LOPA_SKIP_REAL=1: skipping a real-weight test");
        return None;
    }
    panic!("real weights missing under {:?}: run scripts/fetch-weights.sh (or set LOPA_SKIP_REAL=1)", lopa::paths::cache_dir());
}

/// Row-major values as a soft prompt on the wire (f16 or f32).
#[allow(dead_code)]
pub fn wire(values: &[f32], rows: usize, f16: bool) -> lopa::endpoint::wire::WireSoftPrompt {
    let z = lopa::model::SoftPrompt::new(values.to_vec(), rows, values.len() / rows).expect("[rows, d]");
    lopa::endpoint::wire::WireSoftPrompt::encode(&z, if f16 { lopa::endpoint::wire::Dtype::F16 } else { lopa::endpoint::wire::Dtype::F32 })
}
