//! `/v1/soft_prompt_grad` within its memory budget, on the real SmolLM2-135M: an example at the
//! edge of the budget is computed, one token more is refused with 400 naming the limit, the
//! resident memory the largest accepted request adds stays within the budget (measured from the
//! peak, reset before the request), and a gradient whose caller timed out stops at the next
//! layer. One test in its own binary: nothing else runs in the process while it measures.
#![cfg(feature = "server")]

mod common;
use burn::tensor::Device;
use lopa::endpoint::engine::Engine;
use lopa::endpoint::{Backend, ServeConfig};
use lopa::model::decoder::FoundationModel;
use lopa::model::gradient::GradientCost;
use lopa::model::SoftPrompt;
use lopa::wire::{Dtype, WireSoftPrompt};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn status_kb(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status.lines().find(|l| l.starts_with(key)).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// One example: `words` copies of " the" (one token each in SmolLM2) and the target " end".
fn example(words: usize, z: &SoftPrompt) -> Value {
    json!({"prompt": " the".repeat(words), "target": " end", "soft_prompt": WireSoftPrompt::encode(z, Dtype::F32)})
}

#[test]
fn gradients_stay_within_their_memory_budget_and_stop_when_the_caller_goes() {
    let Some((path, _)) = common::real_weights() else { return };
    let fm = FoundationModel::load(&path, &Device::flex()).unwrap();
    let (d, m) = (fm.decoder.hidden_size(), 10);
    assert_eq!(fm.tokenizer.encode(&" the".repeat(7)).unwrap().len(), 7, "\" the\" must be one token");
    let z = SoftPrompt::new((0..m * d).map(|i| ((i % 17) as f32 - 8.0) / 200.0).collect(), m, d).unwrap();
    // The budget: exactly what an example of 700 positions holds.
    let words = 700 - m - 1;
    let cost = GradientCost::of(&fm.config);
    let budget = cost.bytes(1, 700, 1);
    let mut cfg = ServeConfig { max_request_tokens: 4096, request_timeout: Duration::from_secs(600), ..ServeConfig::default() };
    cfg.engine.max_gradient_bytes = budget;
    let engine = Engine::start(fm.clone(), Device::flex(), cfg.engine.clone());
    let addr = common::serve_in_thread(&fm, Backend::Embedded(engine.clone()), cfg.clone());
    let post = |examples: Vec<Value>| {
        let (st, body) = common::http_post(addr, "/v1/soft_prompt_grad", &serde_json::to_vec(&json!({"examples": examples})).unwrap());
        (st, serde_json::from_str::<Value>(&body).unwrap_or(Value::Null))
    };
    // Warm up (kernels, allocator pools), then measure the peak from here.
    assert_eq!(post(vec![example(20, &z)]).0, 200);
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak resident size");
    let before = status_kb("VmRSS:") * 1024;
    let t = Instant::now();
    let (st, v) = post(vec![example(words, &z)]);
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(st, 200, "the example at the edge of the budget: {v}");
    let grad = &v["gradients"][0];
    assert!(grad["loss"].as_f64().is_some_and(f64::is_finite), "{v}");
    let added = (status_kb("VmHWM:") * 1024).saturating_sub(before);
    eprintln!("measured: 700 positions, {secs:.1} s, peak resident memory +{} MiB, budget {} MiB ({:.2} of it)", added >> 20, budget >> 20, added as f64 / budget as f64);
    assert!(added <= budget, "the request added {} MiB at its peak, more than its budget of {} MiB", added >> 20, budget >> 20);
    // One word more is past the budget: refused before any work, naming the limit.
    let layers = engine.gradient_layers();
    let (st, v) = post(vec![example(words + 1, &z)]);
    assert_eq!((st, v["error"]["code"].as_str()), (400, Some("gradient_memory")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("--max-gradient-mb"), "{v}");
    assert_eq!(engine.gradient_layers(), layers, "a refused request computed something");
    // A caller that times out: the computation stops at the next layer, far short of the 60
    // layer passes (30 forward, 30 backward) of the whole request.
    let mut quick = cfg.clone();
    quick.request_timeout = Duration::from_millis(300);
    let addr = common::serve_in_thread(&fm, Backend::Embedded(engine.clone()), quick);
    let start = engine.gradient_layers();
    let (st, body) = common::http_post(addr, "/v1/soft_prompt_grad", &serde_json::to_vec(&json!({"examples": [example(words, &z)]})).unwrap());
    assert_eq!(st, 504, "{body}");
    let mut last = engine.gradient_layers();
    let settled = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let now = engine.gradient_layers();
        if now == last || settled.elapsed() > Duration::from_secs(120) {
            break;
        }
        last = now;
    }
    let done = engine.gradient_layers() - start;
    eprintln!("measured: a timed-out gradient computed {done} of 60 layer passes");
    assert!(done < 60, "the timed-out gradient ran {done} layer passes: it was not cancelled");
}
