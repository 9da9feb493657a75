//! The error type of the core crate: each variant names the file, field or model at fault.

use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A file exists but its content is malformed.
    #[error("{}: {msg}", path.display())]
    Format { path: PathBuf, msg: String },

    /// A model specification that is neither an existing path nor a Hub id.
    #[error("model `{spec}` not found: {reason}")]
    ModelNotFound { spec: String, reason: String },

    /// A file the model needs is absent from it.
    #[error("model `{model}` has no `{file}`{hint}")]
    MissingFile {
        model: String,
        file: String,
        hint: String,
    },

    /// Offline (or unreachable Hub) and the files are not in the local cache.
    #[error(
        "model `{repo_id}` (revision `{revision}`) is not in the Hugging Face cache{why}.\n\
         Looked in:\n{searched}\n\
         To get it: run once with network access (it is downloaded into the cache), or \
         `hf download {repo_id} --revision {revision}` on a machine that has network access and copy its \
         cache folder here, \
         or pass a local directory or .gguf file as the model"
    )]
    NotCached {
        repo_id: String,
        revision: String,
        why: String,
        searched: String,
    },

    /// A download from the Hub failed.
    #[error("downloading `{file}` of `{repo_id}` from {endpoint} failed: {msg}")]
    Download {
        repo_id: String,
        file: String,
        endpoint: String,
        msg: String,
    },
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn format(path: &Path, msg: impl Into<String>) -> Self {
        Error::Format {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
}
