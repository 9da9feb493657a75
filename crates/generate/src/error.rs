//! Errors of generation.

pub type Result<T, E = GenerateError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Model(#[from] ferro_models::ModelError),

    #[error(transparent)]
    Nn(#[from] ferro_nn::NnError),

    #[error(transparent)]
    Tokenizer(#[from] ferro_tokenizers::TokenizerError),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// An unreadable generation_config.json, naming the file.
    #[error("{}: {msg}", file.display())]
    Config {
        file: std::path::PathBuf,
        msg: String,
    },

    /// A bad argument, naming the parameter.
    #[error("invalid `{param}`: {msg}")]
    InvalidArgument { param: &'static str, msg: String },
}
