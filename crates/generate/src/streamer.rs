//! transformers' `TextIteratorStreamer`: generation runs on its own thread and its text
//! arrives through a channel, as an iterator of deltas; the consumer can cancel it.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use ferro_models::CausalLm;
use ferro_tokenizers::Tokenizer;

use crate::config::GenerationConfig;
use crate::error::{GenerateError, Result};
use crate::generate::{generate_text, GenerateOutput};

/// Stops a running generation from any thread (generation ends with
/// `FinishReason::Cancelled` after the current step).
#[derive(Debug, Clone, Default)]
pub struct CancelHandle(Arc<AtomicBool>);

impl CancelHandle {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Text deltas of a generation running on another thread. Iterate for the text; `finish`
/// for the tokens and finish reason. Dropping it cancels the generation.
pub struct TextIteratorStreamer {
    rx: mpsc::Receiver<String>,
    cancel: CancelHandle,
    worker: Option<JoinHandle<Result<GenerateOutput>>>,
}

impl TextIteratorStreamer {
    /// Starts generating after `input_ids` on a new thread.
    pub fn spawn(
        model: Arc<CausalLm>,
        tokenizer: Arc<Tokenizer>,
        input_ids: Vec<u32>,
        cfg: GenerationConfig,
    ) -> Self {
        // A short queue: generation runs at most a few deltas ahead of a slow reader.
        let (tx, rx) = mpsc::sync_channel(8);
        let cancel = CancelHandle::default();
        let stop = cancel.clone();
        let worker = std::thread::spawn(move || {
            generate_text(&model, &tokenizer, &[input_ids], &cfg, &mut |e| {
                // A receiver that went away also stops the work.
                if !e.text.is_empty() && tx.send(e.text.to_string()).is_err() {
                    return ControlFlow::Break(());
                }
                if stop.is_cancelled() {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
        });
        Self {
            rx,
            cancel,
            worker: Some(worker),
        }
    }

    /// A handle that cancels this generation from elsewhere.
    pub fn cancel_handle(&self) -> CancelHandle {
        self.cancel.clone()
    }

    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Waits for the end of generation (the text not read yet is dropped) and returns it.
    pub fn finish(mut self) -> Result<GenerateOutput> {
        while self.rx.recv().is_ok() {}
        self.join()
    }

    fn join(&mut self) -> Result<GenerateOutput> {
        match self.worker.take() {
            Some(w) => w.join().map_err(|_| GenerateError::InvalidArgument {
                param: "generation thread",
                msg: "panicked".into(),
            })?,
            None => Err(GenerateError::InvalidArgument {
                param: "streamer",
                msg: "already finished".into(),
            }),
        }
    }
}

impl Iterator for TextIteratorStreamer {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        self.rx.recv().ok()
    }
}

impl Drop for TextIteratorStreamer {
    fn drop(&mut self) {
        if self.worker.is_some() {
            self.cancel.cancel();
            let _ = self.join();
        }
    }
}
