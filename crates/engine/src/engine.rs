//! The engine: one thread owns the model and runs the batch step after step. Requests
//! arrive through an inbox; each step admits waiting requests while there is room
//! (running sequences, KV-cache blocks), feeds every running sequence its next token and
//! waiting prompts chunks of theirs (continuous batching, chunked prefill), samples, and
//! sends each request its events on its own channel. A request whose receiver is gone is
//! cancelled and its cache freed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ferro_generate::GenerationConfig;
use ferro_tokenizers::Tokenizer;
use tokio::sync::{mpsc, watch};

use crate::config::EngineConfig;
use crate::metrics::EngineMetrics;
use crate::model::StepModel;
use crate::request::{Event, GenerationRequest, ResponseStream, SubmitError};
use crate::scheduler::Scheduler;

/// A message to the engine thread.
pub(crate) enum Message {
    Submit {
        key: u64,
        request: Box<GenerationRequest>,
        events: mpsc::UnboundedSender<Event>,
        arrived: Instant,
    },
    Cancel(u64),
}

/// Messages waiting for the engine thread, and the condition it sleeps on when idle.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    queue: Mutex<VecDeque<Message>>,
    ready: Condvar,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Submit { key, .. } => write!(f, "Submit({key})"),
            Message::Cancel(key) => write!(f, "Cancel({key})"),
        }
    }
}

impl Inbox {
    fn push(&self, m: Message) {
        if let Ok(mut q) = self.queue.lock() {
            q.push_back(m);
        }
        self.ready.notify_one();
    }

    pub(crate) fn cancel(&self, key: u64) {
        self.push(Message::Cancel(key));
    }

    /// Wakes the engine thread (to notice shutdown).
    fn wake(&self) {
        self.ready.notify_one();
    }

    /// Every message waiting; with `wait`, sleeps until one comes (or `timeout`).
    pub(crate) fn take(&self, wait: Option<Duration>) -> Vec<Message> {
        let Ok(mut q) = self.queue.lock() else {
            return Vec::new();
        };
        if let Some(timeout) = wait {
            if q.is_empty() {
                q = match self.ready.wait_timeout(q, timeout) {
                    Ok((q, _)) => q,
                    Err(_) => return Vec::new(),
                };
            }
        }
        q.drain(..).collect()
    }
}

/// State the engine thread and every handle share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: EngineConfig,
    pub(crate) context: usize,
    pub(crate) vocab: usize,
    pub(crate) metrics: EngineMetrics,
    /// Requests submitted and not yet admitted (the queue's bound is checked on it).
    pub(crate) queued: AtomicUsize,
    pub(crate) closing: AtomicBool,
    next_key: AtomicU64,
}

/// The way into a running engine; cheap to clone, one per HTTP worker.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    inbox: Arc<Inbox>,
    shared: Arc<Shared>,
    stopped: watch::Receiver<bool>,
}

/// Starts engines.
pub struct Engine;

impl Engine {
    /// Starts the engine thread over `model`; `tokenizer` decodes the text of new tokens
    /// and matches stop strings.
    pub fn start<M: StepModel>(
        model: M,
        tokenizer: Tokenizer,
        config: EngineConfig,
    ) -> Result<EngineHandle, SubmitError> {
        config.validate()?;
        let metrics = EngineMetrics::default();
        metrics
            .kv_blocks_total
            .store(config.total_blocks() as u64, Ordering::Relaxed);
        let shared = Arc::new(Shared {
            context: model.context_length(),
            vocab: model.vocab_size(),
            config,
            metrics,
            queued: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            next_key: AtomicU64::new(0),
        });
        let inbox = Arc::new(Inbox::default());
        let (stopped_tx, stopped) = watch::channel(false);
        let (thread_inbox, thread_shared) = (inbox.clone(), shared.clone());
        std::thread::Builder::new()
            .name("ferro-engine".into())
            .spawn(move || {
                Scheduler::new(&model, &tokenizer, &thread_shared, &thread_inbox).run();
                let _ = stopped_tx.send(true);
            })
            .map_err(|e| SubmitError::Invalid {
                param: "engine",
                msg: format!("could not start the engine thread: {e}"),
            })?;
        Ok(EngineHandle {
            inbox,
            shared,
            stopped,
        })
    }
}

impl EngineHandle {
    /// Queues a request; its events come on the returned stream. Refused at once when it
    /// cannot be served as asked, when the queue is full, or when shutting down.
    pub fn submit(&self, request: GenerationRequest) -> Result<ResponseStream, SubmitError> {
        if self.shared.closing.load(Ordering::SeqCst) {
            return Err(SubmitError::ShuttingDown);
        }
        self.check(&request)?;
        let max = self.shared.config.max_queued;
        if self.shared.queued.fetch_add(1, Ordering::SeqCst) >= max {
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::QueueFull(max));
        }
        let key = self.shared.next_key.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        self.inbox.push(Message::Submit {
            key,
            request: Box::new(request),
            events: tx,
            arrived: Instant::now(),
        });
        Ok(ResponseStream {
            key,
            events: rx,
            inbox: self.inbox.clone(),
            done: false,
        })
    }

    fn check(&self, r: &GenerationRequest) -> Result<(), SubmitError> {
        let bad = |param: &'static str, msg: String| Err(SubmitError::Invalid { param, msg });
        let (context, cfg) = (self.shared.context, &self.shared.config);
        let len = r.prompt.len();
        if len == 0 {
            return bad("prompt", "the prompt is empty".into());
        }
        if let Some(id) = r
            .prompt
            .iter()
            .find(|&&id| id as usize >= self.shared.vocab)
        {
            return bad(
                "prompt",
                format!(
                    "token id {id} is outside the vocabulary of {}",
                    self.shared.vocab
                ),
            );
        }
        if len >= context {
            return bad(
                "prompt",
                format!("the prompt has {len} tokens; the model's context is {context}"),
            );
        }
        let max_new = r.config.max_new_tokens;
        if max_new == 0 || len + max_new > context {
            return bad(
                "max_tokens",
                format!(
                    "{max_new} new tokens after a prompt of {len}: the model's context is \
                     {context} tokens, so at most {} can be generated",
                    context - len
                ),
            );
        }
        if cfg.blocks_for(len + max_new) > cfg.total_blocks() {
            return bad(
                "max_tokens",
                format!(
                    "a prompt of {len} and {max_new} new tokens need more than the server's \
                     KV cache of {} tokens",
                    cfg.kv_cache_tokens
                ),
            );
        }
        let n = r.config.num_return_sequences;
        if n == 0 || n > cfg.max_running {
            return bad(
                "n",
                format!(
                    "{n} choices; this server runs at most {} sequences",
                    cfg.max_running
                ),
            );
        }
        if r.config.num_beams > 1 {
            return bad("n", "beam search is not served".into());
        }
        // Several greedy choices are allowed (identical, as OpenAI's API gives them).
        let one = GenerationConfig {
            num_return_sequences: 1,
            ..r.config.clone()
        };
        one.validate().map_err(|e| SubmitError::Invalid {
            param: "generation",
            msg: e.to_string(),
        })
    }

    pub fn metrics(&self) -> &EngineMetrics {
        &self.shared.metrics
    }

    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    /// Positions the model takes.
    pub fn context_length(&self) -> usize {
        self.shared.context
    }

    /// Refuses new requests from now on; the engine finishes the queued and running ones,
    /// then stops.
    pub fn shutdown(&self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.inbox.wake();
    }

    /// Whether the engine thread has stopped.
    pub fn is_stopped(&self) -> bool {
        *self.stopped.borrow()
    }

    /// Waits until the engine thread has stopped (after `shutdown`, once it has drained).
    pub async fn stopped(&self) {
        let mut rx = self.stopped.clone();
        let _ = rx.wait_for(|s| *s).await;
    }
}
