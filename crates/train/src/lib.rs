//! ferroformers' training: the Trainer, optimizers and learning-rate schedules, and LoRA
//! adapters in PEFT's format will live here. For now it holds the evaluation metrics a Trainer
//! reports ([`metrics`]), each equal to the Python library everyone compares against: BLEU as
//! sacrebleu, ROUGE as rouge-score, classification scores as scikit-learn, entity-level scores
//! as seqeval.

pub mod metrics;

pub use metrics::{
    corpus_bleu, sentence_bleu, BleuOptions, BleuScore, MetricError, PorterStemmer, RougeScore,
    RougeScorer, RougeType,
};
