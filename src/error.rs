//! The crate's one error type: every failure names what went wrong and where.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every failure AgentCompress reports. Variants map one to one onto the C ABI's `ac_status`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system I/O failure on a named file.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file the operation was on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file exists but its contents are not a valid model, tokenizer or variant.
    #[error("corrupt or invalid file {path}: {msg}")]
    Corrupt {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// Well-formed input that this engine does not support (an architecture, a dtype, ...).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A caller passed an impossible argument (bad shape, empty prompt, unknown option).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// No usable GPU (or CUDA driver) was found where one was asked for.
    #[error("no CUDA device: {0}")]
    NoDevice(String),
    /// A CUDA driver, NVRTC or kernel failure.
    #[error("CUDA error: {0}")]
    Cuda(String),
    /// A memory budget (device pool, host) cannot hold the request.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// The caller asked to stop (for example a token callback returned false).
    #[error("cancelled")]
    Cancelled,
    /// A broken invariant inside the engine; always a bug worth reporting.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Shorthand for [`Error::Corrupt`].
    pub fn corrupt(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }
}
