//! The GPU code path (burn's wgpu backend, WGSL) on whatever adapter wgpu finds: Mesa's lavapipe
//! CPU Vulkan driver on machines without a GPU (scripts/test.sh installs it). Same numbers as the
//! CPU backend, and a training run works end to end. Set LOPA_SKIP_WGPU=1 to skip explicitly.
#![cfg(feature = "wgpu")]

mod common;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use common::*;
use lopa::model::decoder::FoundationModel;
use lopa::device::{select, BackendChoice};
use lopa::model::generator::{GeneratorConfig, Method};

/// One test at a time: the device's random generator (dropout) is one per process.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn wgpu() -> Option<Device> {
    if std::env::var("LOPA_SKIP_WGPU").as_deref() == Ok("1") {
        eprintln!("LOPA_SKIP_WGPU=1: skipping the wgpu test");
        return None;
    }
    let s = select(BackendChoice::Wgpu).expect("a wgpu adapter (install mesa-vulkan-drivers for lavapipe, or set LOPA_SKIP_WGPU=1)");
    eprintln!("wgpu adapter: {}", s.name);
    Some(s.device)
}

#[test]
fn wgpu_matches_the_cpu_backend_and_trains() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(gpu) = wgpu() else { return };
    let cpu = Device::flex();
    // Generator: the same weights on both devices.
    let g_cpu = GeneratorConfig::new(Method::Lopa, 64, 32).init(&cpu).unwrap();
    let w = g_cpu.to_tensors().unwrap();
    let g_gpu = lopa::model::generator::PromptGenerator::from_tensors(&g_cpu.config, &w, &gpu).unwrap();
    let f: Vec<f32> = (0..3 * 32).map(|i| ((i as f32) * 0.7).sin()).collect();
    let z_cpu = lopa::device::to_vec(g_cpu.forward(Tensor::from_data(TensorData::new(f.clone(), [3, 32]), &cpu)).unwrap()).unwrap();
    let z_gpu = lopa::device::to_vec(g_gpu.forward(Tensor::from_data(TensorData::new(f, [3, 32]), &gpu)).unwrap()).unwrap();
    let dz = max_abs_diff(&z_cpu, &z_gpu);
    assert!(dz <= 1e-5, "soft prompt differs by {dz}");

    // Decoder with a soft prompt: logits agree with the CPU backend.
    let bytes = std::fs::read(fixture("tiny-llama.gguf")).unwrap();
    let fm_cpu = FoundationModel::from_gguf_bytes(&bytes, "tiny", &cpu).unwrap();
    let fm_gpu = FoundationModel::from_gguf_bytes(&bytes, "tiny", &gpu).unwrap();
    let ids: Vec<i64> = vec![5, 70, 200, 33, 258];
    let run = |fm: &FoundationModel, d: &Device| {
        let z = Tensor::<3>::from_data(TensorData::new(z_cpu[..2 * 64].to_vec(), [1, 2, 64]), d);
        lopa::device::to_vec(fm.decoder.forward(Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [1, 5]), d), Some(z)).unwrap()).unwrap()
    };
    let (a, b) = (run(&fm_cpu, &cpu), run(&fm_gpu, &gpu));
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
    let rel = max_abs_diff(&a, &b) / scale;
    eprintln!("measured: wgpu vs flex logits max abs diff / scale = {rel:.2e}");
    assert!(rel <= 1e-4, "logits differ: {rel}");

    // One autodiff step on the GPU device: finite loss and a parameter update.
    let ad = gpu.clone().autodiff();
    let fm_ad = FoundationModel::from_gguf_bytes(&bytes, "tiny", &ad).unwrap();
    let g = lopa::model::adaptation::Adaptation::Prompt(GeneratorConfig::new(Method::Lopa, 64, 32).init(&ad).unwrap());
    let z_s = |g: &lopa::model::adaptation::Adaptation| lopa::device::to_vec(g.generator().unwrap().task_prompt.as_ref().unwrap().val()).unwrap();
    let before = z_s(&g);
    let data: Vec<lopa::training::Prepared> = (0..2)
        .map(|i| lopa::training::Prepared {
            ids: vec![5, 70, 200],
            answer: vec![[33u32, 258][i]],
            features: Tensor::<1>::random([32], Distribution::Normal(0.0, 1.0), &cpu).into_data().try_to_vec::<f32>().unwrap(),
            label: i,
            fields: Default::default(),
        })
        .collect();
    let batch: Vec<&lopa::training::Prepared> = data.iter().collect();
    let l = lopa::training::loss(lopa::training::answer_logits(&fm_ad.decoder, Some(&g), &batch, &ad).unwrap(), &batch, &ad);
    let lv: f32 = l.clone().into_scalar();
    assert!(lv.is_finite() && lv > 0.0, "loss {lv}");
    let mut grads = l.backward();
    let grads = burn::optim::GradientsParams::from_module(&mut grads, &g);
    let g = burn::optim::AdamWConfig::new().init().step(1e-2, g, grads);
    let after = z_s(&g);
    assert!(max_abs_diff(&before, &after) > 1e-4, "Z_S did not move");
}

/// Mixed precision on the GPU code path: the CPU's check (tests/common/training.rs) on wgpu, over
/// 3 epochs (lavapipe is slow). A half type the adapter computes in trains within the same bounds
/// of f32; one it only stores (bf16 on WebGPU/Vulkan) is refused up front.
#[test]
fn half_precision_on_wgpu_follows_the_f32_loss_curve_or_is_refused() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(gpu) = wgpu() else { return };
    let plain = Device::flex();
    let ad = gpu.autodiff();
    let fm = FoundationModel::from_gguf_bytes(&std::fs::read(fixture("tiny-llama.gguf")).unwrap(), "tiny", &ad).unwrap();
    let dir = std::env::temp_dir().join(format!("lopa-wgpu-precision-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let trained = common::training::half_precision_follows_f32(&plain, &ad, &fm, &tiny_encoder(&plain), &dir, 3);
    eprintln!("measured: half types that trained on wgpu: {trained:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
