//! `ferro quantize` as a library call: the model crate writes the weights and llama.cpp's
//! model keys, the tokenizers crate the tokenizer section.

use std::path::Path;

use candle_core::quantized::GgmlDType;
use ferro_core::ModelSource;
use ferro_models::{quantize_to_gguf, CausalLmConfig, QuantizeOptions, QuantizeReport};
use ferro_tokenizers::gguf_export::gguf_tokenizer_metadata;
use ferro_tokenizers::AutoTokenizer;

#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error(transparent)]
    Core(#[from] ferro_core::Error),
    #[error(transparent)]
    Model(#[from] ferro_models::ModelError),
    #[error(transparent)]
    Tokenizer(#[from] ferro_tokenizers::TokenizerError),
}

/// Writes `source` (a safetensors checkpoint folder, or a GGUF to requantize) to `out`
/// as a GGUF with weight matrices in `dtype`. A checkpoint's tokenizer.json becomes the
/// GGUF tokenizer section; a GGUF keeps its own.
pub fn quantize_checkpoint(
    source: &ModelSource,
    out: &Path,
    dtype: GgmlDType,
) -> Result<QuantizeReport, QuantizeError> {
    let mut warnings = Vec::new();
    let mut extra_metadata = Vec::new();
    if source.gguf(None)?.is_none() {
        let config =
            CausalLmConfig::from_config_json(&source.required_file("config.json")?, Vec::new())?;
        if source.optional_file("tokenizer.json")?.is_some() {
            let tokenizer = AutoTokenizer::from_source(source, None)?;
            match gguf_tokenizer_metadata(&tokenizer, config.vocab_size) {
                Ok(meta) => extra_metadata = meta,
                Err(e) => warnings.push(format!("the GGUF carries no tokenizer: {e}")),
            }
        } else {
            warnings.push(format!(
                "{} has no tokenizer.json: the GGUF carries no tokenizer (llama.cpp needs one)",
                source.describe()
            ));
        }
    }
    let opts = QuantizeOptions {
        dtype,
        extra_metadata,
    };
    let mut report = quantize_to_gguf(source, out, &opts)?;
    report.warnings.splice(0..0, warnings);
    Ok(report)
}
