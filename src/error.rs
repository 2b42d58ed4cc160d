//! One error type for the crate. Every failure that input can cause is a value of this type:
//! loaders name the file and tensor, validators name the rule that failed.

use std::path::PathBuf;

/// Result alias used throughout lopa.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in lopa.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A weight file is malformed as a whole (bad magic, truncated header, ...).
    #[error("{format}: {problem}")]
    Format {
        /// "safetensors", "gguf", ...
        format: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// One tensor of a weight file is wrong (missing, truncated, wrong shape or dtype, ...).
    #[error("tensor `{name}`: {problem}")]
    Tensor {
        /// The tensor's name in the checkpoint.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// A configuration value is missing or out of range.
    #[error("config: {0}")]
    Config(String),
    /// The tokenizer could not be built or failed on an input.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// An input to a model has the wrong shape or values.
    #[error("input: {0}")]
    Input(String),
    /// The compute backend failed (device lost, out of memory, ...).
    #[error("backend: {0}")]
    Backend(String),
    /// The upstream serving engine refused a request it was sent (`rejected`), or failed or
    /// could not be reached.
    #[error("upstream: {message}")]
    Upstream {
        /// The upstream answered 4xx: the request (as the gateway built it) was refused.
        rejected: bool,
        /// What it said, or why it could not be reached.
        message: String,
    },
    /// `lopa serve` refused a client's request, or answered what the client cannot read.
    #[error("lopa serve: {0}")]
    Endpoint(String),
    /// A URL could not be fetched in the browser (network, HTTP status, a download cut short).
    #[error("{problem} ({url})")]
    Fetch {
        /// The URL.
        url: String,
        /// What went wrong.
        problem: String,
    },
    /// The browser's storage failed (the origin-private file system, the Cache API).
    #[error("storage: {0}")]
    Storage(String),
}

impl Error {
    pub(crate) fn format(format: &'static str, problem: impl Into<String>) -> Self {
        Error::Format { format, problem: problem.into() }
    }
    pub(crate) fn tensor(name: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::Tensor { name: name.into(), problem: problem.into() }
    }
    /// An I/O error naming its file.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
