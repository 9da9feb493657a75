//! ferroformers' training: `Trainer` and `TrainingArguments` as transformers' ([`trainer`],
//! [`args`]), datasets and collators ([`data`]), losses as transformers' heads compute them ([`loss`]),
//! optimizers as PyTorch's ([`optim`]), learning-rate schedules as transformers'
//! ([`schedule`]), and the evaluation metrics a Trainer reports ([`metrics`]), each equal to
//! the Python library everyone compares against: BLEU as sacrebleu, ROUGE as rouge-score,
//! classification scores as scikit-learn, entity-level scores as seqeval. Models are loaded
//! for training with `LoadOptions::trainable`.

pub mod args;
pub mod data;
pub mod error;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod parquet;
pub mod recipe;
pub mod report;
pub mod schedule;
pub mod trainer;

pub use args::{IntervalStrategy, TrainingArguments};
pub use data::{collate, tokenize_classification, Batch, ClassificationColumns, Dataset, Example};
pub use error::{Result, TrainError};
pub use recipe::{TrainConfig, TrainReport};
pub use trainer::{
    classification_metrics, entity_metrics, ComputeMetrics, EvalPrediction, LoraModel, TrainOutput,
    TrainableModel, Trainer,
};

pub use metrics::{
    corpus_bleu, sentence_bleu, BleuOptions, BleuScore, MetricError, PorterStemmer, RougeScore,
    RougeScorer, RougeType,
};
