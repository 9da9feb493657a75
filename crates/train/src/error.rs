//! Errors of training: each names the argument, file or field at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Core(#[from] ferro_core::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Model(#[from] ferro_models::ModelError),
    #[error(transparent)]
    Nn(#[from] ferro_nn::NnError),
    #[error(transparent)]
    Tokenizer(#[from] ferro_tokenizers::TokenizerError),
    #[error(transparent)]
    Metric(#[from] crate::metrics::MetricError),
    /// A bad argument (a TrainingArguments field, a call's parameter): names it.
    #[error("invalid `{param}`: {msg}")]
    InvalidArgument { param: &'static str, msg: String },
    /// A file that cannot be read or written, or whose content is wrong.
    #[error("{}: {msg}", path.display())]
    File { path: PathBuf, msg: String },
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;
