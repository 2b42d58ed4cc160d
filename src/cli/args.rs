//! Flags several commands share, and loading a saved adapter with the models it needs.

use burn::tensor::Device;
use lopa::adapter::Adapter;
use lopa::device::{select, BackendChoice, Selected};
use lopa::model::decoder::{FoundationModel, Precision};
use lopa::model::encoder::SentenceEncoder;
use lopa::model::adaptation::Adaptation;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    /// Frozen foundation model: a .gguf file or a Hugging Face directory [default: cached SmolLM2-135M-Instruct].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Sentence encoder: a Hugging Face BERT directory [default: cached all-MiniLM-L6-v2].
    #[arg(long)]
    pub encoder: Option<PathBuf>,
    /// Compute backend: a GPU (CUDA in a build with it, else wgpu) if present, else the CPU.
    #[arg(long, value_enum, default_value_t)]
    pub backend: BackendChoice,
    /// The frozen model's arithmetic: f16/bf16 halves its weights and matmuls; norms, softmax,
    /// logits and everything trained stay f32.
    #[arg(long, value_enum, default_value_t)]
    pub precision: Precision,
}

impl ModelArgs {
    pub fn model_path(&self) -> PathBuf {
        self.model.clone().unwrap_or_else(lopa::paths::default_foundation_model)
    }
    pub fn encoder_path(&self) -> PathBuf {
        self.encoder.clone().unwrap_or_else(lopa::paths::default_encoder)
    }
    pub fn device(&self) -> lopa::Result<Selected> {
        select_quietly(self.backend)
    }
    /// The frozen model at `--precision`.
    pub fn load_model(&self, device: &Device) -> lopa::Result<FoundationModel> {
        FoundationModel::load_as(self.model_path(), self.precision, device)
    }
}

/// A saved adapter and the models it runs with.
#[derive(clap::Args, Clone, Debug)]
pub struct AdapterArgs {
    #[command(flatten)]
    pub models: ModelArgs,
    /// Adapter directory (adapter.json + adapter.safetensors), or a one-file adapter bundle.
    #[arg(long)]
    pub adapter: PathBuf,
}

impl AdapterArgs {
    /// The backend, then the adapter with its models on it.
    pub fn load(&self) -> lopa::Result<(Selected, Loaded)> {
        let dev = self.models.device()?;
        let loaded = Loaded::load(&self.models, &self.adapter, &dev.device)?;
        Ok((dev, loaded))
    }
}

/// A saved adapter with the frozen model, and the encoder when it reads the input.
pub struct Loaded {
    pub fm: FoundationModel,
    pub encoder: Option<SentenceEncoder>,
    pub adapter: Adapter,
    pub adaptation: Adaptation,
}

impl Loaded {
    pub fn load(models: &ModelArgs, dir: &Path, device: &Device) -> lopa::Result<Self> {
        let adapter = Adapter::load(dir)?;
        let fm = models.load_model(device)?;
        let encoder = if adapter.meta.adaptation.uses_encoder() { Some(SentenceEncoder::from_dir(models.encoder_path(), device)?) } else { None };
        adapter.meta.check_compatible(&fm, encoder.as_ref())?;
        let adaptation = Adaptation::from_tensors(&adapter.meta.adaptation, &adapter.weights, device)?;
        Ok(Self { fm, encoder, adapter, adaptation })
    }
}

/// A client from the browser's files: a folder `lopa export-web` wrote, and one of its adapters
/// (`name`; none: the only one).
pub fn bundle_client(dir: &Path, name: Option<&str>, device: &Device) -> lopa::Result<lopa::client::Client> {
    let read = |n: &str| lopa::fs::read_file(dir.join(n));
    let name = match name {
        Some(n) => n.to_string(),
        None => {
            let list: Vec<serde_json::Value> = serde_json::from_slice(&read("adapters.json")?).map_err(|e| lopa::Error::Config(format!("adapters.json: {e}")))?;
            match &list[..] {
                [one] => one["name"].as_str().unwrap_or_default().to_string(),
                _ => return Err(lopa::Error::Config(format!("{} holds {} adapters: pick one by name", dir.display(), list.len()))),
            }
        }
    };
    lopa::client::Client::from_bundles(&read("encoder.safetensors")?, &read("tokenizer.json")?, &read(&format!("adapters/{name}.safetensors"))?, device)
}

/// Where the built-in tasks' data lives: `$LOPA_DATA`, else `../shared/data` beside the
/// checkout the binary was built from, else `./data`.
pub fn data_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("LOPA_DATA") {
        return PathBuf::from(p);
    }
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    if beside.exists() {
        return beside;
    }
    PathBuf::from("data")
}

/// [`select`] with the panic hook silenced while wgpu probes for adapters (it panics where a
/// kind of GPU is missing, and the probe catches that). Called before the command starts any
/// thread, so no other panic is hidden.
pub fn select_quietly(choice: BackendChoice) -> lopa::Result<Selected> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = select(choice);
    std::panic::set_hook(hook);
    r
}
