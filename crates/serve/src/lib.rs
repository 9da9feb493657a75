//! ferroformers serving. So far: OpenAI's chat-completions and completions request bodies,
//! parsed strictly and checked parameter by parameter into a `GenerationConfig`, with
//! OpenAI-style error bodies (`protocol.rs`), and the response bodies, streamed chunks and
//! server-sent-event framing its clients read (`response.rs`). The engine (continuous
//! batching) and the HTTP server (`ferro serve`) are issue 6's next steps.

pub mod protocol;
pub mod response;

pub use protocol::{ApiError, ChatCompletionRequest, ChatMessage, CompletionRequest, Role};
