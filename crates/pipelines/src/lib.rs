//! ferroformers' task pipelines: `pipeline(task, model)` as in transformers (`pipeline.rs`),
//! one file per task, sentence embeddings exactly as sentence-transformers computes them
//! (`sentence_embeddings.rs`) and semantic search over them (`semantic_search.rs`).

pub mod error;
pub mod feature_extraction;
pub mod fill_mask;
mod inputs;
pub mod pipeline;
pub mod question_answering;
pub mod semantic_search;
pub mod sentence_embeddings;
pub mod text_classification;
pub mod text_generation;
pub mod token_classification;
pub mod zero_shot;

pub use error::{PipelineError, Result};
pub use feature_extraction::FeatureExtractionPipeline;
pub use fill_mask::{FillMaskPipeline, FillMaskResult};
pub use pipeline::{pipeline, pipeline_with, Pipeline, Task};
pub use question_answering::{Answer, QaOptions, QuestionAnsweringPipeline};
pub use semantic_search::{Hit, SemanticSearch};
pub use sentence_embeddings::{Pooling, SentenceTransformer};
pub use text_classification::{FunctionToApply, LabelScore, TextClassificationPipeline, TopK};
pub use text_generation::{Prompt, TextGenerationPipeline};
pub use token_classification::{Aggregation, Entity, TokenClassificationPipeline};
pub use zero_shot::{split_labels, ZeroShotClassificationPipeline, ZeroShotOutput};
