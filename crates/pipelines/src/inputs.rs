//! What every encoder pipeline does first: resolve the model and its tokenizer, and turn
//! one text into the model's input tensors (truncated on request, refused when too long).

use candle_core::{DType, Device, Tensor};
use ferro_core::{HubOptions, ModelSource};
use ferro_tokenizers::{AutoTokenizer, EncodeOptions, Tokenizer};

use crate::error::{PipelineError, Result};

/// The checkpoint's source and its tokenizer.
pub(crate) fn resolve(model: &str) -> Result<(ModelSource, Tokenizer)> {
    let source = ModelSource::resolve(model, &HubOptions::from_env())?;
    Ok((source, AutoTokenizer::from_pretrained(model)?))
}

/// The length texts are cut to with truncation: the tokenizer's `model_max_length`, at
/// most the model's positions.
pub(crate) fn max_length(tokenizer: &Tokenizer, positions: usize) -> usize {
    tokenizer
        .model_max_length
        .unwrap_or(positions)
        .min(positions)
}

/// One text as model inputs, `(1, n)` each.
pub(crate) struct Encoded {
    pub ids: Vec<u32>,
    /// Character offsets of each token in the text (`(0, 0)` for added special tokens).
    pub offsets: Vec<(usize, usize)>,
    pub input_ids: Tensor,
    pub token_type_ids: Tensor,
    pub attention_mask: Tensor,
}

/// Encodes `text` (special tokens added), cut to `truncation` tokens when given; more
/// tokens than the model's `positions` is an error saying so.
pub(crate) fn encode(
    tokenizer: &Tokenizer,
    text: &str,
    truncation: Option<usize>,
    positions: usize,
    device: &Device,
) -> Result<Encoded> {
    let opts = EncodeOptions {
        truncation,
        ..EncodeOptions::default()
    };
    let enc = tokenizer.encode_batch(&[text], &opts)?;
    let ids = enc.input_ids.into_iter().next().unwrap_or_default();
    let offsets = enc.offsets.into_iter().next().unwrap_or_default();
    if ids.len() > positions {
        return Err(PipelineError::InvalidArgument {
            param: "inputs",
            msg: format!(
                "{} tokens; the model takes at most {positions} (pass truncation to cut the text)",
                ids.len()
            ),
        });
    }
    let n = ids.len();
    let input_ids = Tensor::from_vec(ids.clone(), (1, n), device)?;
    Ok(Encoded {
        token_type_ids: input_ids.zeros_like()?,
        attention_mask: Tensor::ones((1, n), DType::U32, device)?,
        input_ids,
        ids,
        offsets,
    })
}
