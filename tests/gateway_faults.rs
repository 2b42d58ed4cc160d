//! The gateway when the engine behind it fails: killed (every connection closed at once), hung
//! (accepts and never answers) and back again. Every request gets its answer within its deadline
//! (200, 503 `upstream_unavailable`, 504 `timeout`, or an error event ending a stream), `/health`
//! follows the engine both ways, and the same gateway serves again once the engine is back.
//! A stub stands in for vLLM (tests/common/stub_vllm.rs); `scripts/benchmark.sh faults` does the
//! same to a real vLLM under load.
#![cfg(feature = "server")]

mod common;
use common::stub_vllm::{Mode, StubVllm};
use lopa::endpoint::{Backend, ServeConfig, Vllm};
use lopa::model::decoder::TokenEmbedding;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn get(addr: SocketAddr, path: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_whitespace().nth(1).unwrap_or("0").parse().unwrap_or(0)
}

/// (status, error code or "" , whether a stream ended with [DONE]) and how long the answer took.
fn ask(addr: SocketAddr, path: &str, body: &Value) -> ((u16, String, bool), Duration) {
    let t = Instant::now();
    let (status, body) = common::http_post(addr, path, &serde_json::to_vec(body).unwrap());
    let code = |v: &Value| v["error"]["code"].as_str().unwrap_or("").to_string();
    let body = body.as_str();
    let answer = if body.contains("data: ") {
        let events: Vec<&str> = body.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
        let err = events.iter().find_map(|e| serde_json::from_str::<Value>(e).ok().filter(|v| v.get("error").is_some()));
        (status, err.as_ref().map(code).unwrap_or_default(), events.last() == Some(&"[DONE]"))
    } else {
        (status, serde_json::from_str(body).map(|v| code(&v)).unwrap_or_default(), false)
    };
    (answer, t.elapsed())
}

#[test]
fn the_gateway_answers_within_its_deadline_while_the_engine_is_gone_or_hung_and_serves_again() {
    let emb = TokenEmbedding::load(common::fixture("tiny-llama.gguf")).unwrap();
    let (vocab, d) = (emb.config.vocab_size, emb.config.hidden_size);
    let stub = StubVllm::start(None, vocab, Mode::Answer);
    let at = stub.addr;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let vllm = rt.block_on(Vllm::connect(&stub.url(), emb)).unwrap();
    let info = vllm.model_info();
    let cfg = ServeConfig { request_timeout: Duration::from_secs(3), ..ServeConfig::default() };
    let gw = common::serve_info_in_thread(info, Backend::Vllm(Arc::new(vllm)), cfg);
    let soft = common::wire(&common::serve::soft(1, 2), 2, false);
    assert_eq!(soft.shape, [2, d as u64]);
    let complete = json!({"prompt": "hello", "max_tokens": 4, "temperature": 0, "soft_prompt": soft});
    let stream = json!({"prompt": "hello", "max_tokens": 4, "temperature": 0, "stream": true, "soft_prompt": soft});
    let score = json!({"prompt": "hello", "candidates": [" a", " b"], "soft_prompt": soft});
    let all = |want: [(u16, &str, bool); 3], within: Duration| {
        for (i, (path, body)) in [("/v1/completions", &complete), ("/v1/completions", &stream), ("/v1/score", &score)].into_iter().enumerate() {
            let (got, took) = ask(gw, path, body);
            assert_eq!((got.0, got.1.as_str(), got.2), want[i], "{path} {}", body["stream"]);
            assert!(took < within, "{path} took {took:?}");
        }
    };
    let ok = [(200, "", false), (200, "", true), (200, "", false)];
    all(ok, Duration::from_secs(2));
    assert_eq!(get(gw, "/health"), 200);

    // Killed: refused at once with 503 (a stream: its error event, no [DONE]); health follows.
    stub.stop();
    let gone = [(503, "upstream_unavailable", false), (200, "upstream_unavailable", false), (503, "upstream_unavailable", false)];
    all(gone, Duration::from_secs(2));
    assert_eq!(get(gw, "/health"), 503);

    // Back on the same address: the same gateway serves again.
    let stub = StubVllm::start(Some(at), vocab, Mode::Answer);
    all(ok, Duration::from_secs(2));
    assert_eq!(get(gw, "/health"), 200);

    // Hung: every request ends at the gateway's deadline with 504 (a stream when its own
    // deadline passes: only the plain routes are asked here), health within its 5 s probe.
    stub.stop();
    let hung = StubVllm::start(Some(at), vocab, Mode::Hang);
    for (path, body) in [("/v1/completions", &complete), ("/v1/score", &score)] {
        let ((status, code, _), took) = ask(gw, path, body);
        assert_eq!((status, code.as_str()), (504, "timeout"), "{path}");
        assert!(took >= Duration::from_secs(3) && took < Duration::from_secs(6), "{path} took {took:?}");
    }
    let t = Instant::now();
    assert_eq!(get(gw, "/health"), 503);
    assert!(t.elapsed() < Duration::from_secs(7));
    hung.stop();
    let _stub = StubVllm::start(Some(at), vocab, Mode::Answer);
    all(ok, Duration::from_secs(2));
}
