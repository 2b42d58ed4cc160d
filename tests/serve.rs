//! `lopa serve` end to end on loopback with the tiny llama: completions equal the library's
//! direct generation (alone and batched with other clients' soft prompts), f32 and f16 soft
//! prompts give the same tokens, and every bad-input rule answers its 4xx.
#![cfg(feature = "server")]

mod common;
use burn::tensor::Device;
use common::fixture;
use lopa::model::decoder::FoundationModel;
use lopa::model::generate::{generate, GenerationRequest};
use lopa::model::sampling::SamplingParams;
use lopa::endpoint::engine::Engine;
use lopa::model::SoftPrompt;
use lopa::endpoint::{Backend, ServeConfig};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

fn start(max_batch: usize) -> SocketAddr {
    start_with(max_batch, 64, vec![])
}

fn start_with(max_batch: usize, queue: usize, cors: Vec<String>) -> SocketAddr {
    let mut cfg = test_config();
    cfg.engine.max_batch = max_batch;
    cfg.engine.queue = queue;
    cfg.cors_origins = cors;
    start_cfg(cfg)
}

fn test_config() -> ServeConfig {
    let mut cfg = ServeConfig::default();
    cfg.engine.batch_window = Duration::from_millis(50);
    cfg.max_body_bytes = 64 * 1024;
    cfg.max_soft_prompt_rows = 8;
    cfg
}

fn start_cfg(cfg: ServeConfig) -> SocketAddr {
    let fm = FoundationModel::load(fixture("tiny-llama.gguf"), &Device::flex()).unwrap();
    let engine = Engine::start(fm.clone(), Device::flex(), cfg.engine.clone());
    start_backend(&fm, Backend::Embedded(engine), cfg)
}

fn start_backend(fm: &FoundationModel, backend: Backend, cfg: ServeConfig) -> SocketAddr {
    common::serve_in_thread(fm, backend, cfg)
}

/// Minimal HTTP/1.1 client: (status, JSON body).
fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
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
    let req = GenerationRequest { prompt_ids: fm.tokenizer.encode(prompt).unwrap(), soft_prompt: Some(SoftPrompt::new(z.to_vec(), rows, 64).unwrap()) };
    let p = SamplingParams { max_tokens, stop_token_ids: fm.tokenizer.eos_token_ids.clone(), ..Default::default() };
    generate(&fm.decoder, &[req], &p, &d).unwrap().remove(0).tokens
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
fn every_bad_input_gets_its_4xx() {
    let addr = start(4);
    let ok = common::wire(&soft(0, 2), 2, false);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = json!({"prompt": "the", "max_tokens": 2, "soft_prompt": ok.clone()});
        f(&mut v);
        post(addr, &v)
    };
    type Case = (Box<dyn Fn(&mut Value)>, u16, &'static str);
    let cases: Vec<Case> = vec![
        (Box::new(|v| v["soft_prompt"]["dtype"] = json!("int8")), 400, "soft_prompt_dtype"),
        (Box::new(|v| v["soft_prompt"]["shape"] = json!([128])), 400, "soft_prompt_rank"),
        (Box::new(|v| v["soft_prompt"]["shape"] = json!([2, 63])), 400, "soft_prompt_width"),
        (Box::new(|v| v["soft_prompt"]["shape"] = json!([9, 64])), 400, "soft_prompt_rows"),
        (Box::new(|v| v["soft_prompt"]["data"] = json!("not base64!")), 400, "soft_prompt_base64"),
        (Box::new(|v| v["soft_prompt"]["shape"] = json!([1, 64])), 400, "soft_prompt_too_long"),
        (Box::new(|v| v["soft_prompt"] = serde_json::to_value(common::wire(&[f32::INFINITY; 128], 2, false)).unwrap()), 400, "soft_prompt_non_finite"),
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
        let req = format!("OPTIONS /v1/completions HTTP/1.1\r\nHost: localhost\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.to_ascii_lowercase()
    };
    assert!(preflight("http://127.0.0.1:8000").contains("access-control-allow-origin: http://127.0.0.1:8000"));
    assert!(!preflight("http://evil.example").contains("access-control-allow-origin"));
}

/// Send raw bytes, then read until the server closes or `wait` passes: (status, whole answer).
fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    (text.split_whitespace().nth(1).and_then(|x| x.parse().ok()).unwrap_or(0), text)
}

fn request(host: &str, content_type: Option<&str>, body: &str) -> Vec<u8> {
    let ct = content_type.map(|c| format!("Content-Type: {c}\r\n")).unwrap_or_default();
    format!("POST /v1/completions HTTP/1.1\r\nHost: {host}\r\n{ct}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).into_bytes()
}

#[test]
fn only_json_posts_from_allowed_hosts_are_served() {
    let addr = start(4);
    let body = r#"{"prompt": "the", "max_tokens": 1}"#;
    let wait = Duration::from_secs(30);
    // A cross-site page can POST text/plain (or a form) without a CORS preflight.
    for ct in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
        let (st, text) = raw(addr, &request("localhost", ct, body), wait);
        assert_eq!(st, 415, "{ct:?}: {text}");
        assert!(text.contains("\"content_type\""), "{text}");
    }
    assert_eq!(raw(addr, &request("localhost", Some("application/json; charset=utf-8"), body), wait).0, 200);
    // DNS rebinding: a page on evil.example resolves its name to 127.0.0.1.
    let (st, text) = raw(addr, &request("evil.example:8080", Some("application/json"), body), wait);
    assert_eq!(st, 403, "{text}");
    assert!(text.contains("host_not_allowed"), "{text}");
    for host in ["127.0.0.1:8080", "localhost", "[::1]:80", "LOCALHOST:1"] {
        assert_eq!(raw(addr, &request(host, Some("application/json"), body), wait).0, 200, "{host}");
    }
    // Allowed names are configurable; `*` accepts any.
    let mut cfg = test_config();
    cfg.allowed_hosts = vec!["lopa.example".into()];
    let named = start_cfg(cfg);
    assert_eq!(raw(named, &request("lopa.example:443", Some("application/json"), body), wait).0, 200);
    assert_eq!(raw(named, &request("other.example", Some("application/json"), body), wait).0, 403);
}

#[test]
fn token_budgets_refuse_huge_prompts_and_score_requests_with_a_4xx() {
    let mut cfg = test_config();
    cfg.max_body_bytes = 4 << 20;
    cfg.max_request_tokens = 2048;
    let addr = start_cfg(cfg);
    // A 30,000-token prompt.
    let (st, v) = post(addr, &json!({"prompt": "the ".repeat(30_000), "max_tokens": 1}));
    assert_eq!((st, v["error"]["code"].as_str()), (400, Some("request_tokens")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("2048"), "{v}");
    // 64 candidates of 100 tokens each: every one fits the tiny model's context (256) alone,
    // all of them together are 6,400 token positions in one forward pass.
    let long = " the".repeat(100);
    let body = serde_json::to_vec(&json!({"prompt": "x", "candidates": vec![long; 64]})).unwrap();
    let (st, v) = http(addr, "POST", "/v1/score", &body);
    assert_eq!((st, v["error"]["code"].as_str()), (400, Some("request_tokens")), "{v}");
    // Stop strings: at most 4, each 1 to 64 bytes.
    for stop in [json!(["a", "b", "c", "d", "e"]), json!("x".repeat(65)), json!([""])] {
        let (st, v) = post(addr, &json!({"prompt": "the", "max_tokens": 1, "stop": stop}));
        assert_eq!((st, v["error"]["code"].as_str()), (400, Some("stop")), "{v}");
    }
    let (st, v) = post(addr, &json!({"prompt": "the", "max_tokens": 2, "stop": ["a", "b", "c", "d"]}));
    assert_eq!(st, 200, "{v}");
}

#[test]
fn a_pickle_that_doubles_or_nests_values_is_a_400() {
    let addr = start(4);
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    // 40 doublings of a memoized tuple (2^40 values if copied), and 20,000 nested tuples.
    let mut doubling = b"\x80\x02)q\x00".to_vec();
    for _ in 0..40 {
        doubling.extend_from_slice(b"h\x00h\x00\x86q\x00");
    }
    doubling.push(b'.');
    let mut nested = b"\x80\x02)".to_vec();
    nested.extend(std::iter::repeat_n(0x85u8, 20_000));
    nested.push(b'.');
    for pkl in [doubling, nested] {
        assert!(pkl.len() < 21_000);
        let zip = lopa::model::weights::torch::write_zip(&[("archive/data.pkl", &pkl), ("archive/byteorder", b"little")]);
        let t = std::time::Instant::now();
        let (st, v) = post(addr, &json!({"max_tokens": 1, "prompt_embeds": b64(&zip)}));
        assert_eq!((st, v["error"]["code"].as_str()), (400, Some("prompt_embeds_format")), "{v}");
        assert!(t.elapsed() < Duration::from_secs(10), "refused in bounded time");
    }
}

#[test]
fn slow_clients_time_out_and_streams_have_a_deadline() {
    let mut cfg = test_config();
    cfg.header_timeout = Duration::from_millis(500);
    cfg.body_timeout = Duration::from_millis(500);
    cfg.stream_timeout = Duration::from_millis(1);
    let addr = start_cfg(cfg);
    // Headers that never finish: the connection is closed.
    let t = std::time::Instant::now();
    let (_, text) = raw(addr, b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\n", Duration::from_secs(20));
    assert!(t.elapsed() < Duration::from_secs(10), "closed after the header timeout: {text:?}");
    // A body that never finishes: 408.
    let (st, text) = raw(addr, b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"prompt\"", Duration::from_secs(20));
    assert_eq!(st, 408, "{text}");
    assert!(text.contains("body_timeout"), "{text}");
    // A stream past its deadline ends with an error event, not [DONE].
    let body = json!({"prompt": "the", "max_tokens": 250, "temperature": 0, "stream": true}).to_string();
    let (st, text) = raw(addr, &request("localhost", Some("application/json"), &body), Duration::from_secs(60));
    assert_eq!(st, 200, "{text}");
    let events: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "timeout", "{text}");
}

#[test]
fn the_concurrency_limit_answers_503_while_streams_hold_their_permits() {
    let mut cfg = test_config();
    cfg.max_concurrent = 1;
    cfg.engine.max_batch = 1;
    let addr = start_cfg(cfg);
    // One stream holds the only permit while it runs.
    let body = json!({"prompt": "the", "max_tokens": 250, "temperature": 0, "stream": true}).to_string();
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&request("localhost", Some("application/json"), &body)).unwrap();
    let mut first = [0u8; 64];
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let n = s.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    let (st, v) = post(addr, &json!({"prompt": "the", "max_tokens": 1}));
    assert_eq!((st, v["error"]["code"].as_str()), (503, Some("overloaded")), "{v}");
    // Health still answers while the server is full.
    let (st, h) = http(addr, "GET", "/health", b"");
    assert_eq!((st, h["status"].as_str()), (200, Some("ok")), "{h}");
    // Once the stream is gone, the permit is back.
    drop(s);
    let t = std::time::Instant::now();
    loop {
        let (st, _) = post(addr, &json!({"prompt": "the", "max_tokens": 1}));
        if st == 200 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "the permit never came back");
        std::thread::sleep(Duration::from_millis(50));
    }
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

#[test]
fn a_client_that_goes_away_or_times_out_stops_using_the_model() {
    // The real model: slow enough per token to see a generation stop early.
    let Some((model, _)) = common::real_weights() else { return };
    let fm = FoundationModel::load(model, &Device::flex()).unwrap();
    let mut cfg = test_config();
    cfg.max_tokens_limit = 2000;
    cfg.request_timeout = Duration::from_millis(1500);
    let engine = Engine::start(fm.clone(), Device::flex(), cfg.engine.clone());
    let addr = start_backend(&fm, Backend::Embedded(engine.clone()), cfg);
    let settled = |what: &str| {
        // Wait until the count stops moving, then check it stays still.
        let mut last = engine.generated_tokens();
        loop {
            std::thread::sleep(Duration::from_millis(700));
            let now = engine.generated_tokens();
            if now == last {
                return now;
            }
            assert!(now < 1000, "{what}: the generation ran on ({now} tokens)");
            last = now;
        }
    };
    // A stream whose client disconnects after the first tokens.
    let body = json!({"prompt": "Once upon a time", "max_tokens": 2000, "temperature": 0, "stream": true}).to_string();
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&request("localhost", Some("application/json"), &body)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut buf = [0u8; 4096];
    let mut seen = String::new();
    while seen.matches("data: ").count() < 3 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    drop(s);
    let after_stream = settled("stream");
    // A plain request that runs past its timeout: 504, and the generation stops.
    let (st, v) = post(addr, &json!({"prompt": "Once upon a time", "max_tokens": 2000, "temperature": 0}));
    assert_eq!((st, v["error"]["code"].as_str()), (504, Some("timeout")), "{v}");
    let after_timeout = settled("timeout");
    assert!(after_timeout - after_stream < 1000, "{after_stream} then {after_timeout}");
    // The engine still serves.
    assert_eq!(post(addr, &json!({"prompt": "Hi", "max_tokens": 2})).0, 200);
}

#[test]
fn a_chunked_body_over_the_limit_is_413() {
    // No Content-Length to refuse up front: the limit must stop the read itself.
    let addr = start(4);
    let chunk = vec![b' '; 40 * 1024];
    let mut req = b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..3 {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(&chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let (st, text) = raw(addr, &req, Duration::from_secs(30));
    assert_eq!(st, 413, "{text}");
    assert!(text.contains("body_too_large"), "{text}");
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
