//! transformers' `fill-mask` pipeline: the most likely tokens for each mask, with the
//! sentence they make.

use candle_core::{DType, Tensor, D};
use ferro_models::{BertForMaskedLM, LoadOptions};
use ferro_tokenizers::Tokenizer;
use serde::Serialize;

use crate::error::{PipelineError, Result};

/// One candidate for a mask.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FillMaskResult {
    pub score: f32,
    pub token: u32,
    pub token_str: String,
    /// The input with this token in the mask's place (with one mask, special tokens
    /// left out; with several, kept, as transformers shows them).
    pub sequence: String,
}

pub struct FillMaskPipeline {
    model: BertForMaskedLM,
    tokenizer: Tokenizer,
    mask_id: u32,
}

impl FillMaskPipeline {
    pub fn from_pretrained(model: &str) -> Result<Self> {
        Self::from_pretrained_with(model, &LoadOptions::default())
    }

    /// The same, loaded with `opts` (transformers' `model_kwargs`).
    pub fn from_pretrained_with(model: &str, opts: &LoadOptions) -> Result<Self> {
        let (source, tokenizer) = crate::inputs::resolve(model)?;
        let m = BertForMaskedLM::from_source(&source, opts)?;
        let mask_id = ["[MASK]", "<mask>"]
            .iter()
            .find_map(|t| tokenizer.token_to_id(t))
            .ok_or_else(|| PipelineError::InvalidArgument {
                param: "model",
                msg: format!("the tokenizer of `{model}` has no mask token"),
            })?;
        Ok(Self {
            model: m,
            tokenizer,
            mask_id,
        })
    }

    /// The `top_k` best tokens for each mask in `text` (or the `targets`' first tokens, in
    /// order of probability), one list per mask.
    pub fn call(
        &self,
        text: &str,
        top_k: usize,
        targets: Option<&[String]>,
    ) -> Result<Vec<Vec<FillMaskResult>>> {
        let ids = self.tokenizer.encode(text, true)?.ids;
        let masks: Vec<usize> = (0..ids.len()).filter(|&i| ids[i] == self.mask_id).collect();
        if masks.is_empty() {
            return Err(PipelineError::InvalidArgument {
                param: "inputs",
                msg: "no mask token in the input".into(),
            });
        }
        let limit = self.model.bert.config.max_tokens();
        if ids.len() > limit {
            return Err(PipelineError::InvalidArgument {
                param: "inputs",
                msg: format!("{} tokens; the model takes at most {limit}", ids.len()),
            });
        }
        let target_ids: Option<Vec<u32>> = targets
            .map(|ts| {
                ts.iter()
                    .map(|t| {
                        let enc = self.tokenizer.encode(t, false)?;
                        enc.ids
                            .first()
                            .copied()
                            .ok_or_else(|| PipelineError::InvalidArgument {
                                param: "targets",
                                msg: format!("`{t}` gives no token"),
                            })
                    })
                    .collect::<Result<Vec<u32>>>()
            })
            .transpose()?;
        let n = ids.len();
        let device = &self.model.bert.device;
        let input = Tensor::from_vec(ids.clone(), (1, n), device)?;
        let mask = Tensor::ones((1, n), DType::U32, device)?;
        let logits = self
            .model
            .forward(&input, &input.zeros_like()?, &mask)?
            .squeeze(0)?;
        let probs = candle_nn::ops::softmax(&logits, D::Minus1)?;
        let single = masks.len() == 1;
        masks
            .iter()
            .map(|&at| {
                let p: Vec<f32> = probs.get(at)?.to_vec1()?;
                let mut candidates: Vec<u32> = match &target_ids {
                    Some(t) => t.clone(),
                    None => (0..p.len() as u32).collect(),
                };
                candidates.sort_by(|&a, &b| p[b as usize].total_cmp(&p[a as usize]));
                candidates.truncate(if target_ids.is_some() {
                    candidates.len().min(top_k.max(1))
                } else {
                    top_k
                });
                candidates
                    .into_iter()
                    .map(|token| {
                        let mut filled = ids.clone();
                        filled[at] = token;
                        Ok(FillMaskResult {
                            score: p[token as usize],
                            token,
                            token_str: self.tokenizer.decode(&[token], false)?,
                            sequence: self.tokenizer.decode(&filled, single)?,
                        })
                    })
                    .collect()
            })
            .collect()
    }
}
