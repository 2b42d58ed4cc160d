//! Parity of every loader and model against the float64 numpy reference in
//! tests/fixtures/make_fixtures.py, on tiny random-weight models (no network, no cache).

mod common;
use common::*;
use burn::tensor::{Device, Int, Tensor, TensorData};
use lopa::model::decoder::FoundationModel;
use lopa::model::encoder::{Pooling, SentenceEncoder};
use lopa::model::generate::{generate, GenerationRequest};
use lopa::model::sampling::SamplingParams;
use lopa::model::generator::{GeneratorConfig, Method, PromptGenerator};
use lopa::model::weights::{gguf::Gguf, safetensors};

fn dev() -> Device {
    Device::flex()
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    lopa::device::to_vec(t).unwrap()
}

#[test]
fn dequantization_matches_the_gguf_package() {
    let bytes = std::fs::read(fixture("quants.gguf")).unwrap();
    let g = Gguf::parse(&bytes).unwrap();
    let want = json("quants.json");
    let names: Vec<&str> = g.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "F32", "F16", "BF16"]);
    for info in &g.tensors {
        let got = g.tensor(info).data;
        let exp = floats(&want[&info.name]);
        assert_eq!(max_abs_diff(&got, &exp), 0.0, "{}", info.name);
    }
}

#[test]
fn tiny_bert_embeddings_match_reference() {
    let d = dev();
    let dir = fixture("tiny-bert");
    let read = |n: &str| std::fs::read(dir.join(n)).unwrap();
    let want = json("tiny-bert/expected.json");
    let sents: Vec<&str> = want["sentences"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    for (pooling, normalize, key) in [(Pooling::Mean, true, "mean_l2"), (Pooling::FirstToken, false, "cls_raw")] {
        let enc = SentenceEncoder::from_bytes(&read("config.json"), &read("model.safetensors"), &read("tokenizer.json"), pooling, normalize, &d).unwrap();
        for (i, s) in sents.iter().enumerate() {
            assert_eq!(enc.tokenizer.encode_with_special_tokens(s).unwrap(), ids(&want["ids"][i]));
        }
        // One padded batch: padding must not change any row.
        let got = to_vec(enc.embed(&sents, &d).unwrap());
        let h = enc.hidden_size();
        for i in 0..sents.len() {
            let diff = max_abs_diff(&got[i * h..(i + 1) * h], &floats(&want[key][i]));
            assert!(diff <= 1e-4, "{key} sentence {i}: {diff}");
        }
    }
}

#[test]
fn tiny_llama_gguf_matches_reference() {
    let d = dev();
    let fm = FoundationModel::load(fixture("tiny-llama.gguf"), &d).unwrap();
    let want = json("tiny-llama.json");
    let ids_ = fm.tokenizer.encode(want["text"].as_str().unwrap()).unwrap();
    assert_eq!(ids_, ids(&want["ids"]));
    let v = fm.decoder.vocab_size();
    let n = ids_.len();
    let t = Tensor::<2, Int>::from_data(TensorData::new(ids_.iter().map(|&x| x as i64).collect::<Vec<_>>(), [1, n]), &d);
    let rel = logits_rel_diff(&to_vec(fm.decoder.forward(t.clone(), None).unwrap()), v, &want["logits"]);
    assert!(rel <= 1e-4, "logits rel diff {rel}");
    // The same forward behind a soft prompt equals the reference computed from input embeddings.
    let m = want["soft_prompt_rows"].as_u64().unwrap() as usize;
    let z = Tensor::<3>::from_data(TensorData::new(floats(&want["soft_prompt"]), [1, m, fm.decoder.hidden_size()]), &d);
    let rel = logits_rel_diff(&to_vec(fm.decoder.forward(t, Some(z)).unwrap()), v, &want["logits_with_soft_prompt"]);
    assert!(rel <= 1e-4, "soft-prompt logits rel diff {rel}");
}

#[test]
fn tiny_llama_generation_cache_equals_no_cache_and_reference() {
    let d = dev();
    let fm = FoundationModel::load(fixture("tiny-llama.gguf"), &d).unwrap();
    let want = json("tiny-llama.json");
    let req = GenerationRequest { prompt_ids: ids(&want["ids"]), soft_prompt: None };
    let p = SamplingParams { max_tokens: 8, ..Default::default() };
    let cached = generate(&fm.decoder, std::slice::from_ref(&req), &p, &d).unwrap();
    let (uncached, uncached_lps) = greedy_without_cache(&fm.decoder, &req, &p, &d);
    assert_eq!(cached[0].tokens, ids(&want["greedy"]));
    assert_eq!(cached[0].tokens, uncached);
    for (a, b) in cached[0].logprobs.iter().zip(&uncached_lps) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
}

#[test]
fn batched_generation_with_padding_equals_one_at_a_time() {
    let d = dev();
    let fm = FoundationModel::load(fixture("tiny-llama.gguf"), &d).unwrap();
    let hd = fm.decoder.hidden_size();
    let z: Vec<f32> = (0..2 * hd).map(|i| ((i as f32) * 0.37).sin() * 0.5).collect();
    let reqs = vec![
        GenerationRequest { prompt_ids: fm.tokenizer.encode("the theme").unwrap(), soft_prompt: None },
        GenerationRequest { prompt_ids: fm.tokenizer.encode("a longer prompt than that").unwrap(), soft_prompt: Some(lopa::model::SoftPrompt::new(z, 2, hd).unwrap()) },
        GenerationRequest { prompt_ids: fm.tokenizer.encode("x").unwrap(), soft_prompt: None },
    ];
    let p = SamplingParams { max_tokens: 6, ..Default::default() };
    let batched = generate(&fm.decoder, &reqs, &p, &d).unwrap();
    for (i, r) in reqs.iter().enumerate() {
        let single = generate(&fm.decoder, std::slice::from_ref(r), &p, &d).unwrap();
        assert_eq!(batched[i].tokens, single[0].tokens, "row {i}");
    }
}

#[test]
fn tiny_qwen2_safetensors_matches_reference() {
    let d = dev();
    let fm = FoundationModel::load(fixture("tiny-qwen2"), &d).unwrap();
    let want = json("tiny-qwen2/expected.json");
    let ids_ = fm.tokenizer.encode(want["text"].as_str().unwrap()).unwrap();
    assert_eq!(ids_, ids(&want["ids"]));
    let n = ids_.len();
    let t = Tensor::<2, Int>::from_data(TensorData::new(ids_.iter().map(|&x| x as i64).collect::<Vec<_>>(), [1, n]), &d);
    let rel = logits_rel_diff(&to_vec(fm.decoder.forward(t, None).unwrap()), fm.decoder.vocab_size(), &want["logits"]);
    assert!(rel <= 1e-4, "logits rel diff {rel}");
}

#[test]
fn generator_matches_reference_for_every_method() {
    let d = dev();
    let want = json("generator/expected.json");
    let dim = |k: &str| want[k].as_u64().unwrap() as usize;
    let (m, dd, h, hh, r) = (dim("m"), dim("d"), dim("h"), dim("H"), dim("r"));
    let f: Vec<f32> = want["f"].as_array().unwrap().iter().flat_map(floats).collect();
    let f = Tensor::<2>::from_data(TensorData::new(f, [2, h]), &d);
    // Every method that makes a soft prompt (LoRA makes none; tests/train_tiny.rs covers it).
    for method in Method::ALL {
        let cfg = GeneratorConfig { method, num_virtual_tokens: m, token_dim: dd, encoder_dim: h, hidden_dim: hh, rank: r, dropout: 0.1, task_prompt_init_std: 1.0 };
        let bytes = std::fs::read(fixture(&format!("generator/{}.safetensors", method.name()))).unwrap();
        let g = PromptGenerator::from_tensors(&cfg, &safetensors::parse(&bytes).unwrap().tensors, &d).unwrap();
        let z = g.forward(f.clone()).unwrap();
        let shape: Vec<usize> = want[method.name()]["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
        assert_eq!(z.dims().to_vec(), shape, "{method:?}");
        let diff = max_abs_diff(&to_vec(z), &floats(&want[method.name()]["z"]));
        assert!(diff <= 1e-5, "{method:?}: {diff}");
    }
}

#[test]
fn adapter_with_wrong_shapes_is_refused_with_the_tensor_named() {
    let d = dev();
    let bytes = std::fs::read(fixture("generator/lopa.safetensors")).unwrap();
    let w = safetensors::parse(&bytes).unwrap().tensors;
    let cfg = GeneratorConfig { method: Method::Lopa, num_virtual_tokens: 4, token_dim: 8, encoder_dim: 5, hidden_dim: 6, rank: 2, dropout: 0.1, task_prompt_init_std: 1.0 };
    let e = PromptGenerator::from_tensors(&cfg, &w, &d).unwrap_err().to_string();
    assert_eq!(e, "tensor `task_prompt`: expected shape [4, 8], found [3, 8]");
}

#[test]
fn truncated_and_corrupted_model_files_are_errors_not_panics() {
    let d = dev();
    let bytes = std::fs::read(fixture("tiny-llama.gguf")).unwrap();
    // Truncations across header, metadata, tensor infos and data.
    for cut in [0, 3, 7, 20, 100, 1000, 10_000, bytes.len() / 2, bytes.len() - 1] {
        let r = FoundationModel::from_gguf_bytes(&bytes[..cut], "cut", &d);
        assert!(r.is_err(), "cut at {cut} loaded");
    }
    let e = FoundationModel::from_gguf_bytes(&bytes[..bytes.len() - 1], "cut", &d).unwrap_err().to_string();
    assert!(e.starts_with("tensor `output_norm.weight`: data at offset"), "{e}");
    // Random single-byte corruption in the header region: an error or a model, never a panic.
    let mut state = 0x1234_5678u64;
    for _ in 0..300 {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut b = bytes.clone();
        let at = (state >> 33) as usize % 8192;
        b[at] ^= (state >> 13) as u8 | 1;
        let r = std::panic::catch_unwind(|| Gguf::parse(&b).map(|_| ()));
        assert!(r.is_ok(), "panic with byte {at} corrupted");
    }
    // A safetensors file that claims a tensor larger than its data.
    let st = std::fs::read(fixture("tiny-qwen2/model.safetensors")).unwrap();
    let e = safetensors::parse(&st[..st.len() - 10]).unwrap_err().to_string();
    assert!(e.contains("lie outside the") && e.starts_with("tensor `"), "{e}");
}

#[test]
fn nan_weights_are_refused() {
    let d = dev();
    let mut w = safetensors::parse(&std::fs::read(fixture("generator/pt.safetensors")).unwrap()).unwrap().tensors;
    let mut t = w.get("task_prompt").unwrap().clone();
    t.data[5] = f32::NAN;
    w.insert("task_prompt", t);
    let cfg = GeneratorConfig { method: Method::Pt, num_virtual_tokens: 3, token_dim: 8, encoder_dim: 5, hidden_dim: 6, rank: 2, dropout: 0.1, task_prompt_init_std: 1.0 };
    let e = PromptGenerator::from_tensors(&cfg, &w, &d).unwrap_err().to_string();
    assert_eq!(e, "tensor `task_prompt`: non-finite value NaN at flat index 5");
}

#[test]
fn sharded_checkpoint_loads_like_the_single_file() {
    let d = dev();
    let src = fixture("tiny-qwen2");
    let all = safetensors::parse(&std::fs::read(src.join("model.safetensors")).unwrap()).unwrap().tensors;
    let dir = std::env::temp_dir().join(format!("lopa-shards-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let names: Vec<&str> = all.names().collect();
    let (a, b) = names.split_at(names.len() / 2);
    let mut map = serde_json::Map::new();
    for (file, part) in [("model-00001-of-00002.safetensors", a), ("model-00002-of-00002.safetensors", b)] {
        let bytes = safetensors::write(part.iter().map(|n| (*n, all.get(n).unwrap())), &Default::default(), safetensors::StoreAs::F32);
        std::fs::write(dir.join(file), bytes).unwrap();
        part.iter().for_each(|n| drop(map.insert(n.to_string(), serde_json::json!(file))));
    }
    std::fs::write(dir.join("model.safetensors.index.json"), serde_json::to_vec(&serde_json::json!({"weight_map": map})).unwrap()).unwrap();
    let one = FoundationModel::load(&src, &d).unwrap();
    let two = FoundationModel::load(&dir, &d).unwrap();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 2, 3, 4], [1, 4]), &d);
    assert_eq!(to_vec(one.decoder.forward(ids.clone(), None).unwrap()), to_vec(two.decoder.forward(ids, None).unwrap()));
    // An index that points outside the folder is refused.
    std::fs::write(dir.join("model.safetensors.index.json"), br#"{"weight_map": {"x": "../evil.safetensors"}}"#).unwrap();
    let e = FoundationModel::load(&dir, &d).unwrap_err().to_string();
    assert_eq!(e, "config: model.safetensors.index.json names a file outside the model folder");
}

#[test]
fn scoring_continuations_equals_summed_logprobs_of_a_full_forward() {
    let d = dev();
    let fm = FoundationModel::load(fixture("tiny-llama.gguf"), &d).unwrap();
    let hd = fm.decoder.hidden_size();
    let z: Vec<f32> = (0..2 * hd).map(|i| ((i as f32) * 0.13).cos() * 0.5).collect();
    let prompt = fm.tokenizer.encode("the theme").unwrap();
    let cands = vec![fm.tokenizer.encode(" the").unwrap(), fm.tokenizer.encode(" of 42 tests").unwrap(), vec![7]];
    let got = lopa::model::generate::score_continuations(&fm.decoder, &prompt, Some(&lopa::model::SoftPrompt::new(z.clone(), 2, fm.decoder.hidden_size()).unwrap()), &cands, &d).unwrap();
    for (c, g) in cands.iter().zip(&got) {
        let ids: Vec<i64> = prompt.iter().chain(c).map(|&t| t as i64).collect();
        let n = ids.len();
        let zt = Tensor::<3>::from_data(TensorData::new(z.clone(), [1, 2, hd]), &d);
        let logits = to_vec(fm.decoder.forward(Tensor::<2, Int>::from_data(TensorData::new(ids, [1, n]), &d), Some(zt)).unwrap());
        let v = fm.decoder.vocab_size();
        let want: f32 = c.iter().enumerate().map(|(j, &t)| {
            let row = 2 + prompt.len() - 1 + j;
            lopa::model::sampling::log_softmax(&logits[row * v..(row + 1) * v])[t as usize]
        }).sum();
        assert!((g - want).abs() < 1e-4, "{g} vs {want}");
    }
}
