//! Errors of the pipelines: each names the file, field or input at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Core(#[from] ferro_core::Error),
    #[error(transparent)]
    Model(#[from] ferro_models::ModelError),
    #[error(transparent)]
    Tokenizer(#[from] ferro_tokenizers::TokenizerError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A pipeline configuration file is missing a field, malformed, or asks for what is
    /// not supported.
    #[error("{}: {msg}", file.display())]
    Config { file: PathBuf, msg: String },
    #[error("invalid `{param}`: {msg}")]
    InvalidArgument { param: &'static str, msg: String },
}

pub type Result<T> = std::result::Result<T, PipelineError>;
