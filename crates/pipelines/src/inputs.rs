//! What every encoder pipeline does first: resolve the model and its tokenizer, and turn
//! one text into the model's input tensors (truncated on request, refused when too long).

use candle_core::{DType, Device, Tensor};
use ferro_core::{HubOptions, ModelSource};
use ferro_tokenizers::{AutoTokenizer, EncodeOptions, PairStrategy, PairTruncation, Tokenizer};

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

/// Encodes `text` (special tokens added), or the pair `text`, `pair` (truncated longest
/// first, as transformers' `truncation=True`), cut to `truncation` tokens when given; more
/// tokens than the model's `positions` is an error saying so.
pub(crate) fn encode(
    tokenizer: &Tokenizer,
    text: &str,
    pair: Option<&str>,
    truncation: Option<usize>,
    positions: usize,
    device: &Device,
) -> Result<Encoded> {
    let (ids, offsets, types) = match pair {
        None => {
            let opts = EncodeOptions {
                truncation,
                ..EncodeOptions::default()
            };
            let enc = tokenizer.encode_batch(&[text], &opts)?;
            let ids = enc.input_ids.into_iter().next().unwrap_or_default();
            let offsets = enc.offsets.into_iter().next().unwrap_or_default();
            let types = vec![0; ids.len()];
            (ids, offsets, types)
        }
        Some(pair) => {
            let truncation = truncation.map(|max_length| PairTruncation {
                max_length,
                strategy: PairStrategy::LongestFirst,
                stride: 0,
            });
            let enc = tokenizer.encode_pair(text, pair, truncation)?;
            (
                enc.get_ids().to_vec(),
                enc.get_offsets().to_vec(),
                enc.get_type_ids().to_vec(),
            )
        }
    };
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
        token_type_ids: Tensor::from_vec(types, (1, n), device)?,
        attention_mask: Tensor::ones((1, n), DType::U32, device)?,
        input_ids,
        ids,
        offsets,
    })
}

/// Rows of token ids (with their type ids, or none for all 0) as one batch padded with
/// `pad` to the longest row: `input_ids`, `token_type_ids`, `attention_mask`, each `(b, t)`.
pub(crate) struct PaddedBatch {
    pub input_ids: Tensor,
    pub token_type_ids: Tensor,
    pub attention_mask: Tensor,
}

impl PaddedBatch {
    pub fn new(
        rows: &[&[u32]],
        types: Option<&[&[u32]]>,
        pad: u32,
        device: &Device,
    ) -> Result<Self> {
        let width = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        let (mut ids, mut tys, mut mask) = (Vec::new(), Vec::new(), Vec::new());
        for (i, row) in rows.iter().enumerate() {
            let fill = width - row.len();
            ids.extend(row.iter().copied().chain(std::iter::repeat_n(pad, fill)));
            match types.and_then(|t| t.get(i)) {
                Some(t) => tys.extend(t.iter().copied().chain(std::iter::repeat_n(0, fill))),
                None => tys.extend(std::iter::repeat_n(0u32, width)),
            }
            mask.extend(std::iter::repeat_n(1u32, row.len()).chain(std::iter::repeat_n(0, fill)));
        }
        let shape = (rows.len(), width);
        Ok(Self {
            input_ids: Tensor::from_vec(ids, shape, device)?,
            token_type_ids: Tensor::from_vec(tys, shape, device)?,
            attention_mask: Tensor::from_vec(mask, shape, device)?,
        })
    }
}
