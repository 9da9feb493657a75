//! ferroformers: Hugging Face transformers, in Rust.
//!
//! ```no_run
//! use ferroformers::prelude::*;
//!
//! let tokenizer = AutoTokenizer::from_pretrained("Qwen/Qwen2.5-7B-Instruct")?;
//! let messages = [ChatMessage::user("Who are you?")];
//! let ids = tokenizer.apply_chat_template(&messages, &ChatTemplateOptions::generation_prompt())?;
//! println!("{}", tokenizer.decode(&ids, false)?);
//! # Ok::<(), ferroformers::tokenizers::TokenizerError>(())
//! ```

pub use candle_core as candle;
pub use ferro_core as core;
pub use ferro_generate as generate;
pub use ferro_models as models;
pub use ferro_nn as nn;
pub use ferro_pipelines as pipelines;
pub use ferro_tokenizers as tokenizers;

pub mod quantize;

/// The names a transformers user reaches for.
pub mod prelude {
    pub use ferro_core::{HubOptions, ModelSource};
    pub use ferro_generate::{generate_streaming, Generate, GenerateOutput, GenerationConfig};
    pub use ferro_models::{AutoModelForCausalLM, CausalLm, LoadOptions};
    pub use ferro_pipelines::{pipeline, Pipeline, SemanticSearch, SentenceTransformer, Task};
    pub use ferro_tokenizers::{
        AutoTokenizer, ChatMessage, ChatTemplateOptions, EncodeOptions, Padding, Side, Tokenizer,
        TokenizerLoadOptions,
    };
}
