//! ferroformers' task pipelines. So far: sentence embeddings exactly as sentence-transformers
//! computes them (`sentence_embeddings.rs`).

pub mod error;
pub mod sentence_embeddings;

pub use error::{PipelineError, Result};
pub use sentence_embeddings::{Pooling, SentenceTransformer};
