//! The toy training set-up several test binaries share, and the mixed-precision check that runs on
//! every backend a test has (flex in train_tiny, wgpu in wgpu_lavapipe, CUDA where there is one).

use burn::tensor::{DType, Device, Tensor};
use lopa::model::adaptation::AdaptationConfig;
use lopa::model::decoder::{FoundationModel, Precision};
use lopa::model::encoder::SentenceEncoder;
use lopa::model::generator::{GeneratorConfig, Method};
use lopa::training::examples::load_examples;
use lopa::training::{answer_logits, label_token_ids, loss, prepare, train, Models, Prepared, Quiet, Start, TrainConfig};
use std::path::{Path, PathBuf};

/// Eight short rows, two classes.
pub fn data_file(dir: &Path) -> PathBuf {
    let rows = ["the cat sat\t0", "a dog ran\t0", "the fox jumped\t0", "cats on the mat\t0", "hello world\t1", "hello hello\t1", "world hello\t1", "hello, world.\t1"];
    let p = dir.join("toy.tsv");
    std::fs::write(&p, format!("sentence\tlabel\n{}\n", rows.join("\n"))).unwrap();
    p
}

/// A small LoPA (or `method`) generator for the tiny models, trained on `file` for `epochs`.
pub fn config(file: PathBuf, method: Method, epochs: usize) -> TrainConfig {
    let mut g = GeneratorConfig::new(method, 64, 32);
    g.num_virtual_tokens = 4;
    g.rank = 2;
    g.hidden_dim = 16;
    g.task_prompt_init_std = 0.5;
    TrainConfig {
        task: super::toy_task(),
        train_file: file.clone(),
        dev_file: file,
        adaptation: AdaptationConfig::Prompt(g),
        learning_rate: 3e-2,
        warmup_ratio: 0.0,
        lr_schedule: Default::default(),
        weight_decay: 0.0,
        epochs,
        batch_size: 4,
        max_length: 64,
        seed: 7,
        train_limit: 0,
        dev_limit: 0,
        checkpoint_every: 0,
    }
}

/// Bounds of a half-precision run against f32's on the same device: one step's relative loss
/// difference and gradient cosine, then the worst relative difference over the loss curve (six
/// epochs at most).
const BOUNDS: [(Precision, f64, f64, f64); 2] = [(Precision::Bf16, 0.01, 0.995, 0.08), (Precision::F16, 0.002, 0.9999, 0.03)];

/// The frozen model (`fm`, on the autodiff device `ad`) in half precision trains the same
/// generator (f32 master weights and AdamW) as in f32: one step's loss and dLoss/dZ_S, and the
/// loss curve, stay within [`BOUNDS`]; the frozen weights are half while the generator's are not.
/// A half type the device has no arithmetic in is refused by `Precision::check` instead. Returns
/// the precisions that trained.
pub fn half_precision_follows_f32(plain: &Device, ad: &Device, fm: &FoundationModel, enc: &SentenceEncoder, dir: &Path, epochs: usize) -> Vec<Precision> {
    assert!((3..=6).contains(&epochs), "the bounds hold for 3 to 6 epochs");
    let cfg = config(data_file(dir), Method::Lopa, epochs);
    let curve = |p: Precision| {
        let fm = FoundationModel { decoder: fm.decoder.clone().with_precision(p), ..fm.clone() };
        assert_eq!(fm.decoder.precision(), p);
        let s = train(&cfg, Models { fm: &fm, encoder: Some(enc), encoder_device: plain, device: ad }, &dir.join(format!("{p:?}")), Start::Fresh, &mut Quiet).unwrap();
        s.epochs.iter().map(|e| e.train_loss).collect::<Vec<_>>()
    };
    let mut supported = vec![];
    for (p, ..) in BOUNDS {
        match p.check(ad) {
            Ok(()) => supported.push(p),
            Err(e) => {
                eprintln!("{p:?} refused on this device: {e}");
                assert!(e.to_string().contains("no arithmetic"), "{e}");
                assert!(!ad.supports_dtype(p.dtype()));
            }
        }
    }
    let f32_curve = curve(Precision::F32);
    // One step from the same start: the loss and dLoss/dZ_S against f32's.
    let a = cfg.adaptation.init(ad).unwrap();
    let ex = load_examples(&cfg.task, &cfg.train_file).unwrap();
    let mut data = prepare(&ex, &cfg.train_file, fm, Some(enc), 64, plain).unwrap();
    let ids = label_token_ids(&cfg.task, fm).unwrap();
    data.iter_mut().for_each(|p| p.answer = vec![ids[p.label]]);
    let batch: Vec<&Prepared> = data.iter().collect();
    let step = |p: Precision| {
        ad.seed(1); // the same dropout masks
        let decoder = fm.decoder.clone().with_precision(p);
        let l = loss(answer_logits(&decoder, Some(&a), &batch, ad).unwrap(), &batch, ad);
        let grads = l.backward();
        let g = a.generator().unwrap().task_prompt.as_ref().unwrap().val().grad(&grads).unwrap();
        (l.into_scalar::<f32>() as f64, lopa::device::to_vec(g).unwrap())
    };
    let (l32, g32) = step(Precision::F32);
    for (p, loss_tol, cos_min, curve_tol) in BOUNDS.into_iter().filter(|b| supported.contains(&b.0)) {
        let (l, g) = step(p);
        let dot: f64 = g.iter().zip(&g32).map(|(a, b)| *a as f64 * *b as f64).sum();
        let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let cos = dot / (norm(&g) * norm(&g32));
        eprintln!("{p:?} one step: loss {l} vs {l32} ({:.2e} relative), gradient cosine {cos:.6}", ((l - l32) / l32).abs());
        assert!(((l - l32) / l32).abs() <= loss_tol && cos >= cos_min, "{p:?}: loss {l} vs {l32}, gradient cosine {cos}");
        // Trajectories drift apart step by step, within these bounds on this model.
        let half = curve(p);
        let worst = half.iter().zip(&f32_curve).map(|(h, f)| ((h - f) / f).abs()).fold(0.0, f64::max);
        eprintln!("{p:?}: {half:?} vs f32 {f32_curve:?}: worst relative difference {worst:.4}");
        assert!(worst <= curve_tol, "{p:?} loss curve {half:?} is more than {curve_tol} from f32's {f32_curve:?}");
        assert!(half.last().unwrap() < &(half[0] * 0.8), "{p:?} did not learn: {half:?}");
        // What is half and what is not: the frozen projections and embeddings are; norms and
        // the generator (its master weights, trained by AdamW) are f32.
        let d = fm.decoder.clone().with_precision(p);
        let half_dtype = if p == Precision::Bf16 { DType::BF16 } else { DType::F16 };
        let dtype = |t: Tensor<2>| t.dtype();
        assert_eq!(dtype(d.layers[0].self_attn.q_proj.weight.val()), half_dtype);
        assert_eq!(dtype(d.embed_tokens.val()), half_dtype);
        assert_eq!(d.norm.gamma.val().dtype(), DType::F32);
    }
    assert_eq!(a.generator().unwrap().task_prompt.as_ref().unwrap().val().dtype(), DType::F32);
    supported
}
