//! ferroformers' serving engine: continuous batching of generation requests over one
//! model, with no HTTP. A thread owns the model; clients submit requests through an
//! `EngineHandle` and read each request's tokens from its own channel.
//!
//! - Continuous batching: sequences join and leave the running batch at token
//!   boundaries; every step packs all running sequences' next tokens into one forward
//!   call (the weights are read once for all of them).
//! - Chunked prefill: prompts are fed in chunks within a per-step token budget, so a long
//!   prompt does not stall the streams already running; prompts and decoding rows go in
//!   separate calls, so a sequence's greedy tokens do not depend on its neighbours.
//! - KV cache: each sequence holds its own buffers, accounted in blocks of
//!   `block_size` tokens against one budget (`kv_cache_tokens`); admission waits for
//!   blocks, and when running sequences outgrow the budget the youngest is preempted and
//!   recomputed later.
//! - Prefix caching: a new prompt starts from a copy of the longest prefix it shares with
//!   a running sequence or a kept finished one; several choices of one prompt (`n`)
//!   share its prefill.
//! - Admission control: `max_running` sequences, `max_queued` waiting requests (then
//!   `SubmitError::QueueFull`), `max_batched_tokens` per step.
//! - Cancellation: dropping a `ResponseStream` (a client that disconnects) frees the
//!   request's sequences at the next step.

mod config;
mod engine;
mod metrics;
mod model;
mod prefix_cache;
mod request;
mod scheduler;

pub use config::EngineConfig;
pub use engine::{Engine, EngineHandle};
pub use metrics::{EngineMetrics, Histogram};
pub use model::StepModel;
pub use request::{Event, GenerationRequest, ResponseStream, SubmitError};
