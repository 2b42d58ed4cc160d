//! Shared helpers for the integration tests.
#![allow(dead_code)]

#[cfg(feature = "server")]
pub mod serve;
#[cfg(feature = "train")]
pub mod training;
#[cfg(feature = "server")]
pub mod stub_vllm;

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
pub fn wire(values: &[f32], rows: usize, f16: bool) -> lopa::wire::WireSoftPrompt {
    let z = lopa::model::SoftPrompt::new(values.to_vec(), rows, values.len() / rows).expect("[rows, d]");
    lopa::wire::WireSoftPrompt::encode(&z, if f16 { lopa::wire::Dtype::F16 } else { lopa::wire::Dtype::F32 })
}

/// The tiny random BERT (mean pooling, normalised).
pub fn tiny_encoder(device: &burn::tensor::Device) -> lopa::model::encoder::SentenceEncoder {
    let dir = fixture("tiny-bert");
    let r = |n: &str| std::fs::read(dir.join(n)).unwrap();
    lopa::model::encoder::SentenceEncoder::from_bytes(&r("config.json"), &r("model.safetensors"), &r("tokenizer.json"), lopa::model::encoder::Pooling::Mean, true, device).unwrap()
}

/// A toy task the tiny models can learn: animal words → " t", greetings → " the".
pub fn toy_task() -> lopa::task::TaskSpec {
    lopa::task::TaskSpec {
        name: "toy".into(),
        template: "{sentence}:".into(),
        encoder_template: "{sentence}".into(),
        label_column: "label".into(),
        label_words: [("0".to_string(), " t".to_string()), ("1".to_string(), " the".to_string())].into(),
        metric: lopa::task::Metric::Accuracy,
        positive_label: None,
        kind: Default::default(),
        answer_template: None,
        check: None,
        train_rows: None,
        dev_rows: None,
    }
}

/// `lopa serve`'s router over `backend` on a loopback port, in a thread of its own.
#[cfg(feature = "server")]
pub fn serve_in_thread(fm: &lopa::model::decoder::FoundationModel, backend: lopa::endpoint::Backend, cfg: lopa::endpoint::ServeConfig) -> std::net::SocketAddr {
    serve_info_in_thread(lopa::endpoint::ModelInfo::of(fm), backend, cfg)
}

/// [`serve_in_thread`] for a backend whose model the process does not hold (a gateway).
#[cfg(feature = "server")]
pub fn serve_info_in_thread(info: lopa::endpoint::ModelInfo, backend: lopa::endpoint::Backend, cfg: lopa::endpoint::ServeConfig) -> std::net::SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let app = lopa::endpoint::router_with(backend, info, cfg.clone());
            lopa::endpoint::serve(listener, app, &cfg, std::future::pending()).await.unwrap();
        });
    });
    rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap()
}

/// POST a JSON body over plain HTTP/1.1 to a server on loopback: (status, body text).
pub fn http_post(addr: std::net::SocketAddr, path: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(300))).unwrap();
    let head = format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split_whitespace().nth(1).and_then(|x| x.parse().ok()).unwrap_or(0);
    (status, text.split_once("\r\n\r\n").map(|x| x.1.to_string()).unwrap_or_default())
}

/// Greedy tokens (to `max_tokens` or a stop token) and their log-probabilities computed the slow way: every step runs the whole
/// sequence (soft prompt, prompt, tokens so far) through the model, with no KV cache. The
/// reference the cached generation is checked against.
#[allow(dead_code)]
pub fn greedy_without_cache(decoder: &lopa::model::decoder::Decoder, req: &lopa::model::generate::GenerationRequest, params: &lopa::model::sampling::SamplingParams, device: &burn::tensor::Device) -> (Vec<u32>, Vec<f32>) {
    use burn::tensor::{Int, Tensor, TensorData};
    let (mut ids, mut out, mut lps) = (req.prompt_ids.clone(), vec![], vec![]);
    let z = req.soft_prompt.as_ref().map(|z| z.to_tensor(device).unsqueeze_dim::<3>(0));
    for _ in 0..params.max_tokens {
        let n = ids.len();
        let t = Tensor::<2, Int>::from_data(TensorData::new(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), [1, n]), device);
        let logits = lopa::device::to_vec(decoder.forward(t, z.clone()).unwrap()).unwrap();
        let vocab = decoder.vocab_size();
        let last = &logits[logits.len() - vocab..];
        let (tok, _) = last.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
        let max = last.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let lse = max + last.iter().map(|v| (v - max).exp()).sum::<f32>().ln();
        if params.stop_token_ids.contains(&(tok as u32)) {
            break;
        }
        out.push(tok as u32);
        lps.push(last[tok] - lse);
        ids.push(tok as u32);
    }
    (out, lps)
}
