//! `lopa serve` as the trust boundary, on loopback with the tiny llama: every bad input answers
//! its 4xx, and no request (a full queue, a wrong host or content type, a huge prompt, a crafted
//! pickle, a slow or vanished client, too many streams, an endless body) gets past its limit.
#![cfg(feature = "server")]

mod common;
use burn::tensor::Device;
use common::serve::*;
use lopa::endpoint::engine::Engine;
use lopa::endpoint::Backend;
use lopa::model::decoder::FoundationModel;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

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
