//! `lopa serve --upstream vllm=URL` against a real vLLM serving the default model (exported by
//! `lopa export-hf`), beside the embedded engine on the same weights: the same requests must give
//! the same tokens and the same label probabilities. scripts/test.sh starts vLLM once and sets
//! LOPA_TEST_VLLM to its URL; without it these tests fail unless LOPA_SKIP_VLLM=1. With
//! LOPA_TEST_VLLM_MODEL set to another checkpoint (the one that vLLM serves, exported by `lopa
//! export-hf`), the same tests run on that model: `scripts/vllm.sh parity MODEL` does all of it.
//!
//! Tolerances: greedy tokens and text exactly equal; log-probabilities within 2e-3 and label
//! probabilities within 1e-3 (two fp32 implementations of the same model differ by ~1e-5 in the
//! logits; the margin covers sums over multi-token candidates).
#![cfg(feature = "server")]

mod common;
use burn::tensor::Device;
use lopa::model::decoder::{FoundationModel, TokenEmbedding};
use lopa::endpoint::engine::Engine;
use lopa::endpoint::{Backend, ModelInfo, ServeConfig, Vllm};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

fn vllm_url() -> Option<String> {
    if let Ok(u) = std::env::var("LOPA_TEST_VLLM") {
        return Some(u);
    }
    if std::env::var("LOPA_SKIP_VLLM").as_deref() == Ok("1") {
        eprintln!("LOPA_SKIP_VLLM=1: skipping a vLLM test");
        return None;
    }
    panic!("LOPA_TEST_VLLM is not set: scripts/test.sh starts vLLM and sets it (or set LOPA_SKIP_VLLM=1)");
}

/// The frozen model vLLM serves: LOPA_TEST_VLLM_MODEL, else the default.
fn model_path() -> Option<std::path::PathBuf> {
    match std::env::var_os("LOPA_TEST_VLLM_MODEL") {
        Some(m) => Some(std::path::PathBuf::from(m)),
        None => Some(common::real_weights()?.0),
    }
}

struct Servers {
    embedded: SocketAddr,
    gateway: SocketAddr,
    /// Std of the token-embedding table: the scale of realistic soft prompts.
    std: f32,
    width: usize,
    /// The embedded server's engine (its token counter).
    engine: Engine,
}

/// The tests take turns: they share one vLLM, whose metrics one of them reads.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// One embedded server and one gateway for every test in this file (one vLLM).
fn servers() -> Option<&'static Servers> {
    static S: OnceLock<Option<Servers>> = OnceLock::new();
    S.get_or_init(|| {
        let url = vllm_url()?;
        let model = model_path()?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let cfg = ServeConfig::default();
                let fm = FoundationModel::load(&model, &Device::flex()).unwrap();
                let std = fm.decoder.embedding_std().unwrap() as f32;
                let width = fm.decoder.hidden_size();
                let embedded = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let gateway = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let emb = TokenEmbedding::load(&model).unwrap();
                let vllm = Vllm::connect(&url, emb.clone()).await.unwrap();
                let info = vllm.model_info();
                let engine = Engine::start(fm.clone(), Device::flex(), cfg.engine.clone());
                tx.send(Servers { embedded: embedded.local_addr().unwrap(), gateway: gateway.local_addr().unwrap(), std, width, engine: engine.clone() }).unwrap();
                let a = lopa::endpoint::router_with(Backend::Embedded(engine), ModelInfo::of(&fm), cfg.clone());
                let b = lopa::endpoint::router_with(Backend::Vllm(Arc::new(vllm)), info, cfg.clone());
                let (c1, c2) = (cfg.clone(), cfg);
                tokio::join!(
                    async move { lopa::endpoint::serve(embedded, a, &c1, std::future::pending()).await.unwrap() },
                    async move { lopa::endpoint::serve(gateway, b, &c2, std::future::pending()).await.unwrap() },
                );
            });
        });
        Some(rx.recv_timeout(Duration::from_secs(300)).expect("servers started"))
    })
    .as_ref()
}

fn post(addr: SocketAddr, path: &str, v: &Value) -> (u16, String) {
    common::http_post(addr, path, &serde_json::to_vec(v).unwrap())
}

fn post_json(addr: SocketAddr, path: &str, v: &Value) -> Value {
    let (st, body) = post(addr, path, v);
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    assert_eq!(st, 200, "{path}: {v}");
    v
}

/// A soft prompt of `rows` rows at the scale of the model's token embeddings (seeded).
fn soft(seed: u64, rows: usize, s: &Servers) -> Vec<f32> {
    let mut rng = lopa::rng::Rng::new(seed);
    (0..rows * s.width)
        .map(|_| {
            // Box-Muller.
            let (u, v) = (rng.next_f32().max(1e-7), rng.next_f32());
            s.std * (-2.0 * u.ln()).sqrt() * (2.0 * std::f32::consts::PI * v).cos()
        })
        .collect()
}

fn ids(v: &Value) -> Vec<u64> {
    v["choices"][0]["logprobs"]["token_ids"].as_array().unwrap_or_else(|| panic!("{v}")).iter().map(|t| t.as_u64().unwrap()).collect()
}

#[test]
fn greedy_completions_match_the_embedded_engine() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(s) = servers() else { return };
    let prompts = ["The capital of France is", "Write a haiku about the sea:", "def add(a, b):"];
    let mut worst = 0f64;
    for (i, rows) in [1usize, 10, 40].into_iter().enumerate() {
        let z = soft(i as u64, rows, s);
        for f16 in [false, true] {
            let req = json!({"prompt": prompts[i], "max_tokens": 12, "temperature": 0, "logprobs": 1, "soft_prompt": common::wire(&z, rows, f16)});
            let (a, b) = (post_json(s.embedded, "/v1/completions", &req), post_json(s.gateway, "/v1/completions", &req));
            assert_eq!(ids(&a), ids(&b), "m = {rows}, f16 = {f16}: {a} / {b}");
            assert_eq!(a["choices"][0]["text"], b["choices"][0]["text"]);
            assert_eq!(a["choices"][0]["finish_reason"], b["choices"][0]["finish_reason"]);
            let (la, lb) = (&a["choices"][0]["logprobs"]["token_logprobs"], &b["choices"][0]["logprobs"]["token_logprobs"]);
            for (x, y) in la.as_array().unwrap().iter().zip(lb.as_array().unwrap()) {
                let d = (x.as_f64().unwrap() - y.as_f64().unwrap()).abs();
                worst = worst.max(d);
                assert!(d < 2e-3, "{la} / {lb}");
            }
        }
    }
    eprintln!("completions: largest token log-probability difference {worst:.2e}");
}

/// The same request with a stop string through both engines: the same text, the same
/// `completion_tokens` (up to the token that completes the stop string), and the embedded
/// engine's token counter shows that it generated nothing past the stop.
#[test]
fn a_stop_string_ends_generation_alike_in_both_engines() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(s) = servers() else { return };
    let z = soft(11, 10, s);
    for (prompt, stop, with_soft) in [("Count: one, two, three,", " six", false), ("Count: one, two, three,", ",", false), ("def add(a, b):", "\n", true)] {
        let mut req = json!({"prompt": prompt, "max_tokens": 32, "temperature": 0, "logprobs": 1, "stop": [stop]});
        if with_soft {
            req["soft_prompt"] = serde_json::to_value(common::wire(&z, 10, false)).unwrap();
        }
        let before = s.engine.generated_tokens();
        let (a, b) = (post_json(s.embedded, "/v1/completions", &req), post_json(s.gateway, "/v1/completions", &req));
        let generated = s.engine.generated_tokens() - before;
        assert_eq!(a["choices"][0]["text"], b["choices"][0]["text"], "{stop:?}: {a} / {b}");
        assert_eq!(a["choices"][0]["finish_reason"], "stop", "{stop:?}: {a}");
        assert_eq!(b["choices"][0]["finish_reason"], "stop", "{stop:?}: {b}");
        let n = a["usage"]["completion_tokens"].as_u64().unwrap();
        assert_eq!(Some(n), b["usage"]["completion_tokens"].as_u64(), "{stop:?}: {a} / {b}");
        assert_eq!(ids(&a), ids(&b), "{stop:?}");
        assert!(n < 32, "{stop:?}: the stop string must come before max_tokens: {a}");
        assert_eq!(generated, n, "{stop:?}: the engine generated {generated} tokens for an answer of {n}");
        eprintln!("stop {stop:?}: {n} tokens in both, text {:?}", a["choices"][0]["text"]);
    }
}

#[test]
fn streamed_text_through_vllm_equals_the_embedded_completion() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(s) = servers() else { return };
    let z = soft(7, 10, s);
    let req = json!({"prompt": "Once upon a time", "max_tokens": 12, "temperature": 0, "soft_prompt": common::wire(&z, 10, false)});
    let want = post_json(s.embedded, "/v1/completions", &req);
    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    let (st, raw) = post(s.gateway, "/v1/completions", &sreq);
    assert_eq!(st, 200, "{raw}");
    let events: Vec<&str> = raw.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{raw}");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let text: String = chunks.iter().map(|c| c["choices"][0]["text"].as_str().unwrap_or_else(|| panic!("{c}")).to_string()).collect();
    assert_eq!(text, want["choices"][0]["text"].as_str().unwrap());
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], want["choices"][0]["finish_reason"]);
}

#[test]
fn label_words_score_alike_through_vllm() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(s) = servers() else { return };
    // SST-2's template and label words (one token each), and multi-token candidates.
    let cases = [
        ("a gripping , funny and deeply moving film . It was", vec![" terrible", " great"]),
        ("the plot is thin and the acting is worse . It was", vec![" terrible", " great"]),
        ("The weather today is", vec![" very good", " not good at all", " sunny", " very bad"]),
    ];
    let (mut worst_lp, mut worst_p) = (0f64, 0f64);
    for (k, (prompt, cands)) in cases.iter().enumerate() {
        for rows in [0usize, 10] {
            let mut req = json!({"prompt": prompt, "candidates": cands});
            if rows > 0 {
                req["soft_prompt"] = serde_json::to_value(common::wire(&soft(100 + k as u64, rows, s), rows, true)).unwrap();
            }
            let (a, b) = (post_json(s.embedded, "/v1/score", &req), post_json(s.gateway, "/v1/score", &req));
            let (sa, sb) = (a["scores"].as_array().unwrap(), b["scores"].as_array().unwrap());
            let best = |v: &[Value]| v.iter().enumerate().max_by(|x, y| x.1["probability"].as_f64().partial_cmp(&y.1["probability"].as_f64()).unwrap()).unwrap().0;
            assert_eq!(best(sa), best(sb), "{a} / {b}");
            for (x, y) in sa.iter().zip(sb) {
                let dl = (x["logprob"].as_f64().unwrap() - y["logprob"].as_f64().unwrap()).abs();
                let dp = (x["probability"].as_f64().unwrap() - y["probability"].as_f64().unwrap()).abs();
                (worst_lp, worst_p) = (worst_lp.max(dl), worst_p.max(dp));
                assert!(dl < 2e-3 && dp < 1e-3, "{a} / {b}");
            }
        }
    }
    eprintln!("scores: largest log-probability difference {worst_lp:.2e}, probability {worst_p:.2e}");
}

#[test]
fn the_gateway_checks_the_model_and_refuses_hostile_tensors_itself() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(s) = servers() else { return };
    let (st, body) = post(s.gateway, "/v1/completions", &json!({"prompt": "x", "max_tokens": 1, "soft_prompt": common::wire(&vec![f32::NAN; s.width], 1, false)}));
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("soft_prompt_non_finite"), "{body}");
    // A memo-doubling pickle sent as prompt_embeds never reaches vLLM.
    let mut pkl = b"\x80\x02)q\x00".to_vec();
    for _ in 0..40 {
        pkl.extend_from_slice(b"h\x00h\x00\x86q\x00");
    }
    pkl.push(b'.');
    let zip = lopa::model::weights::torch::write_zip(&[("archive/data.pkl", &pkl)]);
    use base64::Engine as _;
    let (st, body) = post(s.gateway, "/v1/completions", &json!({"max_tokens": 1, "prompt_embeds": base64::engine::general_purpose::STANDARD.encode(zip)}));
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("prompt_embeds_format"), "{body}");
    // vLLM's own answer to a client's valid prompt_embeds matches the same soft prompt's.
    let z = soft(3, 5, s);
    let pe = base64::engine::general_purpose::STANDARD.encode(lopa::model::weights::torch::save_tensor(&[5, s.width], &z));
    let a = post_json(s.gateway, "/v1/completions", &json!({"prompt_embeds": pe, "max_tokens": 6, "temperature": 0, "logprobs": 1}));
    let b = post_json(s.embedded, "/v1/completions", &json!({"soft_prompt": common::wire(&z, 5, false), "max_tokens": 6, "temperature": 0, "logprobs": 1}));
    assert_eq!(ids(&a), ids(&b));
    // A gateway whose model is not the one vLLM serves refuses to start, saying what differs.
    let url = std::env::var("LOPA_TEST_VLLM").unwrap();
    let tiny = TokenEmbedding::load(common::fixture("tiny-llama.gguf")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let e = rt.block_on(Vllm::connect(&url, tiny)).err().expect("a width-64 model must be refused").to_string();
    assert!(e.contains("width 64"), "{e}");
    let real = TokenEmbedding::load(model_path().unwrap()).unwrap();
    // A smaller vocabulary than vLLM's.
    let mut fewer = real.clone();
    fewer.config.vocab_size -= 100;
    fewer.table.truncate(fewer.config.vocab_size * fewer.config.hidden_size);
    let e = rt.block_on(Vllm::connect(&url, fewer)).err().expect("another vocabulary must be refused").to_string();
    assert!(e.contains("vocabulary is larger"), "{e}");
    // The same shapes, other embeddings.
    let mut other = real;
    other.table.iter_mut().for_each(|x| *x *= 1.05);
    let e = rt.block_on(Vllm::connect(&url, other)).err().expect("other embeddings must be refused").to_string();
    assert!(e.contains("other token embeddings"), "{e}");
}

/// One of vLLM's Prometheus counters or gauges, summed over its label sets.
fn vllm_metric(name: &str) -> f64 {
    let url = std::env::var("LOPA_TEST_VLLM").unwrap();
    let addr = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines().filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' '])).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

#[test]
fn a_client_that_goes_away_stops_the_generation_in_vllm() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(s) = servers() else { return };
    let before = vllm_metric("vllm:generation_tokens_total");
    let body = serde_json::to_vec(&json!({"prompt": "Once upon a time", "max_tokens": 500, "temperature": 0, "stream": true})).unwrap();
    let mut c = TcpStream::connect(s.gateway).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let head = format!("POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len());
    c.write_all(head.as_bytes()).unwrap();
    c.write_all(&body).unwrap();
    let (mut seen, mut buf) = (String::new(), [0u8; 4096]);
    while seen.matches("data: ").count() < 3 {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        assert!(seen.len() < 12 || seen.starts_with("HTTP/1.1 200"), "{seen}");
    }
    drop(c);
    // vLLM sees its own client (the gateway) go away and aborts the request.
    let t = std::time::Instant::now();
    while vllm_metric("vllm:num_requests_running") > 0.0 {
        assert!(t.elapsed() < Duration::from_secs(20), "vLLM still runs the abandoned request");
        std::thread::sleep(Duration::from_millis(100));
    }
    let generated = vllm_metric("vllm:generation_tokens_total") - before;
    eprintln!("the abandoned stream generated {generated} of 500 tokens");
    assert!(generated < 250.0, "{generated} tokens: the generation ran on");
}

/// vLLM has no backward pass: the gateway answers gradient requests with a clear 501, and the
/// embedded engine on the same weights answers them.
#[test]
fn soft_prompt_gradients_are_refused_by_the_gateway_with_501() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(s) = servers() else { return };
    let z = lopa::model::SoftPrompt::new(soft(9, 2, s), 2, s.width).unwrap();
    let body = json!({"examples": [{"prompt": "A fine film. It was", "target": " great", "soft_prompt": lopa::wire::WireSoftPrompt::encode(&z, lopa::wire::Dtype::F32)}]});
    let (status, answer) = post(s.gateway, "/v1/soft_prompt_grad", &body);
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!((status, answer["error"]["code"].as_str()), (501, Some("gradients_unavailable")), "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("vLLM has no backward pass"), "{answer}");
    let embedded = post_json(s.embedded, "/v1/soft_prompt_grad", &body);
    assert!(embedded["gradients"][0]["loss"].as_f64().unwrap() > 0.0, "{embedded}");
}
