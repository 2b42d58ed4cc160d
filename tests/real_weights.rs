//! Parity with the real default weights (SmolLM2-135M-Instruct Q4_1 GGUF, all-MiniLM-L6-v2)
//! against tests/fixtures/{minilm,smollm2}.json from the float64 numpy reference.
//! Weights come from scripts/fetch-weights.sh; the models load once per test binary.

mod common;
use burn::tensor::{Device, Int, Tensor, TensorData};
use common::*;
use lopa::model::decoder::FoundationModel;
use lopa::model::encoder::SentenceEncoder;
use lopa::model::generate::{generate, GenerationRequest};
use lopa::model::sampling::SamplingParams;
use std::sync::OnceLock;

fn fm() -> Option<&'static FoundationModel> {
    static FM: OnceLock<Option<FoundationModel>> = OnceLock::new();
    FM.get_or_init(|| real_weights().map(|(p, _)| FoundationModel::load(p, &Device::flex()).unwrap())).as_ref()
}

fn ids_tensor(ids: &[u32]) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(ids.iter().map(|&x| x as i64).collect::<Vec<_>>(), [1, ids.len()]), &Device::flex())
}

#[test]
fn minilm_embeddings_match_reference() {
    let Some((_, enc_dir)) = real_weights() else { return };
    let d = Device::flex();
    let enc = SentenceEncoder::from_dir(enc_dir, &d).unwrap();
    let want = json("minilm.json");
    let sents: Vec<&str> = want["sentences"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    for (i, s) in sents.iter().enumerate() {
        assert_eq!(enc.tokenizer.encode_with_special_tokens(s).unwrap(), ids(&want["ids"][i]), "ids of {s:?}");
    }
    let e = lopa::device::to_vec(enc.embed(&sents, &d).unwrap()).unwrap();
    let h = enc.hidden_size();
    for i in 0..sents.len() {
        let diff = max_abs_diff(&e[i * h..(i + 1) * h], &floats(&want["embeddings"][i]));
        assert!(diff <= 1e-4, "sentence {i}: max abs diff {diff}");
    }
    let cos = |a: usize, b: usize| (0..h).map(|k| e[a * h + k] * e[b * h + k]).sum::<f32>();
    let worst = (0..sents.len()).map(|i| max_abs_diff(&e[i * h..(i + 1) * h], &floats(&want["embeddings"][i]))).fold(0.0, f32::max);
    eprintln!("measured: MiniLM max abs diff {worst:.2e} over {} sentences; cos(guitar pair) {:.4}; cos(guitar, stock) {:.4}", sents.len(), cos(0, 1), cos(0, 2));
    assert!((cos(0, 1) - 0.72).abs() < 0.01, "guitar pair cosine {}", cos(0, 1));
    assert!(cos(0, 2).abs() < 0.1, "guitar vs stock market {}", cos(0, 2));
}

#[test]
fn smollm2_logits_and_tokenizer_match_reference() {
    let Some(fm) = fm() else { return };
    let want = json("smollm2.json");
    let ids_ = fm.tokenizer.encode(want["prompt"].as_str().unwrap()).unwrap();
    assert_eq!(ids_, ids(&want["ids"]));
    let logits = lopa::device::to_vec(fm.decoder.forward(ids_tensor(&ids_), None).unwrap()).unwrap();
    let rel = logits_rel_diff(&logits, fm.decoder.vocab_size(), &want["logits"]);
    eprintln!("measured: SmolLM2 logits max abs diff / logit scale = {rel:.2e}");
    assert!(rel <= 1e-3, "relative logit diff {rel}");
}

#[test]
fn smollm2_soft_prompt_forward_matches_reference_from_embeddings() {
    let Some(fm) = fm() else { return };
    let want = json("smollm2.json");
    let m = want["soft_prompt_rows"].as_u64().unwrap() as usize;
    let z = Tensor::<3>::from_data(TensorData::new(floats(&want["soft_prompt"]), [1, m, 576]), &Device::flex());
    let logits = lopa::device::to_vec(fm.decoder.forward(ids_tensor(&ids(&want["ids"])), Some(z)).unwrap()).unwrap();
    let rel = logits_rel_diff(&logits, fm.decoder.vocab_size(), &want["logits_with_soft_prompt"]);
    eprintln!("measured: SmolLM2 with 4-row soft prompt, logits max abs diff / logit scale = {rel:.2e}");
    assert!(rel <= 1e-3, "relative logit diff {rel}");
}

fn mean_nll(fm: &FoundationModel, ids_: &[u32]) -> f32 {
    let v = fm.decoder.vocab_size();
    let logits = lopa::device::to_vec(fm.decoder.forward(ids_tensor(ids_), None).unwrap()).unwrap();
    let n = ids_.len() - 1;
    (0..n).map(|p| -lopa::model::sampling::log_softmax(&logits[p * v..(p + 1) * v])[ids_[p + 1] as usize]).sum::<f32>() / n as f32
}

#[test]
fn smollm2_nll_paris_and_shuffled() {
    let Some(fm) = fm() else { return };
    let want = json("smollm2.json");
    let paris = fm.tokenizer.encode(want["paris"].as_str().unwrap()).unwrap();
    assert_eq!(paris, ids(&want["paris_ids"]));
    let nll = mean_nll(fm, &paris);
    assert!((nll - 2.54).abs() <= 0.02, "Paris NLL {nll}");
    assert!((nll - want["paris_nll"].as_f64().unwrap() as f32).abs() <= 0.01);
    let shuffled = fm.tokenizer.encode(want["shuffled"].as_str().unwrap()).unwrap();
    let s = mean_nll(fm, &shuffled);
    assert!((s - want["shuffled_nll"].as_f64().unwrap() as f32).abs() <= 0.02, "shuffled NLL {s}");
    assert!(s > nll + 4.0, "shuffled text must be far less likely: {s} vs {nll}");
    eprintln!("measured: mean NLL Paris {nll:.4} (reference {:.4}); shuffled {s:.4} (reference {:.4})", want["paris_nll"], want["shuffled_nll"]);
}

#[test]
fn smollm2_greedy_fibonacci_is_valid_python_and_cache_equals_no_cache() {
    let Some(fm) = fm() else { return };
    let d = Device::flex();
    let want = json("smollm2.json");
    let req = GenerationRequest { prompt_ids: ids(&want["code_ids"]), soft_prompt: None };
    let p = SamplingParams { max_tokens: 24, ..Default::default() };
    let cached = generate(&fm.decoder, std::slice::from_ref(&req), &p, &d).unwrap();
    assert_eq!(cached[0].tokens, ids(&want["code_greedy"]));
    let text = format!("{}{}", want["code_prompt"].as_str().unwrap(), fm.tokenizer.decode(&cached[0].tokens).unwrap());
    let ok = std::process::Command::new("python3")
        .args(["-c", "import ast,sys; ast.parse(sys.argv[1])", &text])
        .status()
        .expect("python3 runs");
    assert!(ok.success(), "not valid Python:\n{text}");
    eprintln!("measured: greedy completion\n{text}");
    let short = SamplingParams { max_tokens: 8, ..Default::default() };
    let (uncached, _) = greedy_without_cache(&fm.decoder, &req, &short, &d);
    assert_eq!(uncached[..], cached[0].tokens[..8]);
}
