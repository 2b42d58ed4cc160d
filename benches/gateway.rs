//! The gateway's own CPU time per request, without vLLM: `lopa serve --upstream vllm=…` driven
//! in-process (no client socket) in front of a stub that answers like vLLM and reads nothing but
//! the first and last kilobyte of a request (tests/common/stub_vllm.rs). One request each time, so
//! time is the gateway's work: reading and checking the client's JSON and soft prompt, tokenizing,
//! writing `[soft prompt ; embed(prompt)]` as base64 `torch.save` bytes into the upstream body, the
//! loopback HTTP to the stub, and mapping the answer back.
//!
//! Widths: d = 576 (SmolLM2-135M's real table) and d = 1,536 (Qwen2.5-1.5B's width: the same
//! tokenizer over a random table of that width). Prompts: the serving benchmark's request (a
//! 10-row f16 soft prompt, 16 prompt tokens, 8 new tokens) and one of 1,000 prompt tokens.
//!
//! Run: scripts/benchmark.sh gateway (release build; writes results/perf/gateway.json).

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lopa::endpoint::{router_with, Backend, ServeConfig, Vllm};
use lopa::model::decoder::TokenEmbedding;
use lopa::model::SoftPrompt;
use lopa::wire::{CompletionRequest, Dtype, WireSoftPrompt};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

#[allow(dead_code)]
#[path = "../tests/common/stub_vllm.rs"]
mod stub_vllm;
use stub_vllm::{Mode, StubVllm};

/// SmolLM2's tokenizer over a table of width `d`: the real one at 576, random at other widths.
fn table(d: usize) -> Option<TokenEmbedding> {
    let path = lopa::paths::default_foundation_model();
    if !path.exists() {
        eprintln!("weights missing: run scripts/fetch-weights.sh");
        return None;
    }
    let mut emb = TokenEmbedding::load(&path).unwrap();
    if emb.config.hidden_size != d {
        let mut rng = lopa::rng::Rng::new(d as u64);
        emb.config.hidden_size = d;
        emb.table = (0..emb.config.vocab_size * d).map(|_| (rng.next_f32() - 0.5) * 0.04).collect();
    }
    Some(emb)
}

/// A client's completion body: a 10-row f16 soft prompt and a prompt of `tokens` tokens.
fn client_body(emb: &TokenEmbedding, tokens: usize) -> Vec<u8> {
    let d = emb.config.hidden_size;
    let mut rng = lopa::rng::Rng::new(7);
    let z = SoftPrompt::new((0..10 * d).map(|_| (rng.next_f32() - 0.5) * 0.1).collect(), 10, d).unwrap();
    let words = "the film is a quiet , funny and moving portrait of a family that learns to talk again".split(' ').collect::<Vec<_>>();
    let mut prompt = String::new();
    for i in 0.. {
        if emb.tokenizer.encode(&prompt).unwrap().len() >= tokens {
            break;
        }
        prompt.push(' ');
        prompt.push_str(words[i % words.len()]);
    }
    let req = CompletionRequest { prompt, max_tokens: 8, temperature: Some(0.0), soft_prompt: Some(WireSoftPrompt::encode(&z, Dtype::F16)), ..Default::default() };
    serde_json::to_vec(&req).unwrap()
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut group = c.benchmark_group("gateway");
    group.measurement_time(Duration::from_secs(8));
    for d in [576, 1536] {
        let Some(emb) = table(d) else { return };
        let vocab = emb.config.vocab_size;
        let stub = StubVllm::start(None, vocab, Mode::Answer);
        let app = rt.block_on(async {
            let vllm = Vllm::connect(&stub.url(), emb.clone()).await.unwrap();
            let info = vllm.model_info();
            router_with(Backend::Vllm(Arc::new(vllm)), info, ServeConfig::default())
        });
        for tokens in [16, 1000] {
            let body = client_body(&emb, tokens);
            let send = || {
                let req = Request::post("/v1/completions").header(header::HOST, "127.0.0.1").header(header::CONTENT_TYPE, "application/json").body(Body::from(body.clone())).unwrap();
                let app = app.clone();
                async move {
                    let r = app.oneshot(req).await.unwrap();
                    let status = r.status();
                    (status, axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap())
                }
            };
            let (status, answer) = rt.block_on(send());
            assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer));
            group.throughput(Throughput::Elements(1));
            group.bench_function(BenchmarkId::new(format!("completion d={d}"), format!("{tokens} tokens")), |b| b.iter(|| rt.block_on(send())));
        }
    }
    group.finish();
}

criterion_group!(gateway, benches);
criterion_main!(gateway);
