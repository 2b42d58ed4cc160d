//! The `lopa` binary as a new user meets it.
#![cfg(feature = "cli")]

mod common;

#[test]
fn probing_for_a_gpu_says_one_line_and_no_loader_errors() {
    // Without XDG_RUNTIME_DIR, wgpu's graphics loaders used to print an error per probe.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lopa"))
        .args(["info", "--model"])
        .arg(common::fixture("tiny-llama.gguf"))
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("XDG_RUNTIME_DIR") && !stdout.contains("XDG_RUNTIME_DIR"), "{stderr}");
    let backend: Vec<&str> = stdout.lines().filter(|l| l.starts_with("backend: ")).collect();
    assert_eq!(backend.len(), 1, "{stdout}");
    assert!(backend[0].starts_with("backend: cpu (flex; no GPU answered") || backend[0].starts_with("backend: wgpu ("), "{stdout}");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn asking_for_cuda_in_a_build_without_it_says_how_to_get_it() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lopa"))
        .args(["info", "--backend", "cuda", "--model"])
        .arg(common::fixture("tiny-llama.gguf"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && out.stdout.is_empty());
    assert_eq!(stderr.lines().collect::<Vec<_>>(), ["lopa: backend: this build has no CUDA backend (build it with scripts/build-cuda.sh, or use --backend wgpu)"]);
}
