//! Personalisation through the endpoint equals training the same generator end to end: the
//! client's chain rule over the endpoint's dLoss/dZ gives the parameters that local autodiff
//! through the whole frozen model gives, step after step (tiny models, real HTTP).
#![cfg(feature = "server")]

mod common;
use burn::module::Module;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamWConfig, GradientsParams, SgdConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use common::fixture;
use lopa::adapter::{Adapter, AdapterMeta};
use lopa::client::personalize::{LabelledInput, Optimizer, PersonalizeOptions, Personalizer};
use lopa::client::{Client, Input};
use lopa::endpoint::engine::Engine;
use lopa::wire::{GradientResponse, GRADIENT_PATH};
use lopa::endpoint::{Backend, ServeConfig};
use lopa::model::adaptation::AdaptationConfig;
use lopa::model::decoder::FoundationModel;
use lopa::model::generate::teacher_forced_logits;
use lopa::model::generator::{GeneratorConfig, Method, PromptGenerator};
use std::net::SocketAddr;

fn start(fm: &FoundationModel) -> SocketAddr {
    let cfg = ServeConfig::default();
    let backend = Backend::Embedded(Engine::start(fm.clone(), Device::flex(), cfg.engine.clone()));
    common::serve_in_thread(fm, backend, cfg)
}

fn post(addr: SocketAddr, body: &[u8]) -> GradientResponse {
    let (_, text) = common::http_post(addr, GRADIENT_PATH, body);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn params<M: Module>(m: &M) -> Vec<f32> {
    struct V(Vec<f32>);
    impl burn::module::ModuleVisitor for V {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
            self.0.extend(p.val().into_data().try_to_vec::<f32>().unwrap());
        }
    }
    let mut v = V(vec![]);
    m.visit(&mut v);
    v.0
}

#[test]
fn the_endpoint_loop_equals_end_to_end_training() {
    let plain = Device::flex();
    let ad = plain.clone().autodiff();
    let fm = FoundationModel::load(fixture("tiny-llama.gguf"), &plain).unwrap();
    let enc = common::tiny_encoder(&plain);
    let mut g = GeneratorConfig::new(Method::Lopa, 64, 32);
    (g.num_virtual_tokens, g.rank, g.hidden_dim, g.dropout) = (4, 2, 16, 0.0);
    let cfg = AdaptationConfig::Prompt(g.clone());
    ad.seed(5);
    let start_weights = g.init(&ad).unwrap().to_tensors().unwrap();
    let adapter = Adapter { meta: AdapterMeta::new(&cfg, &common::toy_task(), &fm, Some(&enc)), weights: start_weights.clone() };
    let client = Client::new(enc.clone(), adapter, &plain).unwrap();

    let rows = [("the cat sat", "0"), ("a dog ran", "0"), ("hello world", "1"), ("hello hello", "1"), ("the fox", "0"), ("world hello", "1")];
    let examples: Vec<LabelledInput> = rows.iter().map(|(s, l)| LabelledInput { input: Input::Text(s.to_string()), label: l.to_string() }).collect();
    let texts: Vec<_> = examples.iter().map(|e| client.training_text(e).unwrap()).collect();
    assert_eq!((texts[0].prompt.as_str(), texts[0].target.as_str(), texts[2].target.as_str()), ("the cat sat:", " t", " the"));
    assert!(client.training_text(&LabelledInput { input: Input::Text("x".into()), label: "2".into() }).is_err(), "an unknown label is refused");

    // Through the endpoint: every example in each step, so the order inside a batch is all that
    // shuffling changes. Both optimizers, each against burn's own on the end-to-end graph.
    let options = PersonalizeOptions { learning_rate: 1e-2, batch_size: rows.len(), weight_decay: 0.01, seed: 3, ..PersonalizeOptions::default() };
    let addr = start(&fm);
    let feats = lopa::device::to_vec(enc.embed(&texts.iter().map(|t| t.encoder_text.as_str()).collect::<Vec<_>>(), &plain).unwrap()).unwrap();
    let ids: Vec<(Vec<u32>, Vec<u32>)> = texts.iter().map(|t| (fm.tokenizer.encode(&t.prompt).unwrap(), fm.tokenizer.encode(&t.target).unwrap())).collect();
    let fm_ad = FoundationModel::load(fixture("tiny-llama.gguf"), &ad).unwrap();
    let mut remote = None;
    for optimizer in [Optimizer::AdamW, Optimizer::Sgd] {
        // SGD's steps are the learning rate times the gradient (here about 10): a larger rate.
        let options = PersonalizeOptions { optimizer, learning_rate: if optimizer == Optimizer::Sgd { 0.1 } else { 1e-2 }, ..options.clone() };
        let mut p = Personalizer::new(&client, &texts, options.clone(), &ad).unwrap();
        let mut remote_losses = vec![];
        for _ in 0..4 {
            let request = p.next_request().unwrap();
            let answer = post(addr, &serde_json::to_vec(&request).unwrap());
            remote_losses.push(p.apply(&answer).unwrap().loss);
        }
        let adapter = p.adapter().unwrap();

        // End to end in one process: the generator and the frozen model under one autodiff graph.
        let mut local = PromptGenerator::from_tensors(&g, &start_weights, &ad).unwrap();
        let mut optim = match optimizer {
            Optimizer::AdamW => AdamWConfig::new().with_weight_decay(0.01).init(),
            Optimizer::Sgd => SgdConfig::new().with_weight_decay(Some(WeightDecayConfig::new(0.01))).init(),
        };
        let n = texts.len();
        let mut local_losses = vec![];
        for _ in 0..4 {
            let z = local.forward(Tensor::<2>::from_data(TensorData::new(feats.clone(), [n, 32]), &ad)).unwrap();
            let pairs: Vec<(&[u32], &[u32])> = ids.iter().map(|(a, b)| (a.as_slice(), b.as_slice())).collect();
            let logits = teacher_forced_logits(&fm_ad.decoder, Some(z), &pairs, &ad).unwrap();
            let targets: Vec<i64> = ids.iter().map(|(_, t)| t[0] as i64).collect();
            // One-token targets: the mean over examples of each target's NLL.
            let loss = burn::tensor::activation::log_softmax(logits, 1).gather(1, Tensor::<2, Int>::from_data(TensorData::new(targets, [n, 1]), &ad)).mean().neg();
            local_losses.push(loss.clone().into_scalar::<f32>());
            let mut grads = loss.backward();
            let grads = GradientsParams::from_module(&mut grads, &local);
            local = optim.step(options.learning_rate, local, grads);
        }
        let (a, b, a0) = (params(&PromptGenerator::from_tensors(&g, &adapter.weights, &plain).unwrap()), params(&local), params(&PromptGenerator::from_tensors(&g, &start_weights, &plain).unwrap()));
        let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        let moved = a.iter().zip(&a0).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        eprintln!("{optimizer:?}: losses through the endpoint {remote_losses:?}, end to end {local_losses:?}; largest parameter difference after 4 steps {worst:.2e} (moved {moved:.2e})");
        for (r, l) in remote_losses.iter().zip(&local_losses) {
            assert!((r - l).abs() <= 1e-4 * l.abs().max(1.0), "{optimizer:?}: loss {r} vs {l}");
        }
        assert!(worst <= 1e-5 * moved.max(1.0) && moved >= 1e-3, "{optimizer:?}: parameters differ by {worst}, moved {moved}");
        assert!(remote_losses[3] < remote_losses[0], "{optimizer:?}: the loss must fall: {remote_losses:?}");
        assert_ne!(adapter.weights.get("task_prompt"), start_weights.get("task_prompt"), "the adapter must have changed");
        remote.get_or_insert(adapter);
    }
    let remote = remote.unwrap();
    for (field, bad) in [("learning_rate", PersonalizeOptions { learning_rate: 0.0, ..options.clone() }), ("epsilon", PersonalizeOptions { epsilon: f64::NAN, ..options.clone() }), ("weight_decay", PersonalizeOptions { weight_decay: -1.0, ..options.clone() })] {
        assert!(matches!(Personalizer::new(&client, &texts, bad, &ad), Err(lopa::Error::Input(_))), "a bad {field} is refused");
    }
    // One file, as the browser exports it, loads where an adapter folder does (`lopa eval --adapter FILE`).
    let file = std::env::temp_dir().join(format!("lopa-personal-{}.safetensors", std::process::id()));
    std::fs::write(&file, remote.bundle(lopa::model::weights::safetensors::StoreAs::F32)).unwrap();
    let back = Adapter::load(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    assert_eq!(back.weights.get("task_prompt"), remote.weights.get("task_prompt"));
    // From scratch: fresh weights of the adapter's shape, not its trained ones.
    let scratch = Personalizer::new(&client, &texts, PersonalizeOptions { from_scratch: true, ..options }, &ad).unwrap().adapter().unwrap();
    let (a, b) = (scratch.weights.get("task_prompt").unwrap(), start_weights.get("task_prompt").unwrap());
    assert!(a.shape == b.shape && a.data != b.data, "from scratch must start from other weights of the same shape");
    // The personalised adapter is a normal adapter: it reloads into a client.
    Client::new(enc, remote, &plain).unwrap();
}
