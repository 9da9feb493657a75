//! What passes between a client of the engine (the HTTP layer) and the engine: a request,
//! the events that answer it, and why a request was refused.

use std::sync::Arc;

use ferro_generate::{FinishReason, GenerationConfig, TokenLogprob};
use tokio::sync::mpsc;

use crate::engine::Inbox;

/// One generation request: `config.num_return_sequences` sequences after `prompt`.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    /// For logs (the HTTP layer's request id).
    pub id: String,
    pub prompt: Vec<u32>,
    /// Sampling, stopping and length; `max_new_tokens` must fit in the context after the
    /// prompt (the HTTP layer caps an unset `max_tokens` to the room left).
    pub config: GenerationConfig,
}

/// What the engine tells the client, per sequence `seq` of the request.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A new token, with the text it makes visible (often empty while a multi-byte
    /// character or a possible stop string is incomplete) and, when asked for, its
    /// log-probability with alternatives.
    Token {
        seq: usize,
        token: u32,
        text: String,
        logprob: Option<TokenLogprob>,
    },
    /// The sequence ended; `text` is what was held back until now.
    Finished {
        seq: usize,
        reason: FinishReason,
        text: String,
    },
    /// The engine failed on this request (the model returned an error); nothing more
    /// follows.
    Failed(String),
}

/// Why `submit` refused a request (the HTTP layer maps these to 400, 429 and 503).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The request cannot be served as asked; `param` names the field at fault.
    #[error("{param}: {msg}")]
    Invalid { param: &'static str, msg: String },
    /// The waiting queue is full: try again later.
    #[error("the server is busy: {0} requests are already waiting")]
    QueueFull(usize),
    /// The engine is shutting down or has stopped.
    #[error("the engine is shutting down")]
    ShuttingDown,
}

/// The events of one request, in order. Dropping it cancels the request: the engine stops
/// its sequences and frees their cache at the next step.
#[derive(Debug)]
pub struct ResponseStream {
    pub(crate) key: u64,
    pub(crate) events: mpsc::UnboundedReceiver<Event>,
    pub(crate) inbox: Arc<Inbox>,
    pub(crate) done: bool,
}

impl ResponseStream {
    /// The next event; `None` once every sequence has finished (or the engine is gone).
    pub async fn recv(&mut self) -> Option<Event> {
        let event = self.events.recv().await;
        if event.is_none() {
            self.done = true;
        }
        event
    }

    /// The next event without waiting in an async runtime (blocks the thread).
    pub fn blocking_recv(&mut self) -> Option<Event> {
        let event = self.events.blocking_recv();
        if event.is_none() {
            self.done = true;
        }
        event
    }
}

impl Drop for ResponseStream {
    fn drop(&mut self) {
        if !self.done {
            self.inbox.cancel(self.key);
        }
    }
}
