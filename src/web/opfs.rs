//! Adapters kept on the device in the origin-private file system, in the folder and under the
//! names the JS package uses (`lopa-adapters/<name>.safetensors`): an adapter saved by either is
//! found by the other.

use super::http::{message, storage, wait};
use crate::adapter::Adapter;
use crate::error::{Error, Result};
use crate::model::weights::safetensors::StoreAs;
use js_sys::Uint8Array;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{FileSystemDirectoryHandle, FileSystemFileHandle, FileSystemGetDirectoryOptions, FileSystemGetFileOptions, FileSystemWritableFileStream};

const DIR: &str = "lopa-adapters";

fn storage_error(m: String) -> Error {
    Error::Storage(format!("origin-private file system: {m}"))
}

/// The file name of an adapter called `name`: 1 to 64 letters, digits, `_`, `.` or `-`.
fn file_name(name: &str) -> Result<String> {
    let ok = (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !ok {
        return Err(Error::Input(format!("adapter name `{name}` must be 1 to 64 letters, digits, '_', '.' or '-'")));
    }
    Ok(format!("{name}.safetensors"))
}

async fn dir() -> Result<FileSystemDirectoryHandle> {
    let root: FileSystemDirectoryHandle = wait(storage()?.get_directory(), storage_error).await?.unchecked_into();
    let options = FileSystemGetDirectoryOptions::new();
    options.set_create(true);
    Ok(wait(root.get_directory_handle_with_options(DIR, &options), storage_error).await?.unchecked_into())
}

/// Keep `adapter` (f32, one file, as `lopa export-web` writes it) under `name`, replacing one
/// saved before.
pub async fn save_adapter(name: &str, adapter: &Adapter) -> Result<()> {
    let file = file_name(name)?;
    let options = FileSystemGetFileOptions::new();
    options.set_create(true);
    let handle: FileSystemFileHandle = wait(dir().await?.get_file_handle_with_options(&file, &options), storage_error).await?.unchecked_into();
    let writable: FileSystemWritableFileStream = wait(handle.create_writable(), storage_error).await?.unchecked_into();
    let bytes = Uint8Array::from(&adapter.bundle(StoreAs::F32)[..]);
    wait(writable.write_with_js_u8_array(&bytes).map_err(|e| storage_error(message(&e)))?, storage_error).await?;
    // The file is replaced only when the stream closes: a write cut short leaves the old one.
    wait(writable.close(), storage_error).await?;
    Ok(())
}

/// The adapter saved under `name`, or `None` when there is none.
pub async fn load_adapter(name: &str) -> Result<Option<Adapter>> {
    let file = file_name(name)?;
    let handle = match JsFuture::from(dir().await?.get_file_handle(&file)).await {
        Ok(h) => h.unchecked_into::<FileSystemFileHandle>(),
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(storage_error(message(&e))),
    };
    let blob: web_sys::File = wait(handle.get_file(), storage_error).await?.unchecked_into();
    let buffer = wait(blob.array_buffer(), storage_error).await?;
    Adapter::from_bundle(&Uint8Array::new(&buffer).to_vec()).map(Some)
}

/// Forget the adapter saved under `name` (nothing when there is none).
pub async fn remove_adapter(name: &str) -> Result<()> {
    let file = file_name(name)?;
    match JsFuture::from(dir().await?.remove_entry(&file)).await {
        Err(e) if !is_not_found(&e) => Err(storage_error(message(&e))),
        _ => Ok(()),
    }
}

fn is_not_found(e: &JsValue) -> bool {
    e.dyn_ref::<web_sys::DomException>().is_some_and(|d| d.name() == "NotFoundError")
}
