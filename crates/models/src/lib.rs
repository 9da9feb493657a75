//! ferroformers architectures and `AutoModelForCausalLM`. Each architecture is one file
//! built from ferro-nn blocks; GGUF and safetensors load into the same code.

pub mod auto;
pub mod bert;
pub mod config;
pub mod error;
pub mod from_config;
pub mod gemma3;
pub mod gguf_names;
pub mod llama;
pub mod quantize;
pub mod save;

pub use auto::{parse_device, AutoModelForCausalLM, CausalLm, LoadOptions};
pub use bert::{
    BertConfig, BertFamily, BertForMaskedLM, BertForQuestionAnswering,
    BertForSequenceClassification, BertForTokenClassification, BertModel,
};
pub use config::{Architecture, CausalLmConfig, Gemma3Params};
pub use error::{ModelError, Result};
pub use ferro_nn::MatmulPrecision;
pub use from_config::InitScheme;
pub use quantize::{quantize_to_gguf, QuantizeOptions, QuantizeReport};
