//! ferroformers building blocks, shared by every architecture: weights (safetensors or
//! GGUF), `Linear` (dense or quantized), RMSNorm, embeddings, rotary embeddings,
//! grouped-query attention with a KV cache (and left-padded batches), the gated MLP, and
//! trainable parameters (`Var`s by checkpoint name) when a model is loaded for training,
//! and LoRA adapters in PEFT's format (`lora`).

pub mod attention;
mod attention_cpu;
mod attention_prompt;
mod attention_train_cpu;
mod autocast;
mod bias_cpu;
pub mod cache;
pub mod checkpoint;
mod cpu_op;
pub mod cross_entropy_cpu;
pub mod dropout;
pub mod embedding;
pub mod error;
mod frozen_matmul;
mod gated_cpu;
mod gelu_cpu;
pub mod init;
pub mod int16_matmul;
mod layer_norm_cpu;
pub mod linear;
pub mod lora;
mod matmul_cpu;
pub mod mlp;
pub mod norm;
pub mod optim_cpu;
pub mod parameters;
pub mod quant;
mod rms_norm_cpu;
pub mod rotary;
mod softmax_cpu;
#[cfg(test)]
mod test_util;
mod vec_math;
pub mod weights;

pub use attention::{bidirectional_attention, encoder_attention, Attention, AttentionConfig};
pub use autocast::{autocast_dtype, device_supports, with_autocast};
pub use cache::{Cache, Caches, KvCache, KvLayout};
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use error::{NnError, Result};
pub use linear::{Linear, LinearWeight, MatmulPrecision};
pub use lora::{save_adapter, LoraAdapter, LoraConfig, LoraSpec, TargetModules};
pub use matmul_cpu::matmul;
pub use mlp::{Activation, GatedMlp};
pub use norm::{LayerNorm, RmsNorm};
pub use parameters::Parameters;
pub use quant::QuantMatrix;
pub use rotary::{RopeScaling, RotaryEmbedding};
pub use weights::{GgufNameMap, InitFn, Weights};
