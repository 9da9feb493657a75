//! Errors of generation.

pub type Result<T, E = GenerateError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Model(#[from] ferro_models::ModelError),

    #[error(transparent)]
    Tokenizer(#[from] ferro_tokenizers::TokenizerError),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// A bad argument, naming the parameter.
    #[error("invalid `{param}`: {msg}")]
    InvalidArgument { param: &'static str, msg: String },
}
