//! ferroformers generation: `GenerationConfig`, logits processors and sampling, stopping
//! criteria and stop strings, the batched generate loop, beam search, speculative decoding,
//! and text streaming.

pub mod beam;
pub mod config;
pub mod conversation;
pub mod error;
pub mod generate;
pub mod processors;
pub mod sampling;
pub mod speculative;
pub mod stopping;
pub mod streamer;
pub mod tool_calls;

pub use config::{EarlyStopping, GenerationConfig};
pub use conversation::{Conversation, FittedPrompt};
pub use error::{GenerateError, Result};
pub use generate::{
    generate_streaming, generate_text, generate_text_assisted, Generate, GenerateOutput, TokenEvent,
};
pub use processors::{LogitsProcessor, LogitsProcessorList, Sequence};
pub use sampling::TokenLogprob;
pub use speculative::SpeculationStats;
pub use stopping::FinishReason;
pub use streamer::{CancelHandle, TextIteratorStreamer};
pub use tool_calls::{parse_tool_calls, ParsedReply, ToolCall};
