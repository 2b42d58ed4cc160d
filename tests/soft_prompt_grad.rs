//! `POST /v1/soft_prompt_grad` on the embedded engine with the tiny llama: dLoss/dZ equals
//! central finite differences of the library's own loss, batching does not mix examples, bad
//! requests get their 4xx, and serving gradients leaves the server as it was (same weights, same answers, no memory kept per request).
#![cfg(feature = "server")]

mod common;
use burn::tensor::Device;
use common::fixture;
use lopa::endpoint::engine::Engine;
use lopa::wire::{Dtype, GradientResponse, WireSoftPrompt};
use lopa::endpoint::{Backend, ServeConfig};
use lopa::model::decoder::FoundationModel;
use lopa::model::generate::score_continuations;
use lopa::model::SoftPrompt;
use serde_json::{json, Value};
use std::net::SocketAddr;

fn model() -> FoundationModel {
    FoundationModel::load(fixture("tiny-llama.gguf"), &Device::flex()).unwrap()
}

/// The tiny llama's context is 256 positions; four examples of up to 256 fit a request.
fn start(fm: &FoundationModel, backend: Backend, max_request_tokens: usize) -> SocketAddr {
    let cfg = ServeConfig { max_soft_prompt_rows: 8, max_gradient_examples: 4, max_request_tokens, ..Default::default() };
    common::serve_in_thread(fm, backend, cfg)
}

fn embedded(fm: &FoundationModel, max_request_tokens: usize) -> SocketAddr {
    let cfg = ServeConfig::default();
    start(fm, Backend::Embedded(Engine::start(fm.clone(), Device::flex(), cfg.engine)), max_request_tokens)
}

fn post(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let (status, text) = common::http_post(addr, path, &serde_json::to_vec(body).unwrap());
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A deterministic soft prompt `[rows, 64]`.
fn z(seed: usize, rows: usize) -> SoftPrompt {
    SoftPrompt::new((0..rows * 64).map(|i| (((i * 7 + seed * 13) % 29) as f32 - 14.0) / 20.0).collect(), rows, 64).unwrap()
}

fn example(prompt: &str, target: &str, z: &SoftPrompt) -> Value {
    json!({"prompt": prompt, "target": target, "soft_prompt": WireSoftPrompt::encode(z, Dtype::F32)})
}

fn grads(addr: SocketAddr, examples: Vec<Value>) -> GradientResponse {
    let (status, body) = post(addr, "/v1/soft_prompt_grad", &json!({ "examples": examples }));
    assert_eq!(status, 200, "{body}");
    serde_json::from_value(body).unwrap()
}

/// The loss the endpoint differentiates, computed by the library without autodiff: the mean
/// negative log-likelihood of the target's tokens.
fn library_loss(fm: &FoundationModel, prompt: &str, target: &str, z: &SoftPrompt) -> f64 {
    let ids = fm.tokenizer.encode(prompt).unwrap();
    let t = fm.tokenizer.encode(target).unwrap();
    let lp = score_continuations(&fm.decoder, &ids, Some(z), std::slice::from_ref(&t), &Device::flex()).unwrap()[0];
    -(lp as f64) / t.len() as f64
}

#[test]
fn gradients_equal_finite_differences_and_batching_does_not_mix_examples() {
    let fm = model();
    let addr = embedded(&fm, 1024);
    let cases = [("hello world", " the", z(1, 4)), ("the cat", " sat on the mat", z(2, 3))];
    let batched = grads(addr, cases.iter().map(|(p, t, z)| example(p, t, z)).collect());
    assert_eq!((batched.object.as_str(), batched.gradients.len()), ("soft_prompt_grad", 2));
    for (i, (prompt, target, z)) in cases.iter().enumerate() {
        let alone = grads(addr, vec![example(prompt, target, z)]);
        assert_eq!(alone.gradients[0], batched.gradients[i], "example {i} batched with another differs from alone");
        let g = &alone.gradients[0];
        let loss = library_loss(&fm, prompt, target, z);
        assert!((g.loss as f64 - loss).abs() < 1e-4 * loss.abs().max(1.0), "loss {} vs library {loss}", g.loss);
        let grad = g.grad.decode(64, 8).unwrap();
        assert_eq!((grad.rows(), grad.width()), (z.rows(), 64));
        // Central differences on a spread of coordinates, in f64 around f32 losses.
        let eps = 1e-2f32;
        let mut worst = 0.0f64;
        for k in (0..z.values().len()).step_by(37) {
            let nudged = |delta: f32| {
                let mut v = z.values().to_vec();
                v[k] += delta;
                library_loss(&fm, prompt, target, &SoftPrompt::new(v, z.rows(), 64).unwrap())
            };
            let fd = (nudged(eps) - nudged(-eps)) / (2.0 * eps as f64);
            let analytic = grad.values()[k] as f64;
            let err = (fd - analytic).abs() / (1e-3 + analytic.abs());
            worst = worst.max(err);
            assert!((fd - analytic).abs() <= 2e-3 + 2e-2 * analytic.abs(), "dL/dZ[{k}]: analytic {analytic}, finite difference {fd}");
        }
        eprintln!("example {i}: loss {}, worst relative error against finite differences {worst:.2e}", g.loss);
    }
}

#[test]
fn bad_gradient_requests_get_their_4xx() {
    let fm = model();
    let addr = embedded(&fm, 512);
    let good = example("hello", " the", &z(1, 2));
    let wire = |shape: Vec<u64>, values: &[f32]| {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        json!({"shape": shape, "dtype": "f32", "data": lopa_b64(&bytes)})
    };
    let mut nan = vec![0.5f32; 2 * 64];
    nan[70] = f32::NAN;
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"examples": []}), 400, "examples"),
        (json!({"examples": vec![good.clone(); 5]}), 400, "examples"),
        (json!({"examples": [good.clone()], "extra": 1}), 400, "invalid_request"),
        (json!({"examples": [{"prompt": "a", "target": "", "soft_prompt": good["soft_prompt"]}]}), 400, "target"),
        (json!({"examples": [{"prompt": "a", "target": " b", "soft_prompt": wire(vec![2, 32], &[0.0; 64])}]}), 400, "soft_prompt_width"),
        (json!({"examples": [{"prompt": "a", "target": " b", "soft_prompt": wire(vec![9, 64], &[0.0; 9 * 64])}]}), 400, "soft_prompt_rows"),
        (json!({"examples": [{"prompt": "a", "target": " b", "soft_prompt": wire(vec![2, 64], &nan)}]}), 400, "soft_prompt_non_finite"),
        (json!({"examples": [{"prompt": "a ".repeat(300), "target": " b", "soft_prompt": good["soft_prompt"]}]}), 400, "context_length"),
        (json!({"examples": vec![json!({"prompt": "a ".repeat(70), "target": " b", "soft_prompt": good["soft_prompt"]}); 4]}), 400, "request_tokens"),
    ];
    for (body, status, code) in cases {
        let (got, answer) = post(addr, "/v1/soft_prompt_grad", &body);
        assert_eq!((got, answer["error"]["code"].as_str()), (status, Some(code)), "{answer}");
    }
}

fn lopa_b64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

#[test]
fn serving_gradients_keeps_nothing() {
    let fm = model();
    let weights = |fm: &FoundationModel| lopa::device::to_vec(fm.decoder.layers[0].self_attn.q_proj.weight.val()).unwrap();
    let before = (weights(&fm), lopa::device::to_vec(fm.decoder.embed_tokens.val()).unwrap());
    let addr = embedded(&fm, 1024);
    let completion = json!({"prompt": "hello world", "max_tokens": 8, "temperature": 0.0, "soft_prompt": WireSoftPrompt::encode(&z(3, 4), Dtype::F32)});
    let (_, first_answer) = post(addr, "/v1/completions", &completion);
    // Full requests (4 examples of ~240 positions), so a graph or activations kept per request would show.
    let big: Vec<Value> = (0..4).map(|i| example(&"the cat sat on the mat ".repeat(13), " hello", &z(i, 8))).collect();
    let first = grads(addr, big.clone());
    for _ in 0..3 {
        grads(addr, big.clone());
    }
    let warm = rss_bytes();
    for _ in 0..20 {
        assert_eq!(grads(addr, big.clone()), first, "the same request must get the same answer");
    }
    let grown = rss_bytes().saturating_sub(warm);
    eprintln!("resident memory grew {:.1} MB over 20 gradient requests", grown as f64 / 1e6);
    assert!(grown < 40_000_000, "resident memory grew {grown} bytes over 20 requests");
    // Weights the engine shares are untouched, and other clients' answers are what they were.
    assert!(before == (weights(&fm), lopa::device::to_vec(fm.decoder.embed_tokens.val()).unwrap()), "the frozen weights changed");
    assert_eq!(post(addr, "/v1/completions", &completion).1["choices"], first_answer["choices"]);
}

/// dLoss/dZ in one autodiff graph over the whole model: the reference for the blocked backward.
fn one_graph(fm: &FoundationModel, prompt: &[u32], target: &[u32], z: &SoftPrompt, ad: &Device) -> (f32, Vec<f32>) {
    use burn::tensor::{activation::log_softmax, Int, Tensor, TensorData};
    let zt = z.to_tensor(ad).unsqueeze_dim::<3>(0).require_grad();
    let logits = lopa::model::generate::teacher_forced_logits(&fm.decoder, Some(zt.clone()), &[(prompt, target)], ad).unwrap();
    let n = target.len();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(target.iter().map(|&t| t as i64).collect::<Vec<_>>(), [n, 1]), ad);
    let loss = log_softmax(logits, 1).gather(1, ids).neg().mean();
    let value: f32 = loss.clone().into_scalar();
    let grads = loss.backward();
    (value, lopa::device::to_vec(zt.grad(&grads).unwrap()).unwrap())
}

/// Examples longer than a block of queries: the layer-by-layer backward in blocks equals one
/// graph over the whole model, alone and chunked with a shorter example, and every layer of both
/// passes is one step.
#[test]
fn the_blocked_backward_over_long_examples_equals_one_graph() {
    use lopa::model::gradient::{soft_prompt_gradients, GradientCost, GradientRequest, QUERY_BLOCK};
    let ad = Device::flex().autodiff();
    let fm = FoundationModel::load(fixture("tiny-llama.gguf"), &ad).unwrap();
    let vocab = fm.decoder.vocab_size() as u32;
    let ids = |n: usize, seed: u32| (0..n as u32).map(|i| (i * 131 + seed * 17) % vocab).collect::<Vec<u32>>();
    let reqs = [
        GradientRequest { prompt_ids: ids(2 * QUERY_BLOCK + 77, 1), target_ids: ids(3, 2), soft_prompt: z(1, 3) },
        GradientRequest { prompt_ids: ids(QUERY_BLOCK / 2, 3), target_ids: ids(2, 4), soft_prompt: z(2, 3) },
    ];
    let cost = GradientCost::of(&fm.config);
    let mut steps = 0;
    let got = soft_prompt_gradients(&fm.decoder, &cost, &reqs, u64::MAX, &ad, &mut || {
        steps += 1;
        true
    })
    .unwrap();
    assert_eq!(steps, 2 * fm.config.num_hidden_layers, "one chunk: each layer once forward, once backward");
    for (r, g) in reqs.iter().zip(&got) {
        let (loss, dz) = one_graph(&fm, &r.prompt_ids, &r.target_ids, &r.soft_prompt, &ad);
        let scale = dz.iter().fold(0f32, |a, x| a.max(x.abs()));
        let rel = common::max_abs_diff(g.grad.values(), &dz) / scale;
        assert!((g.loss - loss).abs() <= 1e-4 * loss.abs() && rel <= 1e-4, "{} positions: loss {} vs {loss}, dZ rel diff {rel}", r.positions(), g.loss);
    }
    // A budget that holds one example at a time: two chunks (no padding), the same answers.
    let one = cost.bytes(1, reqs[0].positions(), 3);
    let again = soft_prompt_gradients(&fm.decoder, &cost, &reqs, one, &ad, &mut || true).unwrap();
    for (a, b) in got.iter().zip(&again) {
        let scale = a.grad.values().iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(common::max_abs_diff(a.grad.values(), b.grad.values()) <= 1e-4 * scale);
    }
    // Past the budget an example is refused before any work; a step that says stop cancels.
    let e = soft_prompt_gradients(&fm.decoder, &cost, &reqs, one - 1, &ad, &mut || panic!("no work may start")).unwrap_err().to_string();
    assert!(e.contains("example 0: its backward pass would hold") && e.contains("more than the limit"), "{e}");
    let mut left = 3;
    let e = soft_prompt_gradients(&fm.decoder, &cost, &reqs[..1], u64::MAX, &ad, &mut || {
        left -= 1;
        left > 0
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("cancelled") && left == 0, "{e}");
}
