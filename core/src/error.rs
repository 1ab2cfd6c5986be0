//! The one error type of the core. Every variant says which file part, field or tensor is wrong,
//! so a shell can print it as is.

use alloc::string::String;
use core::fmt;

/// Result with the core's [`Error`].
pub type Result<T> = core::result::Result<T, Error>;

/// What went wrong. Loaders return these on bad input instead of panicking.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// The first bytes are not the expected magic number.
    BadMagic {
        /// What format was expected ("GGUF", "safetensors", ...).
        expected: &'static str,
    },
    /// The input ends before a field or tensor that it declares.
    Truncated {
        /// What was being read.
        what: String,
        /// Bytes needed (end offset).
        need: u64,
        /// Bytes available.
        have: u64,
    },
    /// A field holds a value that is out of range or inconsistent.
    Invalid {
        /// The field or tensor.
        field: String,
        /// Why it is wrong.
        reason: String,
    },
    /// A required metadata key or tensor is absent.
    Missing {
        /// The key or tensor name.
        what: String,
    },
    /// A tensor's shape is not the one the model needs.
    ShapeMismatch {
        /// Tensor name.
        tensor: String,
        /// Expected shape, outermost last as in GGUF (cols, rows, ...).
        expected: alloc::vec::Vec<u64>,
        /// Found shape.
        found: alloc::vec::Vec<u64>,
    },
    /// A weight format (ggml type id or safetensors dtype) we do not support.
    UnsupportedFormat {
        /// Tensor name.
        tensor: String,
        /// The type as the file names it.
        format: String,
    },
    /// A model architecture we do not support.
    UnsupportedArch(String),
    /// A caller-provided buffer is smaller than the plan requires.
    ArenaTooSmall {
        /// Which buffer ("arena", "kv").
        what: &'static str,
        /// Bytes the plan needs.
        need: usize,
        /// Bytes given.
        have: usize,
    },
    /// A device backend reported a failure (no device, out of device memory, a kernel error).
    Backend {
        /// Which backend ("cuda").
        backend: &'static str,
        /// What it reported.
        message: String,
    },
    /// A request exceeds the session's limits (context, tokens per step).
    LimitExceeded {
        /// What limit.
        what: &'static str,
        /// The limit.
        limit: usize,
        /// What was asked.
        requested: usize,
    },
}

impl Error {
    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
    /// Shorthand for [`Error::Missing`].
    pub fn missing(what: impl Into<String>) -> Self {
        Error::Missing { what: what.into() }
    }
    /// Shorthand for [`Error::Truncated`].
    pub fn truncated(what: impl Into<String>, need: u64, have: u64) -> Self {
        Error::Truncated {
            what: what.into(),
            need,
            have,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadMagic { expected } => write!(f, "bad magic: not a {expected} file"),
            Error::Truncated { what, need, have } => {
                write!(
                    f,
                    "truncated: {what} needs {need} bytes but only {have} are present"
                )
            }
            Error::Invalid { field, reason } => write!(f, "invalid {field}: {reason}"),
            Error::Missing { what } => write!(f, "missing {what}"),
            Error::ShapeMismatch {
                tensor,
                expected,
                found,
            } => {
                write!(
                    f,
                    "tensor '{tensor}': shape {found:?}, expected {expected:?}"
                )
            }
            Error::UnsupportedFormat { tensor, format } => {
                write!(f, "tensor '{tensor}': unsupported weight format {format}")
            }
            Error::UnsupportedArch(a) => write!(f, "unsupported model architecture '{a}'"),
            Error::ArenaTooSmall { what, need, have } => {
                write!(
                    f,
                    "{what} buffer too small: plan needs {need} bytes, got {have}"
                )
            }
            Error::Backend { backend, message } => write!(f, "{backend} backend: {message}"),
            Error::LimitExceeded {
                what,
                limit,
                requested,
            } => {
                write!(f, "{what}: {requested} exceeds the limit of {limit}")
            }
        }
    }
}

impl core::error::Error for Error {}
