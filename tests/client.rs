//! The client path the browser package runs (encoder bundle + adapter bundle → soft prompt →
//! request), natively against the real MiniLM: bundles load back exactly, f16 and int8 cost a
//! measured amount, a foreign adapter is refused, and the requests parse as the server's own types.

mod common;

use lopa::adapter::{Adapter, AdapterMeta, ModelIdentity};
use lopa::model::encoder::bundle::encoder_bundle;
use lopa::client::{Answer, Chunk, Client, Input, RequestOptions};
use lopa::model::encoder::SentenceEncoder;
use lopa::model::generator::{GeneratorConfig, Method};
use lopa::wire::{CompletionChoice, CompletionRequest, CompletionResponse, Dtype, ErrorDetail, ErrorResponse, Score, ScoreRequest, ScoreResponse};
use lopa::model::sampling::FinishReason;
use lopa::task::TaskSpec;
use lopa::model::weights::safetensors::StoreAs;

/// The stated bound on int8 bundles' soft-prompt deviation from f32, relative to max(1, max |Z|).
const INT8_SOFT_PROMPT_TOLERANCE: f32 = 5e-3;

/// A random (untrained) LoPA adapter recorded against `enc`.
fn adapter(enc: &SentenceEncoder, task: &str) -> Adapter {
    let device = burn::tensor::Device::flex();
    let cfg = GeneratorConfig::new(Method::Lopa, 576, enc.hidden_size());
    let g = cfg.init(&device).unwrap();
    let meta = AdapterMeta {
        format: "lopa-adapter/1".into(),
        lopa_version: "test".into(),
        adaptation: lopa::model::adaptation::AdaptationConfig::Prompt(cfg),
        task: TaskSpec::builtin(task).unwrap(),
        foundation_model: ModelIdentity { id: "fm".into(), sha256: "0".repeat(64), hidden_size: 576 },
        encoder: Some(ModelIdentity { id: enc.id.clone(), sha256: enc.sha256.clone(), hidden_size: enc.hidden_size() }),
        encoder_pooling: Some(enc.pooling),
        encoder_normalize: enc.normalize,
    };
    Adapter { meta, weights: g.to_tensors().unwrap() }
}

#[test]
fn bundles_round_trip_and_requests_parse_as_the_server_types() {
    let Some((_, enc_dir)) = common::real_weights() else { return };
    let device = burn::tensor::Device::flex();
    let enc = SentenceEncoder::from_dir(&enc_dir, &device).unwrap();
    let weights = std::fs::read(enc_dir.join("model.safetensors")).unwrap();
    let tokenizer = std::fs::read(enc_dir.join("tokenizer.json")).unwrap();
    let a = adapter(&enc, "sst2");
    let direct = Client::new(enc.clone(), a.clone(), &device).unwrap();
    let input = Input::Text("  a gripping, funny film ".into());

    // f32 bundles reproduce the directory load exactly.
    let f32_client = Client::from_bundles(&encoder_bundle(&enc, &weights, StoreAs::F32).unwrap(), &tokenizer, &a.bundle(StoreAs::F32), &device).unwrap();
    let want = direct.query(&input).unwrap();
    let got = f32_client.query(&input).unwrap();
    assert_eq!((got.soft_prompt.rows(), got.soft_prompt.width()), (10, 576));
    assert_eq!(got.prompt, "a gripping, funny film It was", "classification fields are trimmed, as in training");
    assert_eq!(got.soft_prompt.values(), want.soft_prompt.values());

    // f16 bundles (what the browser downloads): the cost in soft-prompt units.
    let enc16 = encoder_bundle(&enc, &weights, StoreAs::F16).unwrap();
    let f16_client = Client::from_bundles(&enc16, &tokenizer, &a.bundle(StoreAs::F16), &device).unwrap();
    let half = f16_client.query(&input).unwrap();
    let diff = common::max_abs_diff(half.soft_prompt.values(), want.soft_prompt.values());
    let scale = want.soft_prompt.values().iter().fold(0f32, |m, v| m.max(v.abs()));
    println!("measured: f16 bundles vs f32: soft prompt max abs diff {diff:.2e} (values up to {scale:.3}); encoder bundle {:.1} MB", enc16.len() as f64 / 1e6);
    assert!(diff < 2e-3 * scale.max(1.0), "f16 bundles moved the soft prompt by {diff}");
    assert!(enc16.len() < weights.len() / 2 + 1_000_000);

    // int8 bundles (`lopa export-web`'s default): matrices int8, a scale per 64 columns. Measured
    // over several inputs against f32: the sentence embedding and the soft prompt.
    let enc8 = encoder_bundle(&enc, &weights, StoreAs::Int8).unwrap();
    let int8_client = Client::from_bundles(&enc8, &tokenizer, &a.bundle(StoreAs::Int8), &device).unwrap();
    // On the CPU the encoder's projections multiply the int8 values as integers; f32 files keep f32.
    let (l8, l32) = (&int8_client.encoder.bert.layers[0], &f32_client.encoder.bert.layers[0]);
    assert!([&l8.query, &l8.key, &l8.value, &l8.attention_output, &l8.intermediate, &l8.output].iter().all(|p| p.is_int8()));
    assert!(!l32.query.is_int8() && !l32.intermediate.is_int8());
    let texts = ["  a gripping, funny film ", "the plot is thin and the acting wooden", "", "Ünïcödé — 東京 ✓",
        "an overlong, self-indulgent and ultimately tiresome two hours that never finds its footing or its heart"];
    let (mut z_diff, mut e_diff, mut e_cos) = (0f32, 0f32, 1f32);
    for t in texts {
        let input = Input::Text(t.into());
        let (want, got) = (f32_client.query(&input).unwrap(), int8_client.query(&input).unwrap());
        z_diff = z_diff.max(common::max_abs_diff(got.soft_prompt.values(), want.soft_prompt.values()));
        let e = |c: &Client| c.encoder.embed(&[t], &device).unwrap().into_data().try_to_vec::<f32>().unwrap();
        let (e32, e8) = (e(&f32_client), e(&int8_client));
        e_diff = e_diff.max(common::max_abs_diff(&e8, &e32));
        e_cos = e_cos.min(e8.iter().zip(&e32).map(|(a, b)| a * b).sum::<f32>());
    }
    println!("measured: int8 bundles vs f32 over {} inputs: soft prompt max abs diff {z_diff:.2e} (values up to {scale:.3}); \
        embedding max abs diff {e_diff:.2e}, min cosine {e_cos:.5}; encoder bundle {:.2} MB, adapter bundle {:.2} MB (f16 {:.2} MB)",
        texts.len(), enc8.len() as f64 / 1e6, a.bundle(StoreAs::Int8).len() as f64 / 1e6, a.bundle(StoreAs::F16).len() as f64 / 1e6);
    assert!(z_diff < INT8_SOFT_PROMPT_TOLERANCE * scale.max(1.0), "int8 bundles moved the soft prompt by {z_diff}");
    assert!(e_cos > 0.999 && e_diff < 1e-2, "int8 embeddings: max abs diff {e_diff}, cosine {e_cos}");
    // The same bits on a pool of any size (the threaded browser module's arithmetic): the int8
    // projections split by rows or column bands, attention by heads.
    #[cfg(feature = "parallel")]
    {
        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
        let on = |threads: usize| {
            rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| {
                let z = int8_client.query(&Input::Text(texts[4].into())).unwrap().soft_prompt.values().to_vec();
                let e = int8_client.encoder.embed(&texts, &device).unwrap().into_data().try_to_vec::<f32>().unwrap();
                (bits(z), bits(e))
            })
        };
        let one = on(1);
        for threads in [2, 3] {
            assert!(on(threads) == one, "int8 client on {threads} threads differs from one thread");
        }
    }
    let download = enc8.len() + tokenizer.len() + a.bundle(StoreAs::Int8).len();
    assert!(download <= 25_000_000, "the default download (encoder, tokenizer, adapter) is {download} bytes");

    // Classification → /v1/score, exactly what the server's own type accepts.
    let req = direct.request(&want, &RequestOptions::default());
    assert_eq!(req.path(), "/v1/score");
    let score: ScoreRequest = serde_json::from_str(&req.body()).unwrap();
    assert_eq!(score.prompt, "a gripping, funny film It was");
    assert_eq!(score.candidates, vec![" terrible", " great"], "candidates in label order 0, 1");
    let sp = score.soft_prompt.unwrap();
    assert_eq!((sp.shape.clone(), sp.dtype.as_str()), (vec![10, 576], "f16"));
    let decoded = sp.decode(576, 64).unwrap();
    assert!(common::max_abs_diff(decoded.values(), want.soft_prompt.values()) <= 1e-3 * scale.max(1.0));
    let f32_req = direct.request(&want, &RequestOptions { dtype: Dtype::F32, ..Default::default() });
    let exact = serde_json::from_str::<ScoreRequest>(&f32_req.body()).unwrap().soft_prompt.unwrap().decode(576, 64).unwrap();
    assert_eq!(exact.values(), want.soft_prompt.values(), "f32 on the wire is exact");
    let bf16 = serde_json::from_str::<RequestOptions>(r#"{"dtype": "bf16"}"#).unwrap_err().to_string();
    assert!(bf16.starts_with("soft_prompt.dtype `bf16` is not supported (f32, f16)"), "{bf16}");

    // Generation → /v1/completions with the options.
    let gen = Client::new(enc.clone(), adapter(&enc, "cruxeval-o"), &device).unwrap();
    let fields = Input::Fields([("code".to_string(), "def f(x):\n    return x".to_string()), ("input".to_string(), "3".to_string())].into());
    let sp = gen.query(&fields).unwrap();
    let opts = RequestOptions { max_tokens: Some(20), temperature: Some(0.5), stop: Some(vec!["\n".into()]), stream: true, ..Default::default() };
    let req = gen.request(&sp, &opts);
    assert_eq!(req.path(), "/v1/completions");
    let c: CompletionRequest = serde_json::from_str(&req.body()).unwrap();
    assert_eq!((c.max_tokens, c.temperature, c.stream), (20, Some(0.5), true));
    assert!(c.prompt.contains("def f(x):\n    return x"), "code keeps its whitespace");

    // Inputs that do not fit the task.
    assert_eq!(direct.query(&Input::Fields(Default::default())).unwrap_err().to_string(), "input: task `sst2` needs the field `sentence`");
    assert_eq!(gen.query(&Input::Text("x".into())).unwrap_err().to_string(), "input: task `cruxeval-o` takes the fields {code, input}: pass an object, not a string");
}

#[test]
fn answers_are_read_with_the_servers_types_in_label_order() {
    let Some((_, enc_dir)) = common::real_weights() else { return };
    let device = burn::tensor::Device::flex();
    let enc = SentenceEncoder::from_dir(&enc_dir, &device).unwrap();
    let client = Client::new(enc.clone(), adapter(&enc, "sst2"), &device).unwrap();
    // What the server writes for candidates [" terrible", " great"] (labels 0, 1).
    let score = |p: [f32; 2]| ScoreResponse {
        object: "score".into(),
        model: "m".into(),
        scores: vec![Score { text: " terrible".into(), logprob: p[0].ln(), probability: p[0] }, Score { text: " great".into(), logprob: p[1].ln(), probability: p[1] }],
    };
    fn body<T: serde::Serialize>(v: &T) -> Vec<u8> {
        serde_json::to_vec(v).unwrap()
    }
    let a = client.read_answer("/v1/score", 200, &body(&score([0.25, 0.75]))).unwrap();
    assert_eq!(a, Answer::Classification { label: "1".into(), label_word: " great".into(), probabilities: [("0".to_string(), 0.25), ("1".to_string(), 0.75)].into() });
    let a = client.read_answer("/v1/score", 200, &body(&score([0.9, 0.1]))).unwrap();
    assert!(matches!(a, Answer::Classification { ref label, .. } if label == "0"), "{a:?}");
    // Refusals carry the server's message; anything else names what went wrong.
    let refusal = ErrorResponse { error: ErrorDetail { code: "soft_prompt_width".into(), message: "soft_prompt.shape [m, 5]: d must equal the model width 576".into() } };
    assert_eq!(client.read_answer("/v1/score", 400, &body(&refusal)).unwrap_err().to_string(), "lopa serve: soft_prompt.shape [m, 5]: d must equal the model width 576");
    assert_eq!(client.read_answer("/v1/score", 502, b"<html>bad gateway</html>").unwrap_err().to_string(), "lopa serve: HTTP 502");
    assert!(client.read_answer("/v1/score", 200, b"{}").unwrap_err().to_string().starts_with("lopa serve: an answer this client cannot read"));
    let one = ScoreResponse { scores: vec![score([0.5, 0.5]).scores[0].clone()], ..score([0.5, 0.5]) };
    assert_eq!(client.read_answer("/v1/score", 200, &body(&one)).unwrap_err().to_string(), "lopa serve: 1 scores for 2 candidates");
    // Completions and streamed chunks.
    let completion = |text: &str, finish| CompletionResponse {
        id: "cmpl-1".into(),
        object: "text_completion".into(),
        created: 0,
        model: "m".into(),
        choices: vec![CompletionChoice { index: 0, text: text.into(), logprobs: None, finish_reason: finish }],
        usage: None,
    };
    let a = client.read_answer("/v1/completions", 200, &body(&completion("6", Some(FinishReason::Stop)))).unwrap();
    assert_eq!(a, Answer::Generation { text: "6".into(), finish_reason: Some(FinishReason::Stop) });
    let data = String::from_utf8(body(&completion(" pie", None))).unwrap();
    assert_eq!(Client::read_chunk(&data).unwrap(), Chunk { text: " pie".into(), finish_reason: None });
    assert_eq!(Client::read_chunk(&String::from_utf8(body(&refusal)).unwrap()).unwrap_err().to_string(), "lopa serve: soft_prompt.shape [m, 5]: d must equal the model width 576");
    assert!(client.read_answer("/v1/nope", 200, b"{}").is_err());
}

#[test]
fn an_adapter_trained_with_another_encoder_is_refused() {
    let Some((_, enc_dir)) = common::real_weights() else { return };
    let device = burn::tensor::Device::flex();
    let enc = SentenceEncoder::from_dir(&enc_dir, &device).unwrap();
    let mut a = adapter(&enc, "sst2");
    a.meta.encoder.as_mut().unwrap().sha256 = "ab".repeat(32);
    a.meta.encoder.as_mut().unwrap().id = "bge-small".into();
    let e = Client::new(enc.clone(), a, &device).unwrap_err().to_string();
    assert_eq!(e, format!("config: adapter was trained with encoder bge-small (sha256 abababababab), not all-minilm-l6-v2 (sha256 {})", &enc.sha256[..12]));
}
