//! ferroformers' task pipelines. So far: sentence embeddings exactly as sentence-transformers
//! computes them (`sentence_embeddings.rs`) and text classification (`text_classification.rs`).

pub mod error;
pub mod feature_extraction;
pub mod fill_mask;
mod inputs;
pub mod question_answering;
pub mod sentence_embeddings;
pub mod text_classification;
pub mod token_classification;
pub mod zero_shot;

pub use error::{PipelineError, Result};
pub use feature_extraction::FeatureExtractionPipeline;
pub use fill_mask::{FillMaskPipeline, FillMaskResult};
pub use question_answering::{Answer, QaOptions, QuestionAnsweringPipeline};
pub use sentence_embeddings::{Pooling, SentenceTransformer};
pub use text_classification::{FunctionToApply, LabelScore, TextClassificationPipeline, TopK};
pub use token_classification::{Aggregation, Entity, TokenClassificationPipeline};
pub use zero_shot::{split_labels, ZeroShotClassificationPipeline, ZeroShotOutput};
