//! transformers' `feature-extraction` pipeline: the encoder's last hidden states for each
//! token, `[1][tokens][hidden]` as transformers returns them.

use candle_core::{DType, Tensor};
use ferro_core::{HubOptions, ModelSource};
use ferro_models::{BertModel, LoadOptions};
use ferro_tokenizers::{AutoTokenizer, EncodeOptions, Tokenizer};

use crate::error::{PipelineError, Result};

pub struct FeatureExtractionPipeline {
    model: BertModel,
    tokenizer: Tokenizer,
    max_length: usize,
}

impl FeatureExtractionPipeline {
    /// Any BERT-family checkpoint (a bare encoder or one inside a task model).
    pub fn from_pretrained(model: &str) -> Result<Self> {
        let source = ModelSource::resolve(model, &HubOptions::from_env())?;
        let m = BertModel::from_source(&source, &LoadOptions::default())?;
        let tokenizer = AutoTokenizer::from_pretrained(model)?;
        let positions = m.config.max_position_embeddings;
        let max_length = tokenizer
            .model_max_length
            .unwrap_or(positions)
            .min(positions);
        Ok(Self {
            model: m,
            tokenizer,
            max_length,
        })
    }

    /// `[1][tokens][hidden]`. Without `truncation` a text longer than the model takes is
    /// an error; with it, it is cut to the tokenizer's `model_max_length`.
    pub fn call(&self, text: &str, truncation: bool) -> Result<Vec<Vec<Vec<f32>>>> {
        let opts = EncodeOptions {
            truncation: truncation.then_some(self.max_length),
            ..EncodeOptions::default()
        };
        let ids = self
            .tokenizer
            .encode_batch(&[text], &opts)?
            .input_ids
            .into_iter()
            .next()
            .unwrap_or_default();
        let limit = self.model.config.max_position_embeddings;
        if ids.len() > limit {
            return Err(PipelineError::InvalidArgument {
                param: "inputs",
                msg: format!(
                    "{} tokens; the model takes at most {limit} (pass truncation to cut the text)",
                    ids.len()
                ),
            });
        }
        let n = ids.len();
        let device = &self.model.device;
        let ids = Tensor::from_vec(ids, (1, n), device)?;
        let mask = Tensor::ones((1, n), DType::U32, device)?;
        let states = self.model.forward(&ids, &ids.zeros_like()?, &mask)?;
        Ok(states.to_dtype(DType::F32)?.to_vec3()?)
    }
}
