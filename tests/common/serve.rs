//! `lopa serve` on loopback with the tiny llama, and a minimal HTTP/1.1 client: what the serving
//! tests share.

use super::fixture;
use burn::tensor::Device;
use lopa::endpoint::engine::Engine;
use lopa::endpoint::{Backend, ServeConfig};
use lopa::model::decoder::FoundationModel;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub fn start(max_batch: usize) -> SocketAddr {
    start_with(max_batch, 64, vec![])
}

pub fn start_with(max_batch: usize, queue: usize, cors: Vec<String>) -> SocketAddr {
    let mut cfg = test_config();
    cfg.engine.max_batch = max_batch;
    cfg.engine.queue = queue;
    cfg.cors_origins = cors;
    start_cfg(cfg)
}

pub fn test_config() -> ServeConfig {
    let mut cfg = ServeConfig::default();
    cfg.engine.batch_window = Duration::from_millis(50);
    cfg.max_body_bytes = 64 * 1024;
    cfg.max_soft_prompt_rows = 8;
    cfg
}

pub fn start_cfg(cfg: ServeConfig) -> SocketAddr {
    let fm = FoundationModel::load(fixture("tiny-llama.gguf"), &Device::flex()).unwrap();
    let engine = Engine::start(fm.clone(), Device::flex(), cfg.engine.clone());
    start_backend(&fm, Backend::Embedded(engine), cfg)
}

pub fn start_backend(fm: &FoundationModel, backend: Backend, cfg: ServeConfig) -> SocketAddr {
    super::serve_in_thread(fm, backend, cfg)
}

/// Minimal HTTP/1.1 client: (status, JSON body).
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
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

pub fn post(addr: SocketAddr, v: &Value) -> (u16, Value) {
    http(addr, "POST", "/v1/completions", &serde_json::to_vec(v).unwrap())
}

/// A soft prompt exactly representable in f16 (multiples of 1/64 in [-1, 1]).
pub fn soft(seed: usize, rows: usize) -> Vec<f32> {
    (0..rows * 64).map(|i| (((i * 37 + seed * 11) % 129) as f32 - 64.0) / 64.0).collect()
}

pub fn tokens(v: &Value) -> Vec<u32> {
    v["choices"][0]["logprobs"]["token_ids"].as_array().unwrap_or_else(|| panic!("{v}")).iter().map(|t| t.as_u64().unwrap() as u32).collect()
}

/// Send raw bytes, then read until the server closes or `wait` passes: (status, whole answer).
pub fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    (text.split_whitespace().nth(1).and_then(|x| x.parse().ok()).unwrap_or(0), text)
}

pub fn request(host: &str, content_type: Option<&str>, body: &str) -> Vec<u8> {
    let ct = content_type.map(|c| format!("Content-Type: {c}\r\n")).unwrap_or_default();
    format!("POST /v1/completions HTTP/1.1\r\nHost: {host}\r\n{ct}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).into_bytes()
}
