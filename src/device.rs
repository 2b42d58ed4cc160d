//! Choosing the compute backend at run time: a GPU through CUDA (an opt-in build) or wgpu when
//! one is there, else the pure-Rust `flex` CPU backend.

use crate::error::{Error, Result};
use burn::tensor::{Device, Tensor};

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum BackendChoice {
    /// An NVIDIA GPU through CUDA (in a build with the `cuda` feature), else a discrete or
    /// integrated GPU through wgpu if one answers, else the CPU.
    #[default]
    Auto,
    /// The `flex` CPU backend.
    Cpu,
    /// wgpu's default adapter, whatever it is (including CPU Vulkan drivers such as lavapipe).
    #[cfg_attr(feature = "cli", value(alias = "gpu"))]
    Wgpu,
    /// The first NVIDIA GPU through CUDA (builds with the `cuda` feature).
    Cuda,
}

/// A device and a human-readable name of what runs.
#[derive(Debug, Clone)]
pub struct Selected {
    pub device: Device,
    pub name: String,
}

/// Resolve a backend choice to a working device.
pub fn select(choice: BackendChoice) -> Result<Selected> {
    match choice {
        BackendChoice::Cpu => Ok(cpu()),
        #[cfg(feature = "wgpu")]
        BackendChoice::Wgpu => probe(burn::tensor::DeviceKind::DefaultDevice)
            .ok_or_else(|| Error::Backend("no wgpu adapter could be opened (install a Vulkan/Metal/DX12 driver, or use --backend cpu)".into())),
        #[cfg(not(feature = "wgpu"))]
        BackendChoice::Wgpu => Err(Error::Backend("this build has no wgpu backend (enable the `wgpu` feature)".into())),
        #[cfg(feature = "cuda")]
        BackendChoice::Cuda => probe_cuda(),
        #[cfg(not(feature = "cuda"))]
        BackendChoice::Cuda => Err(Error::Backend("this build has no CUDA backend (build it with scripts/build-cuda.sh, or use --backend wgpu)".into())),
        BackendChoice::Auto => {
            // A build with CUDA asked for it: an NVIDIA GPU runs there before anything else.
            #[cfg(feature = "cuda")]
            if let Ok(s) = probe_cuda() {
                return Ok(s);
            }
            Ok(auto_wgpu_or_cpu())
        }
    }
}

fn cpu() -> Selected {
    Selected { device: Device::flex(), name: "cpu (flex)".into() }
}

#[cfg(feature = "wgpu")]
fn auto_wgpu_or_cpu() -> Selected {
    use burn::tensor::DeviceKind;
    probe(DeviceKind::DiscreteGpu(0))
        .or_else(|| probe(DeviceKind::IntegratedGpu(0)))
        .unwrap_or_else(|| Selected { name: "cpu (flex; no GPU answered through wgpu)".into(), ..cpu() })
}

#[cfg(not(feature = "wgpu"))]
fn auto_wgpu_or_cpu() -> Selected {
    cpu()
}

/// Open CUDA device 0 and run one tiny kernel. cudarc loads the driver library on first use and
/// panics where it is missing, on the runtime's own thread (this one sees only a closed channel),
/// so the library is opened here first and its loader's error is the reason the user reads.
#[cfg(feature = "cuda")]
fn probe_cuda() -> Result<Selected> {
    const DRIVER: &str = if cfg!(windows) { "nvcuda.dll" } else { "libcuda.so.1" };
    // SAFETY: loading the NVIDIA driver library runs its initialisers, as cudarc's own load does.
    if let Err(e) = unsafe { libloading::Library::new(DRIVER) } {
        // libloading's own text is "dlopen failed"; the loader's reason is its source.
        let reason = std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
        return Err(Error::Backend(format!("no CUDA device could be opened ({reason}); needs the NVIDIA driver, or use --backend wgpu|cpu")));
    }
    let r = std::panic::catch_unwind(|| {
        let device = Device::cuda(0);
        let x = Tensor::<1>::from_floats([1.0, 2.0], &device);
        let s: f32 = (x.clone() * x).sum().into_scalar();
        (s == 5.0).then_some(device)
    });
    match r {
        Ok(Some(device)) => {
            let name = device.identity().map(|i| i.name).unwrap_or_else(|| "device 0".into());
            Ok(Selected { device, name: format!("cuda ({name})") })
        }
        Ok(None) => Err(Error::Backend("the CUDA device computed 1·1 + 2·2 wrong".into())),
        Err(panic) => {
            let msg = panic.downcast_ref::<String>().map(String::as_str).or_else(|| panic.downcast_ref::<&str>().copied()).unwrap_or("unknown reason");
            let line = msg.lines().find(|l| !l.trim().is_empty()).unwrap_or(msg).trim();
            Err(Error::Backend(format!("no CUDA device could be opened ({line}); or use --backend wgpu|cpu")))
        }
    }
}

/// Open a wgpu device and run one tiny kernel; wgpu panics when no adapter of the kind exists,
/// so the probe is isolated with `catch_unwind`. The panic hook is the host's: swapping a
/// process-wide hook here would silence other threads' panics (the `lopa` binary quiets the
/// probe itself, before it starts any thread).
#[cfg(feature = "wgpu")]
fn probe(kind: burn::tensor::DeviceKind) -> Option<Selected> {
    let label = format!("{kind:?}");
    let r = std::panic::catch_unwind(move || {
        let device = Device::wgpu(kind);
        let x = Tensor::<1>::from_floats([1.0, 2.0], &device);
        let s: f32 = (x.clone() * x).sum().into_scalar();
        (s == 5.0).then_some(device)
    });
    let device = r.ok().flatten()?;
    let name = device.identity().map(|i| i.name).unwrap_or(label);
    Some(Selected { device, name: format!("wgpu ({name})") })
}

/// The graphics loaders wgpu probes (Wayland, EGL) print an error for each attempt when
/// `XDG_RUNTIME_DIR` is unset or not a directory. Where it is, this is a private directory to set
/// it to (one per user, created 0700; an existing one only if it is ours and private). Setting
/// an environment variable races with every other thread, so only a program's `main`, before it
/// starts any, should do it: this returns the directory and leaves the environment alone.
#[cfg(unix)]
pub fn runtime_dir_if_missing() -> Option<std::path::PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    if std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| std::path::Path::new(&d).is_dir()) {
        return None;
    }
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok()?;
    let dir = std::env::temp_dir().join(format!("lopa-runtime-{uid}"));
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    let ours = std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir() && m.uid() == uid && m.mode() & 0o077 == 0);
    ours.then_some(dir)
}

#[cfg(not(unix))]
pub fn runtime_dir_if_missing() -> Option<std::path::PathBuf> {
    None
}

/// Read a float tensor back to the host as f32.
pub fn to_vec<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    // Half-precision tensors (a decoder run at --precision f16/bf16) are read as f32.
    t.cast(burn::tensor::FloatDType::F32).into_data().try_into_vec::<f32>().map_err(|e| Error::Backend(format!("{e:?}")))
}

/// The same with an asynchronous read (required on WebGPU).
pub async fn to_vec_async<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    let data = t.cast(burn::tensor::FloatDType::F32).into_data_async().await.map_err(|e| Error::Backend(format!("{e:?}")))?;
    data.try_into_vec::<f32>().map_err(|e| Error::Backend(format!("{e:?}")))
}
