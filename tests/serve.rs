//! `lopa serve` end to end on loopback with the tiny llama: completions equal the library's
//! direct generation (alone and batched with other clients' soft prompts), f32 and f16 soft
//! prompts give the same tokens, scores rank like the library, streams equal plain answers, and
//! stop strings end generation in the engine. The refusals are in tests/serve_guard.rs.
#![cfg(feature = "server")]

mod common;
use burn::tensor::Device;
use common::fixture;
use common::serve::*;
use lopa::endpoint::engine::Engine;
use lopa::endpoint::{Backend, ServeConfig};
use lopa::model::decoder::FoundationModel;
use lopa::model::generate::{generate, GenerationRequest};
use lopa::model::sampling::SamplingParams;
use lopa::model::SoftPrompt;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn direct(prompt: &str, z: &[f32], rows: usize, max_tokens: usize) -> Vec<u32> {
    let d = Device::flex();
    let fm = FoundationModel::load(fixture("tiny-llama.gguf"), &d).unwrap();
    let req = GenerationRequest { prompt_ids: fm.tokenizer.encode(prompt).unwrap(), soft_prompt: Some(SoftPrompt::new(z.to_vec(), rows, 64).unwrap()) };
    let p = SamplingParams { max_tokens, stop_token_ids: fm.tokenizer.eos_token_ids.clone(), ..Default::default() };
    generate(&fm.decoder, &[req], &p, &d).unwrap().remove(0).tokens
}

#[test]
fn completions_match_the_library_in_f32_and_f16() {
    let addr = start(16);
    let (st, h) = http(addr, "GET", "/health", b"");
    assert_eq!((st, h["status"].as_str()), (200, Some("ok")));
    let (_, m) = http(addr, "GET", "/v1/models", b"");
    assert_eq!(m["data"][0]["hidden_size"], 64);
    let z = soft(1, 3);
    let want = direct("the theme", &z, 3, 6);
    let mut ids = std::collections::BTreeSet::new();
    for f16 in [false, true, false] {
        let w = common::wire(&z, 3, f16);
        let (st, v) = post(addr, &json!({"prompt": "the theme", "max_tokens": 6, "temperature": 0, "logprobs": 1, "soft_prompt": w}));
        assert_eq!(st, 200, "{v}");
        assert_eq!(tokens(&v), want, "f16 = {f16}");
        // Same request, same second, same length: still its own id.
        assert!(ids.insert(v["id"].as_str().unwrap().to_string()), "repeated completion id {}", v["id"]);
    }
}

#[test]
fn concurrent_clients_are_batched_and_each_gets_its_own_answer() {
    let addr = start(8);
    let handles: Vec<_> = (0..6)
        .map(|i| {
            std::thread::spawn(move || {
                let z = soft(i, 2);
                let prompt = ["the", "a theme", "the 42", "x", "he", "tests"][i];
                let (st, v) = post(addr, &json!({"prompt": prompt, "max_tokens": 5, "temperature": 0, "logprobs": 1, "soft_prompt": common::wire(&z, 2, false)}));
                assert_eq!(st, 200, "{v}");
                (tokens(&v), direct(prompt, &z, 2, 5))
            })
        })
        .collect();
    for h in handles {
        let (got, want) = h.join().unwrap();
        assert_eq!(got, want);
    }
}

#[test]
fn score_endpoint_ranks_label_words_like_the_library() {
    let addr = start(4);
    let z = soft(3, 2);
    let w = common::wire(&z, 2, true);
    let (st, v) = http(addr, "POST", "/v1/score", &serde_json::to_vec(&json!({"prompt": "the theme", "candidates": [" the", " of"], "soft_prompt": w})).unwrap());
    assert_eq!(st, 200, "{v}");
    let d = Device::flex();
    let fm = FoundationModel::load(fixture("tiny-llama.gguf"), &d).unwrap();
    let cands: Vec<Vec<u32>> = [" the", " of"].iter().map(|c| fm.tokenizer.encode(c).unwrap()).collect();
    let want = lopa::model::generate::score_continuations(&fm.decoder, &fm.tokenizer.encode("the theme").unwrap(), Some(&SoftPrompt::new(z.clone(), 2, 64).unwrap()), &cands, &d).unwrap();
    for (i, s) in v["scores"].as_array().unwrap().iter().enumerate() {
        assert!((s["logprob"].as_f64().unwrap() as f32 - want[i]).abs() < 1e-4);
    }
    let p: f64 = v["scores"].as_array().unwrap().iter().map(|s| s["probability"].as_f64().unwrap()).sum();
    assert!((p - 1.0).abs() < 1e-5);
    let (st, v) = http(addr, "POST", "/v1/score", br#"{"prompt": "x", "candidates": []}"#);
    assert_eq!((st, v["error"]["code"].as_str()), (400, Some("candidates")));
}

#[test]
fn streamed_text_equals_the_plain_completion() {
    let addr = start(4);
    let z = soft(5, 2);
    let req = json!({"prompt": "the theme", "max_tokens": 6, "temperature": 0, "soft_prompt": common::wire(&z, 2, false)});
    let (_, plain) = post(addr, &req);
    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = serde_json::to_vec(&sreq).unwrap();
    let head = format!("POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body).unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    assert!(raw.contains("text/event-stream"), "{raw}");
    let events: Vec<&str> = raw.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    assert_eq!(events.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let text: String = chunks.iter().map(|c| c["choices"][0]["text"].as_str().unwrap().to_string()).collect();
    assert_eq!(text, plain["choices"][0]["text"].as_str().unwrap());
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], plain["choices"][0]["finish_reason"]);
}

#[test]
fn vllm_prompt_embeds_give_the_same_tokens_as_soft_prompt() {
    let addr = start(4);
    let pe = common::json("prompt_embeds.json");
    let z = common::floats(&pe["values"]);
    assert_eq!(z, soft(1, 3), "fixture and test soft prompt agree");
    let (st, want) = post(addr, &json!({"prompt": "", "max_tokens": 5, "temperature": 0, "logprobs": 1, "soft_prompt": common::wire(&z, 3, false)}));
    assert_eq!(st, 200, "{want}");
    assert_eq!(tokens(&want), direct("", &z, 3, 5));
    for dtype in ["f32", "f16"] {
        let (st, v) = post(addr, &json!({"max_tokens": 5, "temperature": 0, "logprobs": 1, "prompt_embeds": pe[dtype]}));
        assert_eq!(st, 200, "{v}");
        assert_eq!(tokens(&v), tokens(&want), "prompt_embeds {dtype}");
    }
    // Corrupted archives are 400s that name the problem, and never take the server down.
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD.decode(pe["f32"].as_str().unwrap()).unwrap();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    for cut in [0, 10, raw.len() / 2, raw.len() - 23] {
        let (st, v) = post(addr, &json!({"max_tokens": 1, "prompt_embeds": b64(&raw[..cut])}));
        assert_eq!((st, v["error"]["code"].as_str()), (400, Some("prompt_embeds_format")), "cut {cut}: {v}");
    }
    let evil = raw.windows(12).position(|w| w == b"_rebuild_ten").unwrap();
    let mut patched = raw.clone();
    patched[evil..evil + 12].copy_from_slice(b"system\nxxxxx");
    let (st, v) = post(addr, &json!({"max_tokens": 1, "prompt_embeds": b64(&patched)}));
    assert_eq!(st, 400, "{v}");
    let (st, v) = post(addr, &json!({"max_tokens": 1, "prompt_embeds": pe["f32"], "soft_prompt": common::wire(&z, 3, false)}));
    assert_eq!((st, v["error"]["code"].as_str()), (400, Some("invalid_request")));
    let (st, _) = post(addr, &json!({"prompt": "the", "max_tokens": 1}));
    assert_eq!(st, 200);
}

#[test]
fn health_reports_a_stopped_engine_and_cors_star_allows_any_origin() {
    let fm = FoundationModel::load(fixture("tiny-llama.gguf"), &Device::flex()).unwrap();
    let mut cfg = test_config();
    cfg.cors_origins = vec!["*".into()];
    cfg.validate().unwrap();
    let engine = Engine::start(fm.clone(), Device::flex(), cfg.engine.clone());
    let addr = start_backend(&fm, Backend::Embedded(engine.clone()), cfg);
    let (st, h) = http(addr, "GET", "/health", b"");
    assert_eq!((st, h["status"].as_str()), (200, Some("ok")));
    let req = "OPTIONS /v1/completions HTTP/1.1\r\nHost: localhost\r\nOrigin: http://any.example\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\nConnection: close\r\n\r\n";
    let (_, text) = raw(addr, req.as_bytes(), Duration::from_secs(30));
    assert!(text.to_ascii_lowercase().contains("access-control-allow-origin: *"), "{text}");
    engine.shutdown();
    let t = std::time::Instant::now();
    while engine.is_alive() {
        assert!(t.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(20));
    }
    let (st, h) = http(addr, "GET", "/health", b"");
    assert_eq!((st, h["error"]["code"].as_str()), (503, Some("engine_stopped")), "{h}");
    let (st, v) = post(addr, &json!({"prompt": "the", "max_tokens": 1}));
    assert_eq!((st, v["error"]["code"].as_str()), (503, Some("engine_stopped")), "{v}");
    // Settings that would fail later are refused up front.
    for bad in [vec!["*", "http://a.example"], vec!["not an origin"]] {
        let cfg = ServeConfig { cors_origins: bad.iter().map(|s| s.to_string()).collect(), ..ServeConfig::default() };
        assert!(cfg.validate().is_err(), "{bad:?}");
    }
}

/// A stop string ends generation in the engine: the answer's tokens run up to the one that
/// completes the stop string (as vLLM counts them), the engine generates no token past it, and
/// the text, `usage` and `logprobs` agree.
#[test]
fn a_stop_string_ends_generation_in_the_engine() {
    let fm = FoundationModel::load(fixture("tiny-llama.gguf"), &Device::flex()).unwrap();
    let cfg = test_config();
    let engine = Engine::start(fm.clone(), Device::flex(), cfg.engine.clone());
    let addr = start_backend(&fm, Backend::Embedded(engine.clone()), cfg);
    let z = soft(3, 2);
    let base = json!({"prompt": "the theme", "max_tokens": 24, "temperature": 0, "logprobs": 1, "soft_prompt": common::wire(&z, 2, false)});
    let (st, full) = post(addr, &base);
    assert_eq!(st, 200, "{full}");
    let all = tokens(&full);
    assert_eq!(all.len(), 24, "the reference runs to max_tokens: {full}");
    // The stop string: the text of tokens 4..6, so that it ends well before max_tokens.
    let piece = fm.tokenizer.decode(&all[4..6]).unwrap();
    let stop = piece.trim().chars().take(6).collect::<String>();
    assert!(!stop.is_empty(), "{piece:?}");
    let text = full["choices"][0]["text"].as_str().unwrap();
    let cut = text.find(&stop).unwrap();
    // The first k whose text holds the stop string: the tokens a stopping engine generates.
    let k = (1..=all.len()).find(|&k| fm.tokenizer.decode(&all[..k]).unwrap().contains(&stop)).unwrap();
    assert!(k < 24);
    let before = engine.generated_tokens();
    let mut req = base.clone();
    req["stop"] = json!([stop]);
    let (st, v) = post(addr, &req);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["choices"][0]["text"].as_str().unwrap(), &text[..cut]);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["completion_tokens"].as_u64(), Some(k as u64), "{v}");
    assert_eq!(tokens(&v), all[..k]);
    assert_eq!(v["choices"][0]["logprobs"]["token_logprobs"].as_array().unwrap().len(), k);
    assert_eq!(engine.generated_tokens() - before, k as u64, "the engine generated past the stop string");
    // Streamed, the engine stops at the same token and the text ends at the same place.
    let before = engine.generated_tokens();
    req["stream"] = json!(true);
    req.as_object_mut().unwrap().remove("logprobs");
    let (st, raw) = common::http_post(addr, "/v1/completions", &serde_json::to_vec(&req).unwrap());
    assert_eq!(st, 200, "{raw}");
    let text_streamed: String = raw.lines().filter_map(|l| l.strip_prefix("data: ")).filter(|e| *e != "[DONE]").map(|e| serde_json::from_str::<Value>(e).unwrap()["choices"][0]["text"].as_str().unwrap().to_string()).collect();
    assert_eq!(text_streamed, &text[..cut]);
    let t = std::time::Instant::now();
    while engine.generated_tokens() - before < k as u64 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(engine.generated_tokens() - before, k as u64);
}
