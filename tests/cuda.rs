//! The CUDA backend (`--features cuda`; scripts/build-cuda.sh builds it). Without an NVIDIA driver
//! `--backend cuda` fails at once with one line that says why; with one, the CLI runs on it and
//! half precision trains within the CPU's bounds (tests/common/training.rs).
#![cfg(all(feature = "cuda", feature = "cli"))]

mod common;
use burn::tensor::Device;
use common::fixture;
use lopa::device::{select, BackendChoice};
use lopa::model::decoder::{FoundationModel, Precision};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn driver() -> bool {
    std::path::Path::new("/proc/driver/nvidia/version").exists()
}

#[test]
fn backend_cuda_runs_or_says_in_one_line_why_not() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lopa"))
        .args(["info", "--backend", "cuda", "--model"])
        .arg(fixture("tiny-llama.gguf"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("`lopa info --backend cuda` still running after 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("measured: answered in {:.2} s; stdout {stdout:?}; stderr {stderr:?}", t.elapsed().as_secs_f64());
    if driver() {
        assert!(out.status.success(), "{stderr}");
        assert!(stdout.lines().any(|l| l.starts_with("backend: cuda (")), "{stdout}");
    } else {
        assert!(!out.status.success(), "{stdout}");
        assert!(stdout.is_empty(), "{stdout}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "more than one line: {stderr}");
        assert!(lines[0].starts_with("lopa: backend: no CUDA device could be opened ("), "{stderr}");
        assert!(lines[0].contains("libcuda.so.1: cannot open shared object file") && lines[0].ends_with("or use --backend wgpu|cpu"), "{stderr}");
    }
}

/// On a GPU machine (scripts/gpu.sh carries this test's binary there): bf16 and f16 train as f32.
#[test]
fn half_precision_on_cuda_follows_the_f32_loss_curve() {
    if !driver() {
        eprintln!("no NVIDIA driver here: the half-precision check runs where scripts/gpu.sh carries this binary");
        return;
    }
    let plain = Device::flex();
    let ad = select(BackendChoice::Cuda).unwrap().device.autodiff();
    let fm = FoundationModel::from_gguf_bytes(&std::fs::read(fixture("tiny-llama.gguf")).unwrap(), "tiny", &ad).unwrap();
    let dir = std::env::temp_dir().join(format!("lopa-cuda-precision-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trained = common::training::half_precision_follows_f32(&plain, &ad, &fm, &common::tiny_encoder(&plain), &dir, 6);
    assert_eq!(trained, [Precision::Bf16, Precision::F16], "CUDA computes in both half types");
}
