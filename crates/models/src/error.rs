//! Errors of model loading and running.

use std::path::PathBuf;

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Core(#[from] ferro_core::Error),

    #[error(transparent)]
    Nn(#[from] ferro_nn::NnError),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// config.json or GGUF metadata is missing a field or holds a bad value.
    #[error("{}: {msg}", file.display())]
    Config { file: PathBuf, msg: String },

    /// An architecture or feature we do not implement.
    #[error("{0}")]
    Unsupported(String),

    /// The model has no weights we can read.
    #[error("no weights found for model `{model}`: {reason}")]
    NoWeights { model: String, reason: String },

    /// A bad argument or input, naming the parameter.
    #[error("invalid `{param}`: {msg}")]
    InvalidArgument { param: &'static str, msg: String },
}
