//! ferroformers tokenization: `AutoTokenizer` over Hugging Face's `tokenizers` crate,
//! from a tokenizer.json (with transformers' side files) or from GGUF metadata alone;
//! chat templates rendered as transformers renders them; incremental decoding.

pub mod auto;
pub mod chat_template;
pub mod config;
pub mod error;
pub mod gguf;
pub mod gguf_export;
pub mod pyjson;
pub mod stream;
pub mod tokenizer;

pub use auto::{AutoTokenizer, TokenizerLoadOptions};
pub use chat_template::{ChatMessage, ChatTemplateOptions};
pub use error::{Result, TokenizerError};
pub use stream::DecodeStream;
pub use tokenizer::{
    BatchEncoding, ChatTemplates, EncodeOptions, Encoding, Padding, PairStrategy, PairTruncation,
    Side, SpecialTokens, Tokenizer,
};
