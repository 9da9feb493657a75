//! transformers' `text-classification` pipeline (`sentiment-analysis`): labels with scores,
//! best first; the score function from the config's problem type unless asked otherwise.

use ferro_generate::processors::softmax;
use ferro_models::{BertForSequenceClassification, LoadOptions};
use ferro_tokenizers::Tokenizer;
use serde::Serialize;

use crate::error::{PipelineError, Result};
use crate::inputs::{encode, max_length, resolve};

/// transformers' `function_to_apply`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FunctionToApply {
    /// Sigmoid for multi-label (or one-label) models, softmax otherwise, nothing for
    /// regression.
    #[default]
    Default,
    Sigmoid,
    Softmax,
    None,
}

impl FunctionToApply {
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "sigmoid" => Self::Sigmoid,
            "softmax" => Self::Softmax,
            "none" => Self::None,
            _ => {
                return Err(PipelineError::InvalidArgument {
                    param: "function_to_apply",
                    msg: format!("`{name}` is not one of sigmoid, softmax, none"),
                })
            }
        })
    }
}

/// How many labels to return: transformers' `top_k` (absent: the best one; `None`: all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TopK {
    #[default]
    Best,
    All,
    K(usize),
}

/// One label and its score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelScore {
    pub label: String,
    pub score: f32,
}

pub struct TextClassificationPipeline {
    model: BertForSequenceClassification,
    tokenizer: Tokenizer,
    labels: Vec<String>,
    max_length: usize,
}

impl TextClassificationPipeline {
    /// A sequence-classification checkpoint (folder or Hub id) and its tokenizer.
    pub fn from_pretrained(model: &str) -> Result<Self> {
        Self::from_pretrained_with(model, &LoadOptions::default())
    }

    /// The same, loaded with `opts` (transformers' `model_kwargs`).
    pub fn from_pretrained_with(model: &str, opts: &LoadOptions) -> Result<Self> {
        let (source, tokenizer) = resolve(model)?;
        let m = BertForSequenceClassification::from_source(&source, opts)?;
        let mut labels = m.bert.config.labels()?;
        if labels.is_empty() {
            // transformers names unnamed classes LABEL_i.
            let n = m.num_labels();
            labels = (0..n).map(|i| format!("LABEL_{i}")).collect();
        }
        let max_length = max_length(&tokenizer, m.bert.config.max_tokens());
        Ok(Self {
            model: m,
            tokenizer,
            labels,
            max_length,
        })
    }

    /// Classifies `text`. Without `truncation` a text longer than the model takes is an
    /// error (as in transformers); with it, the text is cut to the tokenizer's
    /// `model_max_length`.
    pub fn call(
        &self,
        text: &str,
        top_k: TopK,
        function: FunctionToApply,
        truncation: bool,
    ) -> Result<Vec<LabelScore>> {
        self.call_pair(text, None, top_k, function, truncation)
    }

    /// Classifies `text`, or the pair (`text`, `text_pair`) as one input (transformers'
    /// `{"text": ..., "text_pair": ...}`); truncation cuts the longer text first.
    pub fn call_pair(
        &self,
        text: &str,
        text_pair: Option<&str>,
        top_k: TopK,
        function: FunctionToApply,
        truncation: bool,
    ) -> Result<Vec<LabelScore>> {
        let bert = &self.model.bert;
        let e = encode(
            &self.tokenizer,
            text,
            text_pair,
            truncation.then_some(self.max_length),
            bert.config.max_tokens(),
            &bert.device,
        )?;
        let logits: Vec<f32> = self
            .model
            .forward(&e.input_ids, &e.token_type_ids, &e.attention_mask)?
            .squeeze(0)?
            .to_vec1()?;
        let scores = self.scores(&logits, function);
        let mut out: Vec<LabelScore> = self
            .labels
            .iter()
            .zip(scores)
            .map(|(label, score)| LabelScore {
                label: label.clone(),
                score,
            })
            .collect();
        out.sort_by(|a, b| b.score.total_cmp(&a.score));
        let keep = match top_k {
            TopK::Best => 1,
            TopK::All => out.len(),
            TopK::K(k) => k,
        };
        out.truncate(keep);
        Ok(out)
    }

    fn scores(&self, logits: &[f32], function: FunctionToApply) -> Vec<f32> {
        let problem = self.model.bert.config.problem_type.as_deref();
        let function = match function {
            FunctionToApply::Default => match problem {
                Some("multi_label_classification") => FunctionToApply::Sigmoid,
                Some("regression") => FunctionToApply::None,
                _ if logits.len() == 1 => FunctionToApply::Sigmoid,
                _ => FunctionToApply::Softmax,
            },
            f => f,
        };
        match function {
            FunctionToApply::Sigmoid => logits.iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect(),
            FunctionToApply::Softmax => softmax(logits),
            _ => logits.to_vec(),
        }
    }
}
