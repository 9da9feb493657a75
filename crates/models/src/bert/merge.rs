//! PEFT's `merge_and_unload` for the BERT family: each LoRA adapter folded into its
//! layer's weight (`W + scaling · B A`) and dropped.

use ferro_nn::Linear;

use super::{
    BertForMaskedLM, BertForQuestionAnswering, BertForSequenceClassification,
    BertForTokenClassification, BertModel, ClassifierHead,
};
use crate::error::Result;

impl BertModel {
    /// The encoder's linear layers (the pooler's included).
    fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut out: Vec<&mut Linear> = Vec::new();
        for l in &mut self.layers {
            out.extend([
                &mut l.query,
                &mut l.key,
                &mut l.value,
                &mut l.attention_output,
                &mut l.intermediate,
                &mut l.output,
            ]);
        }
        out.extend(self.pooler.as_mut());
        out
    }

    /// Merges `heads`' and the encoder's adapters; `parameters` keeps what stays trainable.
    fn merge_with(&mut self, heads: Vec<&mut Linear>) -> Result<()> {
        let mut all = self.linears_mut();
        all.extend(heads);
        ferro_nn::lora::merge_all(all)?;
        self.parameters = self.parameters.without_lora();
        Ok(())
    }

    /// PEFT's `merge_and_unload`: every adapter folded into its base weight and dropped;
    /// `parameters` keeps what stays trainable (modules to save, under their own names).
    pub fn merge_and_unload(mut self) -> Result<Self> {
        self.merge_with(Vec::new())?;
        Ok(self)
    }
}

impl BertForSequenceClassification {
    /// PEFT's `merge_and_unload` (see `BertModel::merge_and_unload`).
    pub fn merge_and_unload(mut self) -> Result<Self> {
        let heads = match &mut self.head {
            ClassifierHead::Pooled(c) => vec![c],
            ClassifierHead::Roberta { dense, out_proj } => vec![dense, out_proj],
            ClassifierHead::DistilBert { pre, classifier } => vec![pre, classifier],
        };
        self.bert.merge_with(heads)?;
        Ok(self)
    }
}

impl BertForTokenClassification {
    /// PEFT's `merge_and_unload` (see `BertModel::merge_and_unload`).
    pub fn merge_and_unload(mut self) -> Result<Self> {
        self.bert.merge_with(vec![&mut self.classifier])?;
        Ok(self)
    }
}

impl BertForQuestionAnswering {
    /// PEFT's `merge_and_unload` (see `BertModel::merge_and_unload`).
    pub fn merge_and_unload(mut self) -> Result<Self> {
        self.bert.merge_with(vec![&mut self.qa_outputs])?;
        Ok(self)
    }
}

impl BertForMaskedLM {
    /// PEFT's `merge_and_unload` (see `BertModel::merge_and_unload`).
    pub fn merge_and_unload(mut self) -> Result<Self> {
        self.bert
            .merge_with(vec![&mut self.transform, &mut self.decoder])?;
        Ok(self)
    }
}
