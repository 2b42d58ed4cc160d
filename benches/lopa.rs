//! Criterion benchmarks on the CPU backend (flex) with the real default weights:
//! - soft-prompt generation: MiniLM encoder + LoPA generator, batch 1, a 64-token input;
//! - one frozen-decoder forward: SmolLM2-135M over a 10-row soft prompt + 64 tokens, logits of
//!   the last position (what one classification request costs the server).
//!
//! Run: scripts/benchmark.sh cpu (fetches the weights first).

use burn::tensor::{Device, Int, Tensor, TensorData};
use criterion::{criterion_group, criterion_main, Criterion};
use lopa::model::decoder::FoundationModel;
use lopa::model::encoder::SentenceEncoder;
use lopa::model::generator::{GeneratorConfig, Method};
use std::time::Duration;

/// A text that the MiniLM tokenizer turns into exactly `n` ids ([CLS] and [SEP] included).
fn text_of_tokens(enc: &SentenceEncoder, n: usize) -> String {
    let words = "the film is a quiet , funny and moving portrait of a family that learns to talk again".split(' ').collect::<Vec<_>>();
    let mut text = String::new();
    let mut i = 0;
    while enc.tokenizer.encode_with_special_tokens(&text).unwrap().len() < n {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(words[i % words.len()]);
        i += 1;
    }
    assert_eq!(enc.tokenizer.encode_with_special_tokens(&text).unwrap().len(), n, "word boundary overshoot");
    text
}

fn benches(c: &mut Criterion) {
    let fm_path = lopa::paths::default_foundation_model();
    let enc_path = lopa::paths::default_encoder();
    if !fm_path.exists() || !enc_path.exists() {
        eprintln!("weights missing: run scripts/fetch-weights.sh");
        return;
    }
    let d = Device::flex();
    let enc = SentenceEncoder::from_dir(&enc_path, &d).unwrap();
    let fm = FoundationModel::load(&fm_path, &d).unwrap();
    let g = GeneratorConfig::new(Method::Lopa, fm.decoder.hidden_size(), enc.hidden_size()).init(&d).unwrap();
    let text = text_of_tokens(&enc, 64);

    let mut group = c.benchmark_group("cpu");
    group.sample_size(20).measurement_time(Duration::from_secs(8));
    group.bench_function("soft_prompt_b1_64tok", |b| {
        b.iter(|| lopa::device::to_vec(g.forward(enc.embed(&[&text], &d).unwrap()).unwrap()).unwrap())
    });
    let ids: Vec<i64> = (0..64).map(|i| 100 + i * 7).collect();
    let z = g.forward(enc.embed(&[&text], &d).unwrap()).unwrap();
    group.bench_function("decoder_forward_m10_64tok", |b| {
        b.iter(|| {
            let e = fm.decoder.embed(Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [1, 64]), &d));
            let x = Tensor::cat(vec![z.clone(), e], 1);
            let pos: Vec<usize> = (0..74).collect();
            let h = fm.decoder.forward_embeds(x, &pos, &[1.0; 74], None).unwrap();
            lopa::device::to_vec(fm.decoder.logits(h.narrow(1, 73, 1).reshape([1, 576]))).unwrap()
        })
    });
    group.finish();
}

criterion_group!(lopa_benches, benches);
criterion_main!(lopa_benches);
