//! transformers' `feature-extraction` pipeline: the encoder's last hidden states for each
//! token, `[1][tokens][hidden]` as transformers returns them.

use candle_core::DType;
use ferro_models::{BertModel, LoadOptions};
use ferro_tokenizers::Tokenizer;

use crate::error::Result;
use crate::inputs::{encode, max_length, resolve};

pub struct FeatureExtractionPipeline {
    model: BertModel,
    tokenizer: Tokenizer,
    max_length: usize,
}

impl FeatureExtractionPipeline {
    /// Any BERT-family checkpoint (a bare encoder or one inside a task model).
    pub fn from_pretrained(model: &str) -> Result<Self> {
        Self::from_pretrained_with(model, &LoadOptions::default())
    }

    /// The same, loaded with `opts` (transformers' `model_kwargs`).
    pub fn from_pretrained_with(model: &str, opts: &LoadOptions) -> Result<Self> {
        let (source, tokenizer) = resolve(model)?;
        let m = BertModel::from_source(&source, opts)?;
        Ok(Self {
            max_length: max_length(&tokenizer, m.config.max_tokens()),
            model: m,
            tokenizer,
        })
    }

    /// `[1][tokens][hidden]`. Without `truncation` a text longer than the model takes is
    /// an error; with it, it is cut to the tokenizer's `model_max_length`.
    pub fn call(&self, text: &str, truncation: bool) -> Result<Vec<Vec<Vec<f32>>>> {
        let positions = self.model.config.max_tokens();
        let e = encode(
            &self.tokenizer,
            text,
            None,
            truncation.then_some(self.max_length),
            positions,
            &self.model.device,
        )?;
        let states = self
            .model
            .forward(&e.input_ids, &e.token_type_ids, &e.attention_mask)?;
        Ok(states.to_dtype(DType::F32)?.to_vec3()?)
    }
}
