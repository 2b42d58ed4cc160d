//! File utilities every writer shares: reads that name their file in the error, and writes a
//! reader never sees half done (a crash leaves the old file or folder, or the new one).

use crate::error::{Error, Result};
use std::path::Path;

/// Read a whole file, naming it in the error.
pub fn read_file(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    let path = path.as_ref();
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Write one file atomically (temporary file in the same folder, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Replace a whole folder of files atomically: build a sibling, then swap it in.
pub fn write_dir_atomic(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<()> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let name = dir.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "adapter".into());
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    // Keep files that are not being replaced (e.g. checkpoint.json beside the adapter).
    if dir.is_dir() {
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.flatten() {
            let n = entry.file_name().to_string_lossy().to_string();
            if !files.iter().any(|(f, _)| *f == n) {
                std::fs::copy(entry.path(), tmp.join(&n)).map_err(|e| Error::io(entry.path(), e))?;
            }
        }
    }
    for (n, bytes) in files {
        let p = tmp.join(n);
        std::fs::write(&p, bytes).map_err(|e| Error::io(&p, e))?;
    }
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}
