//! Resume state: what the loop needs to continue exactly where it stopped, written as one folder
//! (`run_dir/last`) that is swapped in atomically, so a kill at any moment leaves the previous
//! complete checkpoint.
//!
//! `last/` holds the adapter, `optimizer.safetensors` (AdamW's two moments per parameter as
//! `{module path}/{field}`, its step counts in the metadata) and `checkpoint.json` (the position:
//! epoch, step, batches done in the epoch, running sums, the best epoch so far). Parameters are
//! named by their module path, not by burn's per-process parameter ids, so a new process maps
//! them back to its own parameters.

use super::EpochMetrics;
use crate::adapter::Adapter;
use crate::fs::write_dir_atomic;
use crate::error::{Error, Result};
use crate::model::weights::{safetensors, HostTensor};
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::ModuleOptimizer;
use burn::tensor::{DType, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The loop's position and running sums (`checkpoint.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Position {
    /// Epochs completed (evaluated and recorded).
    pub epoch: usize,
    /// Optimizer steps taken since the start of the run.
    pub step: usize,
    /// Batches done in epoch `epoch + 1` (0 at an epoch boundary).
    #[serde(default)]
    pub step_in_epoch: usize,
    /// Sum of the losses of those batches.
    #[serde(default)]
    pub loss_sum: f64,
    /// Training examples seen since the start (for samples per second).
    #[serde(default)]
    pub seen: usize,
    /// Seconds spent in training steps since the start.
    #[serde(default)]
    pub train_secs: f64,
    pub best_epoch: usize,
    pub best_dev_accuracy: f64,
    pub best_dev_f1: Option<f64>,
    pub epochs: Vec<EpochMetrics>,
}

impl Position {
    pub fn start() -> Self {
        Position { best_dev_accuracy: -1.0, ..Default::default() }
    }
}

const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const POSITION_FILE: &str = "checkpoint.json";

/// Write `dir` (the run's `last/`) in one atomic swap.
pub fn save(dir: &Path, adapter: &Adapter, optim: &ModuleOptimizer, module: &impl Module, position: &Position) -> Result<()> {
    let mut files = adapter.files();
    files.push((OPTIMIZER_FILE.into(), optimizer_bytes(optim, module)?));
    files.push((POSITION_FILE.into(), serde_json::to_vec_pretty(position).expect("json")));
    write_dir_atomic(dir, &files)
}

/// A saved checkpoint: the adapter, the optimizer file's bytes (absent in checkpoints written
/// before it was saved: the moments then start from zero) and the position.
pub struct Saved {
    pub adapter: Adapter,
    pub optimizer: Option<Vec<u8>>,
    pub position: Position,
}

/// Read `dir`; if a kill fell between the two renames of the swap, the previous folder (kept
/// beside it as `.last.old-PID`) is read instead.
pub fn load(dir: &Path) -> Result<Saved> {
    let dir = if dir.join(POSITION_FILE).exists() { dir.to_path_buf() } else { interrupted_swap(dir).unwrap_or_else(|| dir.to_path_buf()) };
    let position: Position = serde_json::from_slice(&crate::fs::read_file(dir.join(POSITION_FILE))?).map_err(|e| Error::Config(format!("{}: {e}", dir.join(POSITION_FILE).display())))?;
    let optimizer = dir.join(OPTIMIZER_FILE);
    let optimizer = optimizer.exists().then(|| crate::fs::read_file(&optimizer)).transpose()?;
    Ok(Saved { adapter: Adapter::load(&dir)?, optimizer, position })
}

fn interrupted_swap(dir: &Path) -> Option<PathBuf> {
    let name = dir.file_name()?.to_string_lossy().to_string();
    let parent = dir.parent()?;
    std::fs::read_dir(parent).ok()?.flatten().map(|e| e.path()).find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!(".{name}.old-"))) && p.join(POSITION_FILE).exists())
}

/// Every float parameter of `module` by module path (`u_head.hidden.weight`).
fn parameter_paths(module: &impl Module) -> Vec<(String, ParamId)> {
    struct Paths {
        path: Vec<String>,
        out: Vec<(String, ParamId)>,
    }
    impl ModuleVisitor for Paths {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.out.push((self.path.join("."), param.id));
        }
    }
    let mut v = Paths { path: vec![], out: vec![] };
    module.visit(&mut v);
    v.out
}

/// Scalars keep their type in the metadata string: `u:5`, `i:-1`, `f:<f64 bits>`, `b:true`.
fn scalar_to_string(s: &burn_pack::Scalar) -> String {
    match s {
        burn_pack::Scalar::UInt(v) => format!("u:{v}"),
        burn_pack::Scalar::Int(v) => format!("i:{v}"),
        burn_pack::Scalar::Float(v) => format!("f:{}", v.to_bits()),
        burn_pack::Scalar::Bool(v) => format!("b:{v}"),
    }
}

fn scalar_from_string(s: &str) -> Option<burn_pack::Scalar> {
    let (kind, v) = s.split_once(':')?;
    Some(match kind {
        "u" => burn_pack::Scalar::UInt(v.parse().ok()?),
        "i" => burn_pack::Scalar::Int(v.parse().ok()?),
        "f" => burn_pack::Scalar::Float(f64::from_bits(v.parse().ok()?)),
        "b" => burn_pack::Scalar::Bool(v.parse().ok()?),
        _ => return None,
    })
}

/// Burn's optimizer record (keyed `{param id}.{field}`) renamed to `{module path}/{field}`.
pub fn optimizer_bytes(optim: &ModuleOptimizer, module: &impl Module) -> Result<Vec<u8>> {
    let bad = |e: String| Error::Backend(format!("optimizer state: {e}"));
    let names: BTreeMap<String, String> = parameter_paths(module).into_iter().map(|(path, id)| (id.val().to_string(), path)).collect();
    let rename = |key: &str| -> Result<String> {
        let (id, field) = key.split_once('.').ok_or_else(|| bad(format!("unexpected key `{key}`")))?;
        let path = names.get(id).ok_or_else(|| bad(format!("state for a parameter the module does not have (`{key}`)")))?;
        Ok(format!("{path}/{field}"))
    };
    let bytes = optim.to_record().into_bytes().map_err(|e| bad(e.to_string()))?;
    let reader = burn_pack::Reader::from_bytes(bytes).map_err(|e| bad(e.to_string()))?;
    let mut metadata = BTreeMap::new();
    for (key, value) in reader.scalars() {
        metadata.insert(rename(key)?, scalar_to_string(value));
    }
    let mut tensors = BTreeMap::new();
    for t in reader.into_tensors().map_err(|e| bad(e.to_string()))? {
        let (name, dtype, shape, _, bytes) = t.into_parts().map_err(|e| bad(e.to_string()))?;
        let data = TensorData::from_bytes(bytes, shape.clone(), dtype);
        if data.dtype() != DType::F32 {
            return Err(bad(format!("`{name}` is {:?}; f32 expected", data.dtype())));
        }
        let values = data.try_to_vec::<f32>().map_err(|e| bad(format!("{e:?}")))?;
        tensors.insert(rename(&name)?, HostTensor::new(shape.to_vec(), values)?);
    }
    Ok(safetensors::write(tensors.iter().map(|(k, v)| (k.as_str(), v)), &metadata, safetensors::StoreAs::F32))
}

/// Load [`optimizer_bytes`] into `optim` for `module`'s parameters in this process. Every
/// saved parameter must exist in the module, with the shape it had.
pub fn load_optimizer(optim: ModuleOptimizer, module: &impl Module, bytes: &[u8]) -> Result<ModuleOptimizer> {
    let bad = |e: String| Error::Config(format!("{OPTIMIZER_FILE}: {e}"));
    let ids: BTreeMap<String, u64> = parameter_paths(module).into_iter().map(|(path, id)| (path, id.val())).collect();
    let key = |name: &str| -> Result<(u64, String)> {
        let (path, field) = name.rsplit_once('/').ok_or_else(|| bad(format!("unexpected name `{name}`")))?;
        let id = ids.get(path).ok_or_else(|| bad(format!("`{path}` is not a parameter of this adapter")))?;
        Ok((*id, format!("{id}.{field}")))
    };
    let st = safetensors::parse(bytes)?;
    let mut tensors = vec![];
    for name in st.tensors.names() {
        let t = st.tensors.get(name).expect("listed");
        let (id, renamed) = key(name)?;
        let data = TensorData::new(t.data.clone(), t.shape.clone());
        let (bytes, shape, dtype) = data.into_parts();
        tensors.push(burn_pack::Tensor::new(renamed, dtype, shape, Some(id), bytes));
    }
    let mut writer = burn_pack::Writer::new(tensors);
    for (name, value) in &st.metadata {
        if name == "format" {
            continue;
        }
        let (_, renamed) = key(name)?;
        let scalar = scalar_from_string(value).ok_or_else(|| bad(format!("`{name}`: bad value `{value}`")))?;
        writer = writer.with_scalar(&renamed, scalar);
    }
    let record = burn::optim::OptimizerRecord::from_bytes(writer.into_bytes().map_err(|e| bad(e.to_string()))?).map_err(|e| bad(e.to_string()))?;
    Ok(optim.load_record(record))
}
