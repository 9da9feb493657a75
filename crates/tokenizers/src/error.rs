//! Errors of the tokenization layer; each names the file, field or template at fault.

use std::path::PathBuf;

pub type Result<T, E = TokenizerError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(transparent)]
    Core(#[from] ferro_core::Error),

    /// A tokenizer file that exists but cannot be used.
    #[error("{}: {msg}", path.display())]
    File { path: PathBuf, msg: String },

    /// The model has no tokenizer in any form we read.
    #[error("no tokenizer found for model `{model}`: {reason}")]
    NotFound { model: String, reason: String },

    /// GGUF tokenizer metadata missing or inconsistent.
    #[error("{}: GGUF tokenizer metadata: {msg}", path.display())]
    Gguf { path: PathBuf, msg: String },

    /// An error from the `tokenizers` library while encoding or decoding.
    #[error("{op} failed: {msg}")]
    Backend { op: &'static str, msg: String },

    /// A token id outside the vocabulary.
    #[error("token id {id} is out of the vocabulary (size {vocab_size})")]
    IdOutOfVocab { id: u32, vocab_size: usize },

    /// A bad argument: names the parameter.
    #[error("invalid `{param}`: {msg}")]
    InvalidArgument { param: &'static str, msg: String },

    /// The model has no chat template and none was supplied.
    #[error(
        "model `{model}` has no chat template; pass one (`--chat-template FILE` on the CLI, \
         `ChatTemplateOptions::chat_template` in Rust)"
    )]
    NoChatTemplate { model: String },

    /// A chat template failed to compile or raised while rendering.
    #[error("chat template `{template}`{}: {msg}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Template {
        template: String,
        line: Option<usize>,
        msg: String,
    },

    /// The messages given to a chat template are malformed.
    #[error("invalid messages: {0}")]
    Messages(String),
}

impl TokenizerError {
    pub(crate) fn file(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        TokenizerError::File {
            path: path.into(),
            msg: msg.into(),
        }
    }

    pub(crate) fn backend(op: &'static str, e: impl std::fmt::Display) -> Self {
        TokenizerError::Backend {
            op,
            msg: e.to_string(),
        }
    }
}
