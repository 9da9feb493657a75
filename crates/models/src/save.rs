//! Writing a checkpoint as transformers' `save_pretrained` does (config.json and
//! model.safetensors), each file written to a temporary name and renamed into place, so a
//! reader never sees half a file.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;

use crate::error::{ModelError, Result};

fn io_error(path: &Path, e: impl std::fmt::Display) -> ModelError {
    ModelError::Config {
        file: path.into(),
        msg: format!("cannot write: {e}"),
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| io_error(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_error(path, e))
}

/// `tensors` as a safetensors file at `path` (atomically).
pub fn save_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let map: HashMap<String, Tensor> = tensors.iter().cloned().collect();
    if map.len() != tensors.len() {
        return Err(ModelError::InvalidArgument {
            param: "tensors",
            msg: "two tensors have the same name".into(),
        });
    }
    let tmp = path.with_extension("safetensors.tmp");
    candle_core::safetensors::save(&map, &tmp).map_err(|e| io_error(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_error(path, e))
}

/// `dir`/config.json and `dir`/model.safetensors (the folder is made if needed).
pub fn save_checkpoint(
    dir: &Path,
    config: &serde_json::Value,
    tensors: &[(String, Tensor)],
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    save_safetensors(&dir.join("model.safetensors"), tensors)?;
    let text = serde_json::to_string_pretty(config).map_err(|e| io_error(dir, e))?;
    write_atomic(&dir.join("config.json"), format!("{text}\n").as_bytes())
}
