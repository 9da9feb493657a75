//! transformers' `zero-shot-classification` pipeline: each candidate label becomes a
//! hypothesis ("This example is {}.") paired with the text, and an NLI model's entailment
//! score ranks the labels.

use candle_core::{DType, Tensor};
use ferro_generate::processors::softmax;
use ferro_models::{BertForSequenceClassification, LoadOptions};
use ferro_tokenizers::Tokenizer;
use serde::Serialize;

use crate::error::{PipelineError, Result};

/// The answer, as transformers returns it: labels best first, with their scores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZeroShotOutput {
    pub sequence: String,
    pub labels: Vec<String>,
    pub scores: Vec<f32>,
}

/// Candidate labels given as one string, comma-separated (as transformers splits them).
pub fn split_labels(labels: &str) -> Vec<String> {
    labels
        .split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

pub struct ZeroShotClassificationPipeline {
    model: BertForSequenceClassification,
    tokenizer: Tokenizer,
    entailment: usize,
    contradiction: usize,
}

impl ZeroShotClassificationPipeline {
    /// An NLI checkpoint: its id2label must name an `entailment` class.
    pub fn from_pretrained(model: &str) -> Result<Self> {
        Self::from_pretrained_with(model, &LoadOptions::default())
    }

    /// The same, loaded with `opts` (transformers' `model_kwargs`).
    pub fn from_pretrained_with(model: &str, opts: &LoadOptions) -> Result<Self> {
        let (source, tokenizer) = crate::inputs::resolve(model)?;
        let m = BertForSequenceClassification::from_source(&source, opts)?;
        let labels = m.bert.config.labels()?;
        let entailment = labels
            .iter()
            .position(|l| l.to_lowercase().starts_with("entail"))
            .ok_or_else(|| PipelineError::InvalidArgument {
                param: "model",
                msg: format!(
                    "`{model}` is not an NLI model: no `entailment` among its labels {labels:?}"
                ),
            })?;
        // As transformers: contradiction is the first class, or the last when entailment is.
        let contradiction = if entailment == 0 { labels.len() - 1 } else { 0 };
        Ok(Self {
            model: m,
            tokenizer,
            entailment,
            contradiction,
        })
    }

    /// Ranks `labels` for `text`. With `multi_label`, each label is scored on its own
    /// (entailment against contradiction); otherwise the entailment scores are
    /// normalized over the labels. One label is always scored on its own.
    pub fn call(
        &self,
        text: &str,
        labels: &[String],
        hypothesis_template: &str,
        multi_label: bool,
    ) -> Result<ZeroShotOutput> {
        if labels.is_empty() {
            return Err(PipelineError::InvalidArgument {
                param: "candidate_labels",
                msg: "give at least one label".into(),
            });
        }
        if !hypothesis_template.contains("{}") {
            return Err(PipelineError::InvalidArgument {
                param: "hypothesis_template",
                msg: format!("`{hypothesis_template}` has no `{{}}` for the label"),
            });
        }
        let device = &self.model.bert.device;
        let mut logits = Vec::with_capacity(labels.len());
        for label in labels {
            let hypothesis = hypothesis_template.replace("{}", label);
            let enc = self
                .tokenizer
                .backend()
                .encode((text, hypothesis.as_str()), true)
                .map_err(|e| PipelineError::InvalidArgument {
                    param: "inputs",
                    msg: e.to_string(),
                })?;
            let n = enc.get_ids().len();
            let ids = Tensor::from_vec(enc.get_ids().to_vec(), (1, n), device)?;
            let types = Tensor::from_vec(enc.get_type_ids().to_vec(), (1, n), device)?;
            let mask = Tensor::ones((1, n), DType::U32, device)?;
            let row: Vec<f32> = self
                .model
                .forward(&ids, &types, &mask)?
                .squeeze(0)?
                .to_vec1()?;
            logits.push(row);
        }
        let scores: Vec<f32> = if multi_label || labels.len() == 1 {
            logits
                .iter()
                .map(|l| softmax(&[l[self.entailment], l[self.contradiction]])[0])
                .collect()
        } else {
            let e: Vec<f32> = logits.iter().map(|l| l[self.entailment]).collect();
            softmax(&e)
        };
        let mut order: Vec<usize> = (0..labels.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        Ok(ZeroShotOutput {
            sequence: text.to_string(),
            labels: order.iter().map(|&i| labels[i].clone()).collect(),
            scores: order.iter().map(|&i| scores[i]).collect(),
        })
    }
}
