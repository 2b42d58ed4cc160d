//! Real checkpoints of other families against transformers reading the same GGUF file
//! (tests/fixtures/make_real_fixtures.py): Qwen2.5-Coder-0.5B-Instruct (qwen2) and Gemma-3-270M
//! (gemma3). The tokenizer's ids, the logits of a prompt, the greedy continuation through the KV
//! cache and the NLL of a fixed text.
//!
//! The weights come from `scripts/fetch-weights.sh qwen2.5-coder-0.5b gemma-3-270m` (the test
//! command fetches them); missing weights fail unless LOPA_SKIP_REAL=1.

mod common;
use burn::tensor::{Device, Int, Tensor, TensorData};
use common::*;
use lopa::model::decoder::FoundationModel;
use lopa::model::generate::{generate, score_continuations, GenerationRequest};
use lopa::model::sampling::SamplingParams;

fn model(name: &str) -> Option<(FoundationModel, serde_json::Value)> {
    let want = json(&format!("real/{name}.json"));
    let folder = match name {
        "qwen2.5-coder-0.5b" => "qwen2.5-coder-0.5b-instruct",
        _ => name,
    };
    let path = lopa::paths::cache_dir().join("weights").join(folder).join(want["file"].as_str().unwrap());
    if !path.exists() {
        if std::env::var("LOPA_SKIP_REAL").as_deref() == Ok("1") {
            eprintln!("LOPA_SKIP_REAL=1: skipping {name}");
            return None;
        }
        panic!("{path:?} missing: run scripts/fetch-weights.sh {name} (or set LOPA_SKIP_REAL=1)");
    }
    let fm = FoundationModel::load(&path, &Device::flex()).unwrap();
    assert_eq!(fm.sha256, want["sha256"].as_str().unwrap(), "{name}: not the file the fixture was made from");
    Some((fm, want))
}

fn check(name: &str) {
    let Some((fm, want)) = model(name) else { return };
    let d = Device::flex();
    let prompt = fm.tokenizer.encode(want["prompt"].as_str().unwrap()).unwrap();
    assert_eq!(prompt, ids(&want["ids"]), "{name}: prompt ids");
    let t = Tensor::<2, Int>::from_data(TensorData::new(prompt.iter().map(|&x| x as i64).collect::<Vec<_>>(), [1, prompt.len()]), &d);
    let rel = logits_rel_diff(&lopa::device::to_vec(fm.decoder.forward(t, None).unwrap()).unwrap(), fm.decoder.vocab_size(), &want["logits"]);
    eprintln!("{name}: logits relative difference {rel:.2e}");
    assert!(rel <= 1e-3, "{name}: logits rel diff {rel}");

    let p = SamplingParams { max_tokens: ids(&want["greedy"]).len(), ..Default::default() };
    let out = generate(&fm.decoder, &[GenerationRequest { prompt_ids: prompt, soft_prompt: None }], &p, &d).unwrap();
    assert_eq!(out[0].tokens, ids(&want["greedy"]), "{name}: greedy continuation");

    for case in want["tokenizer_cases"].as_array().unwrap() {
        let text = case[0].as_str().unwrap();
        assert_eq!(fm.tokenizer.encode(text).unwrap(), ids(&case[1]), "{name}: ids of {text:?}");
    }
    let text = fm.tokenizer.encode(want["text"].as_str().unwrap()).unwrap();
    assert_eq!(text, ids(&want["text_ids"]), "{name}: text ids");
    let lp = score_continuations(&fm.decoder, &text[..1], None, &[text[1..].to_vec()], &d).unwrap()[0];
    let nll = -(lp as f64) / (text.len() - 1) as f64;
    let want_nll = want["nll"].as_f64().unwrap();
    eprintln!("{name}: NLL {nll:.5} nats/token, transformers {want_nll:.5}");
    assert!((nll - want_nll).abs() <= 1e-3 * want_nll, "{name}: NLL {nll} vs {want_nll}");
}

#[test]
fn qwen2_5_coder_0_5b_matches_transformers() {
    check("qwen2.5-coder-0.5b");
}

#[test]
fn gemma_3_270m_matches_transformers() {
    check("gemma-3-270m");
}
