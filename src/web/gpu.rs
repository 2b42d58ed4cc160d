//! Choosing the device in the browser: WebGPU, opened asynchronously and checked with one small
//! kernel, or the CPU with the reason WebGPU could not run.

use crate::error::{Error, Result};
use burn::tensor::Device;
#[cfg(feature = "webgpu")]
use wasm_bindgen::JsCast;

/// What a client asks for, and (`WebGpu` or `Cpu`) what runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// WebGPU when it opens and computes, else the CPU (with the reason).
    #[default]
    Auto,
    WebGpu,
    Cpu,
}

impl Backend {
    /// `auto`, `webgpu` or `cpu`: the names the JS package uses.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::WebGpu => "webgpu",
            Backend::Cpu => "cpu",
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Backend::Auto),
            "webgpu" => Ok(Backend::WebGpu),
            "cpu" => Ok(Backend::Cpu),
            other => Err(Error::Input(format!("unknown backend `{other}` (auto, webgpu, cpu)"))),
        }
    }
}

/// The device for `want`: what runs (`WebGpu` or `Cpu`), and why `Auto` fell back to the CPU.
pub async fn device(want: Backend) -> Result<(Device, Backend, Option<String>)> {
    match want {
        Backend::Cpu => Ok((Device::flex(), Backend::Cpu, None)),
        Backend::WebGpu => Ok((webgpu().await.map_err(Error::Backend)?, Backend::WebGpu, None)),
        Backend::Auto => Ok(match webgpu().await {
            Ok(d) => (d, Backend::WebGpu, None),
            Err(reason) => (Device::flex(), Backend::Cpu, Some(reason)),
        }),
    }
}

/// This build has no WebGPU (lopa's `webgpu` feature is off).
#[cfg(not(feature = "webgpu"))]
async fn webgpu() -> std::result::Result<Device, String> {
    Err("this build of lopa has no WebGPU (its `webgpu` feature is off)".into())
}

#[cfg(feature = "webgpu")]
thread_local! {
    /// A page can initialise burn's WebGPU runtime once; later clients reuse the device.
    static WEBGPU: std::cell::RefCell<Option<Device>> = const { std::cell::RefCell::new(None) };
}

/// Open WebGPU and check it with one small kernel read back asynchronously; why it cannot run.
#[cfg(feature = "webgpu")]
async fn webgpu() -> std::result::Result<Device, String> {
    if let Some(d) = WEBGPU.with(|w| w.borrow().clone()) {
        return Ok(d);
    }
    // The same reasons as the JS package gives: wgpu's own error for a missing adapter is vaguer.
    let gpu = js_sys::Reflect::get(&js_sys::global(), &"navigator".into()).and_then(|n| js_sys::Reflect::get(&n, &"gpu".into())).unwrap_or_default();
    if gpu.is_undefined() || gpu.is_null() {
        return Err("WebGPU: navigator.gpu is missing".into());
    }
    let request = js_sys::Reflect::get(&gpu, &"requestAdapter".into()).ok().and_then(|f| f.dyn_into::<js_sys::Function>().ok()).and_then(|f| f.call0(&gpu).ok());
    let adapter = match request.and_then(|p| p.dyn_into::<js_sys::Promise>().ok()) {
        Some(p) => wasm_bindgen_futures::JsFuture::from(p).await.unwrap_or_default(),
        None => wasm_bindgen::JsValue::NULL,
    };
    if adapter.is_undefined() || adapter.is_null() {
        return Err("WebGPU: navigator.gpu offers no adapter".into());
    }
    let device = Device::wgpu_options().init_async().await.map_err(|e| format!("WebGPU: {e}"))?;
    let x = burn::tensor::Tensor::<1>::from_floats([1.0, 2.0], &device);
    let s = (x.clone() * x).sum().into_data_async().await.map_err(|e| format!("WebGPU: {e:?}"))?;
    let s = s.try_to_vec::<f32>().map_err(|e| format!("WebGPU: {e:?}"))?;
    if s != [5.0] {
        return Err(format!("WebGPU: a test kernel returned {s:?}, not [5.0]"));
    }
    WEBGPU.with(|w| *w.borrow_mut() = Some(device.clone()));
    Ok(device)
}
