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
    /// Boxed: generation errors are large and rare.
    #[error(transparent)]
    Generate(Box<ferro_generate::GenerateError>),
    /// A pipeline configuration file is missing a field, malformed, or asks for what is
    /// not supported.
    #[error("{}: {msg}", file.display())]
    Config { file: PathBuf, msg: String },
    #[error("invalid `{param}`: {msg}")]
    InvalidArgument { param: &'static str, msg: String },
}

impl From<ferro_generate::GenerateError> for PipelineError {
    fn from(e: ferro_generate::GenerateError) -> Self {
        PipelineError::Generate(Box::new(e))
    }
}

pub type Result<T> = std::result::Result<T, PipelineError>;
