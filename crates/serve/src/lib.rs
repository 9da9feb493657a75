//! ferroformers' OpenAI-compatible HTTP server (`ferro serve`). `protocol.rs` parses
//! OpenAI's request bodies strictly into generation settings, with OpenAI-style errors;
//! `response.rs` writes the response bodies, stream chunks and server-sent events;
//! `server.rs` holds the routes, API key, limits, CORS, request logs, metrics and
//! graceful shutdown; `chat.rs` and `completions.rs` the two generation routes. The
//! handlers reach the model only through the engine's handle (`ferro-engine`).

mod chat;
mod completions;
mod embeddings;
mod engine_io;
pub mod protocol;
pub mod response;
mod server;

pub use embeddings::Embedder;
pub use protocol::{ApiError, ChatCompletionRequest, ChatMessage, CompletionRequest, Role};
pub use server::{router, serve, ServerConfig};
