//! `lopa bench-train`: training throughput (samples/s) with random weights of the default
//! models' shapes, and optionally the largest matmul alone.

use burn::optim::{AdamWConfig, GradientsParams};
use lopa::device::BackendChoice;
use lopa::model::adaptation::Adaptation;
use lopa::model::decoder::Precision;
use lopa::model::generator::{GeneratorConfig, Method};
use lopa::training::Prepared;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, value_enum, default_value_t)]
    backend: BackendChoice,
    /// The frozen model's arithmetic (the generator and AdamW stay f32).
    #[arg(long, value_enum, default_value_t)]
    precision: Precision,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Prompt tokens per example (the soft prompt adds m more).
    #[arg(long, default_value_t = 256)]
    seq_len: usize,
    /// Decoder layers (SmolLM2-135M has 30).
    #[arg(long, default_value_t = 30)]
    layers: usize,
    #[arg(long, value_enum, default_value_t = Method::Lopa)]
    method: Method,
    /// Timed steps (after the warm-up steps).
    #[arg(long, default_value_t = 5)]
    steps: usize,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Also time the model's largest matmul ([batch·(seq+m), 576] × [576, 1536]) alone.
    #[arg(long)]
    matmul: bool,
}

pub fn run(a: Args) -> lopa::Result<()> {
    let Args { backend, precision, batch_size: b, seq_len: s, layers, method, steps, warmup, matmul } = a;
    let dev = crate::args::select_quietly(backend)?;
    let ad = dev.device.clone().autodiff();
    let mut cfg = lopa::model::decoder::Decoder::smollm2_135m_config();
    cfg.num_hidden_layers = layers;
    cfg.layer_types.resize(layers, lopa::model::decoder::LayerType::FullAttention);
    precision.check(&ad)?;
    let t0 = std::time::Instant::now();
    let decoder = lopa::model::decoder::Decoder::random(&cfg, 1, &ad)?.with_precision(precision);
    let load_s = t0.elapsed().as_secs_f64();
    let config = GeneratorConfig::new(method, 576, 384);
    let mut g = Adaptation::Prompt(config.init(&ad)?);
    let mut optim = AdamWConfig::new().init();
    let mut rng = lopa::rng::Rng::new(3);
    let data: Vec<Prepared> = (0..b)
        .map(|i| Prepared {
            ids: (0..s).map(|_| (rng.next_u64() % 49152) as u32).collect(),
            answer: vec![[1000u32, 2000][i % 2]],
            features: (0..384).map(|_| rng.next_f32() - 0.5).collect(),
            label: i % 2,
            fields: Default::default(),
        })
        .collect();
    let batch: Vec<&Prepared> = data.iter().collect();
    let mut times = vec![];
    for step in 0..warmup + steps {
        let t = std::time::Instant::now();
        let logits = lopa::training::answer_logits(&decoder, Some(&g), &batch, &ad)?;
        let l = lopa::training::loss(logits, &batch, &ad);
        let mut grads = l.backward();
        let grads = GradientsParams::from_module(&mut grads, &g);
        g = optim.step(1e-3, g, grads);
        // Reading one parameter back forces the step to finish on asynchronous backends.
        let _: f32 = g.generator().and_then(|p| p.task_prompt.as_ref()).map(|z| z.val().sum().into_scalar()).unwrap_or(0.0);
        let dt = t.elapsed().as_secs_f64();
        eprintln!("step {step}: {dt:.3} s{}", if step < warmup { " (warm-up)" } else { "" });
        if step >= warmup {
            times.push(dt);
        }
    }
    let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
    let matmul_tflops = if matmul {
        let rows = b * (s + 10);
        let x = burn::tensor::Tensor::<2>::random([rows, 576], burn::tensor::Distribution::Normal(0.0, 1.0), &dev.device).cast(precision.dtype());
        let w = burn::tensor::Tensor::<2>::random([576, 1536], burn::tensor::Distribution::Normal(0.0, 1.0), &dev.device).cast(precision.dtype());
        // Warm up until autotuning and shader compilation for this shape are done.
        for _ in 0..3 {
            let mut acc = x.clone().matmul(w.clone());
            for _ in 0..10 {
                acc = acc + x.clone().matmul(w.clone());
            }
            let _: f32 = acc.sum().into_scalar();
        }
        let t = std::time::Instant::now();
        let reps = 50;
        let mut acc = burn::tensor::Tensor::<2>::zeros([rows, 1536], &dev.device).cast(precision.dtype());
        for _ in 0..reps {
            acc = acc + x.clone().matmul(w.clone());
        }
        let _: f32 = acc.sum().into_scalar();
        let dt = t.elapsed().as_secs_f64();
        Some(2.0 * rows as f64 * 576.0 * 1536.0 * reps as f64 / dt / 1e12)
    } else {
        None
    };
    println!("{}", serde_json::json!({
        "matmul_tflops": matmul_tflops,
        "backend": dev.name, "precision": precision, "method": method.name(), "batch_size": b, "seq_len": s, "layers": layers,
        "virtual_tokens": config.prompt_len(), "step_seconds": mean, "samples_per_sec": b as f64 / mean,
        "weights_init_seconds": load_s
    }));
    Ok(())
}

