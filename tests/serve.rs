//! `lopa serve` end to end on loopback with the tiny llama: completions equal the library's
//! direct generation (alone and batched with other clients' soft prompts), f32 and f16 soft
//! prompts give the same tokens, and every bad-input rule answers its 4xx.
#![cfg(feature = "server")]

mod common;
use burn::tensor::Device;
use common::fixture;
use lopa::decoder::FoundationModel;
use lopa::generate::{generate, GenerationRequest, SamplingParams};
use lopa::server::wire::WireSoftPrompt;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

fn start(max_batch: usize) -> SocketAddr {
    start_with(max_batch, 64, vec![])
}

fn start_with(max_batch: usize, queue: usize, cors: Vec<String>) -> SocketAddr {
    let fm = FoundationModel::load(fixture("tiny-llama.gguf"), &Device::flex()).unwrap();
    let mut cfg = lopa::server::ServeConfig::default();
    cfg.engine.max_batch = max_batch;
    cfg.engine.queue = queue;
    cfg.cors_origins = cors;
    cfg.engine.batch_window = Duration::from_millis(50);
    cfg.max_body_bytes = 64 * 1024;
    cfg.max_soft_prompt_rows = 8;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let app = lopa::server::router(fm, Device::flex(), cfg);
            lopa::server::serve(listener, app, std::future::pending()).await.unwrap();
        });
    });
    rx.recv_timeout(Duration::from_secs(30)).unwrap()
}

/// Minimal HTTP/1.1 client: (status, JSON body).
fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status: u16 = text.split_whitespace().nth(1).unwrap_or("0").parse().unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn post(addr: SocketAddr, v: &Value) -> (u16, Value) {
    http(addr, "POST", "/v1/completions", &serde_json::to_vec(v).unwrap())
}

/// A soft prompt exactly representable in f16 (multiples of 1/64 in [-1, 1]).
fn soft(seed: usize, rows: usize) -> Vec<f32> {
    (0..rows * 64).map(|i| (((i * 37 + seed * 11) % 129) as f32 - 64.0) / 64.0).collect()
}

fn direct(prompt: &str, z: &[f32], rows: usize, max_tokens: usize) -> Vec<u32> {
    let d = Device::flex();
    let fm = FoundationModel::load(fixture("tiny-llama.gguf"), &d).unwrap();
    let req = GenerationRequest { prompt_ids: fm.tokenizer.encode(prompt).unwrap(), soft_prompt: Some((z.to_vec(), rows)) };
    let p = SamplingParams { max_tokens, stop_token_ids: fm.tokenizer.eos_token_ids.clone(), ..Default::default() };
    generate(&fm.decoder, &[req], &p, true, &d).unwrap().remove(0).tokens
}

fn tokens(v: &Value) -> Vec<u32> {
    v["choices"][0]["logprobs"]["token_ids"].as_array().unwrap_or_else(|| panic!("{v}")).iter().map(|t| t.as_u64().unwrap() as u32).collect()
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
    for f16 in [false, true] {
        let w = WireSoftPrompt::encode(&z, 3, f16);
        let (st, v) = post(addr, &json!({"prompt": "the theme", "max_tokens": 6, "temperature": 0, "logprobs": 1, "soft_prompt": w}));
        assert_eq!(st, 200, "{v}");
        assert_eq!(tokens(&v), want, "f16 = {f16}");
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
                let (st, v) = post(addr, &json!({"prompt": prompt, "max_tokens": 5, "temperature": 0, "logprobs": 1, "soft_prompt": WireSoftPrompt::encode(&z, 2, false)}));
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
fn every_bad_input_gets_its_4xx() {
    let addr = start(4);
    let ok = WireSoftPrompt::encode(&soft(0, 2), 2, false);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = json!({"prompt": "the", "max_tokens": 2, "soft_prompt": ok.clone()});
        f(&mut v);
        post(addr, &v)
    };
    let cases: Vec<(Box<dyn Fn(&mut Value)>, u16, &str)> = vec![
        (Box::new(|v| v["soft_prompt"]["dtype"] = json!("int8")), 400, "soft_prompt_dtype"),
        (Box::new(|v| v["soft_prompt"]["shape"] = json!([128])), 400, "soft_prompt_rank"),
        (Box::new(|v| v["soft_prompt"]["shape"] = json!([2, 63])), 400, "soft_prompt_width"),
        (Box::new(|v| v["soft_prompt"]["shape"] = json!([9, 64])), 400, "soft_prompt_rows"),
        (Box::new(|v| v["soft_prompt"]["data"] = json!("not base64!")), 400, "soft_prompt_base64"),
        (Box::new(|v| v["soft_prompt"]["shape"] = json!([1, 64])), 400, "soft_prompt_too_long"),
        (Box::new(|v| v["soft_prompt"] = serde_json::to_value(WireSoftPrompt::encode(&[f32::INFINITY; 128], 2, false)).unwrap()), 400, "soft_prompt_non_finite"),
        (Box::new(|v| v["max_tokens"] = json!(0)), 400, "max_tokens"),
        (Box::new(|v| v["temperature"] = json!(7)), 400, "temperature"),
        (Box::new(|v| v["top_p"] = json!(0)), 400, "top_p"),
        (Box::new(|v| v["adapter"] = json!({"task_prompt": [1, 2]})), 400, "invalid_request"),
        (Box::new(|v| v["max_tokens"] = json!(300)), 400, "context_length"),
    ];
    for (f, status, code) in cases {
        let (st, v) = with(&*f);
        assert_eq!((st, v["error"]["code"].as_str()), (status, Some(code)), "{v}");
    }
    // Truncated soft-prompt bytes (valid base64, 8 bytes short).
    let mut short = ok.clone();
    short.data = lopa_b64(&vec![0u8; 2 * 64 * 4 - 8]);
    let (st, v) = post(addr, &json!({"prompt": "the", "soft_prompt": short}));
    assert_eq!((st, v["error"]["code"].as_str()), (400, Some("soft_prompt_byte_length")));
    // Malformed JSON and an oversized body.
    let (st, v) = http(addr, "POST", "/v1/completions", b"{\"prompt\": ");
    assert_eq!((st, v["error"]["code"].as_str()), (400, Some("invalid_request")));
    let (st, _) = http(addr, "POST", "/v1/completions", &vec![b' '; 100 * 1024]);
    assert_eq!(st, 413);
    // The server is still serving after all of that.
    let (st, v) = post(addr, &json!({"prompt": "the", "max_tokens": 2, "soft_prompt": ok}));
    assert_eq!(st, 200, "{v}");
}

fn lopa_b64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn score_endpoint_ranks_label_words_like_the_library() {
    let addr = start(4);
    let z = soft(3, 2);
    let w = WireSoftPrompt::encode(&z, 2, true);
    let (st, v) = http(addr, "POST", "/v1/score", &serde_json::to_vec(&json!({"prompt": "the theme", "candidates": [" the", " of"], "soft_prompt": w})).unwrap());
    assert_eq!(st, 200, "{v}");
    let d = Device::flex();
    let fm = FoundationModel::load(fixture("tiny-llama.gguf"), &d).unwrap();
    let cands: Vec<Vec<u32>> = [" the", " of"].iter().map(|c| fm.tokenizer.encode(c).unwrap()).collect();
    let want = lopa::generate::score_continuations(&fm.decoder, &fm.tokenizer.encode("the theme").unwrap(), Some((&z, 2)), &cands, &d).unwrap();
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
    let req = json!({"prompt": "the theme", "max_tokens": 6, "temperature": 0, "soft_prompt": WireSoftPrompt::encode(&z, 2, false)});
    let (_, plain) = post(addr, &req);
    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = serde_json::to_vec(&sreq).unwrap();
    let head = format!("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
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
    let (st, want) = post(addr, &json!({"prompt": "", "max_tokens": 5, "temperature": 0, "logprobs": 1, "soft_prompt": WireSoftPrompt::encode(&z, 3, false)}));
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
    let (st, v) = post(addr, &json!({"max_tokens": 1, "prompt_embeds": pe["f32"], "soft_prompt": WireSoftPrompt::encode(&z, 3, false)}));
    assert_eq!((st, v["error"]["code"].as_str()), (400, Some("invalid_request")));
    let (st, _) = post(addr, &json!({"prompt": "the", "max_tokens": 1}));
    assert_eq!(st, 200);
}

#[test]
fn a_full_queue_answers_429_and_cors_allows_only_the_configured_origin() {
    let addr = start_with(1, 1, vec!["http://127.0.0.1:8000".into()]);
    let handles: Vec<_> = (0..24)
        .map(|_| std::thread::spawn(move || post(addr, &json!({"prompt": "the", "max_tokens": 250, "temperature": 0})).0))
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
    assert!(statuses.contains(&429), "a queue of 1 under 24 concurrent clients must refuse some: {statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    // CORS preflight from the configured origin, and from another one.
    let preflight = |origin: &str| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let req = format!("OPTIONS /v1/completions HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.to_ascii_lowercase()
    };
    assert!(preflight("http://127.0.0.1:8000").contains("access-control-allow-origin: http://127.0.0.1:8000"));
    assert!(!preflight("http://evil.example").contains("access-control-allow-origin"));
}
