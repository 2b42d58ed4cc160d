//! Training on tiny random models: the frozen models stay bit-for-bit unchanged, only Z_S and
//! the heads get gradients, the loss goes down and accuracy rises above chance, resume works, and
//! bad data is refused before the first step.

mod common;
use burn::module::Module;
use burn::tensor::{Device, Tensor};
use common::fixture;
use common::training::{config, data_file};
use lopa::model::decoder::{FoundationModel, Precision};
use lopa::model::encoder::SentenceEncoder;
use lopa::model::adaptation::{Adaptation, AdaptationConfig, AdaptationKind};
use lopa::model::generator::Method;

use lopa::task::{Metric, TaskSpec};
use lopa::training::examples::load_examples;
use lopa::training::{answer_logits, label_token_ids, loss, prepare, train, Models, Prepared, Quiet, Start, TrainConfig};
use std::path::PathBuf;

struct Setup {
    /// Held for the whole test: the backend's random generator (dropout) is one per process, so
    /// trainings in parallel threads would draw each other's masks.
    _serial: std::sync::MutexGuard<'static, ()>,
    plain: Device,
    ad: Device,
    fm: FoundationModel,
    enc: SentenceEncoder,
}

/// The tiny llama (on the autodiff device, frozen) and the tiny BERT (plain device).
fn setup() -> Setup {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let plain = Device::flex();
    let ad = plain.clone().autodiff();
    let fm = FoundationModel::load(fixture("tiny-llama.gguf"), &ad).unwrap();
    Setup { _serial: serial, enc: common::tiny_encoder(&plain), plain, ad, fm }
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lopa-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn host_params<M: Module>(m: &M) -> Vec<Vec<f32>> {
    // Read every parameter back to the host (exact comparison; no GPU-side sums).
    let mut out = vec![];
    struct V<'a>(&'a mut Vec<Vec<f32>>);
    impl burn::module::ModuleVisitor for V<'_> {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
            self.0.push(p.val().into_data().try_to_vec::<f32>().unwrap());
        }
    }
    m.visit(&mut V(&mut out));
    out
}

#[test]
fn frozen_models_are_bit_for_bit_unchanged_and_only_the_generator_gets_gradients() {
    let Setup { plain, ad, fm, enc, _serial } = setup();
    let dir = tmpdir("frozen");
    let cfg = config(data_file(&dir), Method::Lopa, 2);

    // Gradients of one step: present for Z_S and the heads, absent for every frozen weight.
    let a = cfg.adaptation.init(&ad).unwrap();
    let g = a.generator().unwrap();
    let ex = load_examples(&cfg.task, &cfg.train_file).unwrap();
    let mut data = prepare(&ex, &cfg.train_file, &fm, Some(&enc), 64, &plain).unwrap();
    let ids = label_token_ids(&cfg.task, &fm).unwrap();
    data.iter_mut().for_each(|p| p.answer = vec![ids[p.label]]);
    let batch: Vec<&Prepared> = data.iter().take(4).collect();
    let grads = loss(answer_logits(&fm.decoder, Some(&a), &batch, &ad).unwrap(), &batch, &ad).backward();
    assert!(g.task_prompt.as_ref().unwrap().val().grad(&grads).is_some(), "Z_S must get a gradient");
    assert!(g.u_head.as_ref().unwrap().output.weight.val().grad(&grads).is_some());
    assert!(g.v_head.as_ref().unwrap().hidden.weight.val().grad(&grads).is_some());
    assert!(fm.decoder.embed_tokens.val().grad(&grads).is_none(), "frozen embeddings got a gradient");
    assert!(fm.decoder.layers[0].self_attn.q_proj.weight.val().grad(&grads).is_none());
    assert!(fm.decoder.layers[1].mlp.down_proj.weight.val().grad(&grads).is_none());
    assert!(fm.decoder.norm.gamma.val().grad(&grads).is_none());

    // A whole training run leaves every frozen parameter exactly as it was.
    let before_fm = host_params(&fm.decoder);
    let before_enc = host_params(&enc.bert);
    let s = train(&cfg, Models { fm: &fm, encoder: Some(&enc), encoder_device: &plain, device: &ad }, &dir.join("run"), Start::Fresh, &mut Quiet).unwrap();
    assert_eq!(s.epochs.len(), 2);
    assert!(before_fm == host_params(&fm.decoder), "decoder weights changed");
    assert!(before_enc == host_params(&enc.bert), "encoder weights changed");
}

#[test]
fn lopa_learns_a_toy_task_and_resume_continues() {
    let Setup { plain, ad, fm, enc, _serial } = setup();
    let dir = tmpdir("learn");
    let run = dir.join("run");
    let cfg = config(data_file(&dir), Method::Lopa, 12);
    let first = TrainConfig { epochs: 6, ..cfg.clone() };
    let s1 = train(&first, Models { fm: &fm, encoder: Some(&enc), encoder_device: &plain, device: &ad }, &run, Start::Fresh, &mut Quiet).unwrap();
    let s2 = train(&cfg, Models { fm: &fm, encoder: Some(&enc), encoder_device: &plain, device: &ad }, &run, Start::Resume, &mut Quiet).unwrap();
    // Resume picks up after epoch 6 instead of starting over.
    assert_eq!(s2.epochs.iter().map(|e| e.epoch).collect::<Vec<_>>(), (1..=12).collect::<Vec<_>>());
    let first_loss = s1.epochs[0].train_loss;
    let last_loss = s2.epochs.last().unwrap().train_loss;
    assert!(last_loss < first_loss * 0.5, "loss {first_loss} -> {last_loss}");
    // 8 examples, 2 balanced classes: chance is 0.5.
    assert!(s2.best_dev_accuracy >= 0.875, "accuracy {}", s2.best_dev_accuracy);
    for f in ["best/adapter.json", "best/adapter.safetensors", "last/checkpoint.json", "metrics.jsonl", "loss.svg"] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    let lines = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines().count();
    assert_eq!(lines, 12);
    // The best adapter reloads, reproduces its dev accuracy, and exports Z_S for PEFT.
    let a = lopa::adapter::Adapter::load(&run.join("best")).unwrap();
    a.meta.check_compatible(&fm, Some(&enc)).unwrap();
    let g = Adaptation::from_tensors(&a.meta.adaptation, &a.weights, &plain).unwrap();
    let ex = load_examples(&cfg.task, &cfg.dev_file).unwrap();
    let fm_plain = FoundationModel::load(fixture("tiny-llama.gguf"), &plain).unwrap();
    let data = prepare(&ex, &cfg.dev_file, &fm_plain, Some(&enc), 64, &plain).unwrap();
    let ids = label_token_ids(&cfg.task, &fm_plain).unwrap();
    let preds = lopa::training::predict(&fm_plain.decoder, Some(&g), &data, &ids, 8, &plain).unwrap();
    let acc = preds.iter().zip(&data).filter(|(p, d)| **p == d.label).count() as f64 / data.len() as f64;
    assert_eq!(acc, s2.best_dev_accuracy);
    a.export_peft(&run.join("peft"), &fm_plain).unwrap();
    let peft: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("peft/adapter_config.json")).unwrap()).unwrap();
    assert_eq!((peft["peft_type"].as_str(), peft["num_virtual_tokens"].as_u64(), peft["token_dim"].as_u64()), (Some("PROMPT_TUNING"), Some(4), Some(64)));
    let st = lopa::model::weights::safetensors::parse(&std::fs::read(run.join("peft/adapter_model.safetensors")).unwrap()).unwrap();
    assert_eq!(st.tensors.get("prompt_embeddings").unwrap(), a.weights.get("task_prompt").unwrap());
    // An adapter is refused by a different frozen model.
    let other = FoundationModel::load(fixture("tiny-qwen2"), &plain).unwrap();
    let e = a.meta.check_compatible(&other, Some(&enc)).unwrap_err().to_string();
    assert!(e.starts_with("config: adapter was trained with foundation model tiny-llama.gguf (sha256 "), "{e}");
}

#[test]
fn too_long_inputs_are_refused_before_training_with_file_and_line() {
    let Setup { plain, ad, fm, enc, _serial } = setup();
    let dir = tmpdir("long");
    let file = data_file(&dir);
    let cfg = TrainConfig { max_length: 8, ..config(file.clone(), Method::Lopa, 1) };
    let e = train(&cfg, Models { fm: &fm, encoder: Some(&enc), encoder_device: &plain, device: &ad }, &dir.join("run"), Start::Fresh, &mut Quiet).unwrap_err().to_string();
    assert!(e.starts_with(&format!("input: {}:", file.display())) && e.contains("longer than the maximum of 8"), "{e}");
    assert!(!dir.join("run/metrics.jsonl").exists(), "training started anyway");
    // A label word that is two tokens is refused too.
    let mut t = common::toy_task();
    t.label_words.insert("1".into(), " hello".into());
    let cfg = TrainConfig { task: t, ..config(file, Method::Lopa, 1) };
    let e = train(&cfg, Models { fm: &fm, encoder: Some(&enc), encoder_device: &plain, device: &ad }, &dir.join("run2"), Start::Fresh, &mut Quiet).unwrap_err().to_string();
    assert!(e.contains("label word \" hello\" is"), "{e}");
}

#[test]
fn every_method_trains_one_epoch() {
    let Setup { plain, ad, fm, enc, _serial } = setup();
    let dir = tmpdir("methods");
    let file = data_file(&dir);
    for kind in AdaptationKind::ALL {
        let cfg = match kind {
            AdaptationKind::Prompt(m) => config(file.clone(), m, 1),
            AdaptationKind::Lora => TrainConfig { adaptation: AdaptationConfig::Lora(fm.config.lora(4, 8.0)), ..config(file.clone(), Method::Lopa, 1) },
        };
        let s = train(&cfg, Models { fm: &fm, encoder: Some(&enc), encoder_device: &plain, device: &ad }, &dir.join(kind.name()), Start::Fresh, &mut Quiet).unwrap();
        assert!(s.epochs[0].train_loss.is_finite(), "{kind:?}");
        assert_eq!(s.trainable_parameters, cfg.adaptation.trainable_parameters());
    }
}

#[test]
fn lora_starts_at_the_frozen_model_learns_and_changes_only_itself() {
    let Setup { plain, ad, fm, enc, _serial } = setup();
    let dir = tmpdir("lora");
    let cfg = TrainConfig { adaptation: AdaptationConfig::Lora(fm.config.lora(4, 8.0)), ..config(data_file(&dir), Method::Lopa, 12) };
    let g = cfg.adaptation.init(&ad).unwrap();
    let ex = load_examples(&cfg.task, &cfg.train_file).unwrap();
    let mut data = prepare(&ex, &cfg.train_file, &fm, None, 64, &plain).unwrap();
    let ids = label_token_ids(&cfg.task, &fm).unwrap();
    data.iter_mut().for_each(|p| p.answer = vec![ids[p.label]]);
    let batch: Vec<&Prepared> = data.iter().take(4).collect();
    // B = 0 at init: the adapted model is exactly the frozen one.
    let plain_logits = lopa::model::generate::teacher_forced_logits(&fm.decoder, None, &batch.iter().map(|p| (p.ids.as_slice(), p.answer.as_slice())).collect::<Vec<_>>(), &ad).unwrap();
    let lora_logits = answer_logits(&fm.decoder, Some(&g), &batch, &ad).unwrap();
    assert_eq!(plain_logits.clone().into_data().try_to_vec::<f32>().unwrap(), lora_logits.clone().into_data().try_to_vec::<f32>().unwrap());
    // Gradients reach A and B of every layer, never the frozen weights.
    let grads = loss(lora_logits, &batch, &ad).backward();
    let Adaptation::Lora(lora) = &g else { panic!("a LoRA config makes a LoRA") };
    assert!(lora.layers[0].q_proj.lora_b.val().grad(&grads).is_some(), "B must get a gradient");
    assert!(lora.layers[1].v_proj.lora_b.val().grad(&grads).is_some());
    assert!(fm.decoder.layers[0].self_attn.q_proj.weight.val().grad(&grads).is_none(), "frozen q_proj got a gradient");
    // Training learns the toy task and leaves the frozen decoder bit-for-bit unchanged.
    let before = host_params(&fm.decoder);
    let s = train(&cfg, Models { fm: &fm, encoder: None, encoder_device: &plain, device: &ad }, &dir.join("run"), Start::Fresh, &mut Quiet).unwrap();
    assert!(before == host_params(&fm.decoder), "decoder weights changed");
    assert!(s.best_dev_accuracy >= 0.9, "LoRA did not learn the toy task: {}", s.best_dev_accuracy);
    // And it is refused where only soft prompts can go.
    let a = lopa::adapter::Adapter::load(&dir.join("run/best")).unwrap();
    assert_eq!(a.meta.adaptation.kind(), AdaptationKind::Lora);
    let e = lopa::client::Client::new(enc, a, &plain).unwrap_err().to_string();
    assert_eq!(e, "config: a `lora` adapter changes the server's model; it cannot run on the client as a soft prompt");
}

#[test]
fn generation_task_learns_its_answer_tokens() {
    let Setup { plain, ad, fm, enc, _serial } = setup();
    let dir = tmpdir("gen");
    let file = data_file(&dir);
    let mut cfg = config(file.clone(), Method::Lopa, 40);
    cfg.task = TaskSpec {
        name: "toy-gen".into(),
        kind: lopa::task::TaskKind::Generation,
        template: "{sentence}:".into(),
        encoder_template: "{sentence}".into(),
        label_column: String::new(),
        label_words: Default::default(),
        metric: Metric::ExactMatch,
        positive_label: None,
        answer_template: Some(" the\n".into()),
        check: None,
        // Evaluated on its own rows: this checks that greedy generation behind the trained soft
        // prompt reproduces the teacher-forced answer (a random tiny model does not generalise).
        train_rows: Some([0, 6]),
        dev_rows: Some([0, 6]),
    };
    let s = train(&cfg, Models { fm: &fm, encoder: Some(&enc), encoder_device: &plain, device: &ad }, &dir.join("run"), Start::Fresh, &mut Quiet).unwrap();
    assert!(s.epochs.last().unwrap().train_loss < s.epochs[0].train_loss * 0.5, "{:?}", s.epochs.iter().map(|e| e.train_loss).collect::<Vec<_>>());
    assert_eq!(s.train_examples, 6);
    assert_eq!(s.dev_examples, 6);
    assert_eq!(s.best_dev_accuracy, 1.0, "the generated answer must be exactly ` the`");

    // Zero-shot on a generation task scores the frozen model's own greedy answers: the same
    // rows answered here by `generate` on the bare decoder (no soft prompt, no LoRA).
    use lopa::model::generate::{generate, GenerationRequest};
    use lopa::model::sampling::SamplingParams;
    let rows = lopa::training::examples::load_rows(&cfg.task, &file, cfg.task.dev_rows).unwrap();
    let data = lopa::training::prepare(&rows, &file, &fm, None, usize::MAX, &ad).unwrap();
    let max_tokens = data.iter().map(|p| p.answer.len()).max().unwrap() + 8;
    let params = SamplingParams { max_tokens, stop_token_ids: fm.tokenizer.eos_token_ids.clone(), ..Default::default() };
    let reqs: Vec<_> = data.iter().map(|p| GenerationRequest { prompt_ids: p.ids.clone(), soft_prompt: None }).collect();
    let bare = generate(&fm.decoder, &reqs, &params, &ad).unwrap();
    let right = bare.iter().filter(|g| fm.tokenizer.decode(&g.tokens).unwrap().split('\n').next().unwrap().trim() == "the").count();
    let (zero_shot, f1) = lopa::training::zero_shot(&cfg.task, &file, 0, &fm, &ad).unwrap();
    assert_eq!(f1, None);
    assert_eq!(zero_shot, right as f64 / 6.0, "zero-shot must score the bare model's greedy answers");
    assert!(zero_shot < 1.0, "the untrained model already answers ` the` everywhere: the toy task tests nothing");
}

/// Panics after the given optimizer step, the way a kill stops a run: nothing more is written.
struct KillAfter(usize, usize);
impl lopa::training::Progress for KillAfter {
    fn step(&mut self, _: usize, _: usize, _: usize, _: f64, _: f64) {
        self.1 += 1;
        if self.1 == self.0 {
            panic!("killed after step {}", self.0);
        }
    }
    fn epoch(&mut self, _: &lopa::training::EpochMetrics) {}
}

/// What must match between two runs: the files' bytes, and the metrics without wall times.
fn run_state(run: &std::path::Path) -> (Vec<Vec<u8>>, Vec<serde_json::Value>) {
    let files = ["last/adapter.safetensors", "last/optimizer.safetensors", "best/adapter.safetensors"].map(|f| std::fs::read(run.join(f)).unwrap()).to_vec();
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            o.remove("seconds");
            o.remove("samples_per_sec");
            v
        })
        .collect();
    (files, metrics)
}

#[test]
fn a_run_killed_mid_epoch_resumes_bit_for_bit() {
    let Setup { plain, ad, fm, enc, _serial } = setup();
    let dir = tmpdir("exact");
    // 8 rows in batches of 2: 4 steps an epoch. Checkpoints at steps 3, 4 (epoch end), 6, 8, 9, 12.
    let cfg = TrainConfig { batch_size: 2, checkpoint_every: 3, weight_decay: 0.01, warmup_ratio: 0.25, ..config(data_file(&dir), Method::Lopa, 3) };
    let whole = train(&cfg, Models { fm: &fm, encoder: Some(&enc), encoder_device: &plain, device: &ad }, &dir.join("whole"), Start::Fresh, &mut Quiet).unwrap();

    // Killed after step 7, before step 8's epoch-end checkpoint: the last one is step 6, mid-epoch 2.
    let run = dir.join("killed");
    let killed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| train(&cfg, Models { fm: &fm, encoder: Some(&enc), encoder_device: &plain, device: &ad }, &run, Start::Fresh, &mut KillAfter(7, 0))));
    assert!(killed.is_err(), "the run must have been stopped");
    let ck: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("last/checkpoint.json")).unwrap()).unwrap();
    assert_eq!((ck["epoch"].as_u64(), ck["step"].as_u64(), ck["step_in_epoch"].as_u64()), (Some(1), Some(6), Some(2)));
    let copy = dir.join("without-moments");
    std::fs::create_dir_all(copy.join("last")).unwrap();
    for f in ["adapter.json", "adapter.safetensors", "checkpoint.json"] {
        std::fs::copy(run.join("last").join(f), copy.join("last").join(f)).unwrap();
    }
    std::fs::write(copy.join("metrics.jsonl"), std::fs::read(run.join("metrics.jsonl")).unwrap()).unwrap();

    let resumed = train(&cfg, Models { fm: &fm, encoder: Some(&enc), encoder_device: &plain, device: &ad }, &run, Start::Resume, &mut Quiet).unwrap();
    let (want_files, want_metrics) = run_state(&dir.join("whole"));
    let (got_files, got_metrics) = run_state(&run);
    assert_eq!(got_metrics, want_metrics);
    assert!(got_files == want_files, "resumed parameters or optimizer state differ from the uninterrupted run");
    let losses = |s: &lopa::training::TrainSummary| s.epochs.iter().map(|e| e.train_loss.to_bits()).collect::<Vec<_>>();
    assert_eq!(losses(&resumed), losses(&whole));
    assert_eq!((resumed.best_epoch, resumed.best_dev_accuracy.to_bits()), (whole.best_epoch, whole.best_dev_accuracy.to_bits()));

    // The same checkpoint without AdamW's moments continues differently: they are what makes it exact.
    train(&cfg, Models { fm: &fm, encoder: Some(&enc), encoder_device: &plain, device: &ad }, &copy, Start::Resume, &mut Quiet).unwrap();
    assert_ne!(std::fs::read(copy.join("last/adapter.safetensors")).unwrap(), want_files[0]);
}

/// The frozen model in half precision trains the same generator (f32 master weights and AdamW):
/// its loss curve follows f32's, and the frozen weights are half while the generator's are not.
#[test]
fn half_precision_follows_the_f32_loss_curve() {
    let Setup { plain, ad, fm, enc, _serial } = setup();
    let trained = common::training::half_precision_follows_f32(&plain, &ad, &fm, &enc, &tmpdir("precision"), 6);
    assert_eq!(trained, [Precision::Bf16, Precision::F16], "flex computes in both half types");
}

