//! Errors of model loading and running: each names the file or tensor at fault.

use std::path::PathBuf;

pub type Result<T, E = NnError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum NnError {
    #[error(transparent)]
    Core(#[from] ferro_core::Error),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// A weight the architecture needs is not in the checkpoint.
    #[error("{}: tensor `{name}` is missing{hint}", file.display())]
    MissingTensor {
        file: PathBuf,
        name: String,
        hint: String,
    },

    /// A weight has another shape than the config implies.
    #[error("{}: tensor `{name}` has shape {got:?}, expected {expected:?}", file.display())]
    ShapeMismatch {
        file: PathBuf,
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },

    /// A tensor whose storage type we do not read.
    #[error("{}: tensor `{name}` has type {ty}, which is not supported", file.display())]
    UnsupportedType {
        file: PathBuf,
        name: String,
        ty: String,
    },

    /// A checkpoint file that is malformed.
    #[error("{}: {msg}", file.display())]
    Format { file: PathBuf, msg: String },

    /// A bad argument or input, naming the parameter.
    #[error("invalid `{param}`: {msg}")]
    InvalidArgument { param: &'static str, msg: String },
}
