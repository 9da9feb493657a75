//! ferroformers generation: `GenerationConfig`, logits processors and sampling, the
//! generate loop over any causal LM, and text streaming.

pub mod config;
pub mod error;
pub mod generate;
pub mod logits;

pub use config::GenerationConfig;
pub use error::{GenerateError, Result};
pub use generate::{generate_streaming, Generate, GenerateOutput};
