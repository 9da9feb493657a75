//! The engine's limits.

use crate::request::SubmitError;

/// How much the engine takes on at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Sequences generating at the same time (a request with `n` choices counts `n`).
    pub max_running: usize,
    /// Requests waiting for a place; more are refused (HTTP 429).
    pub max_queued: usize,
    /// Tokens one step feeds the model: every running sequence's next token first, then
    /// chunks of waiting prompts in what is left (chunked prefill: a long prompt is fed
    /// over several steps, between which the running streams keep decoding).
    pub max_batched_tokens: usize,
    /// The KV cache, in tokens over all sequences (llama.cpp's `-c` with several slots).
    pub kv_cache_tokens: usize,
    /// Tokens per KV-cache block, the unit the cache is handed out and reused in.
    pub block_size: usize,
    /// Keep the caches of finished sequences, to start new prompts that share their
    /// first blocks from them instead of recomputing.
    pub prefix_caching: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_running: 16,
            max_queued: 256,
            max_batched_tokens: 512,
            kv_cache_tokens: 65_536,
            block_size: 16,
            prefix_caching: true,
        }
    }
}

impl EngineConfig {
    pub(crate) fn validate(&self) -> Result<(), SubmitError> {
        let bad = |param: &'static str, msg: &str| {
            Err(SubmitError::Invalid {
                param,
                msg: msg.into(),
            })
        };
        if self.max_running == 0 {
            return bad("max_running", "must be at least 1");
        }
        if self.block_size == 0 {
            return bad("block_size", "must be at least 1");
        }
        if self.max_batched_tokens < self.max_running {
            return bad(
                "max_batched_tokens",
                "must be at least max_running (each running sequence feeds one token a step)",
            );
        }
        if self.kv_cache_tokens < self.block_size * self.max_running {
            return bad(
                "kv_cache_tokens",
                "must hold at least one block per running sequence",
            );
        }
        Ok(())
    }

    /// Blocks in the whole cache.
    pub fn total_blocks(&self) -> usize {
        self.kv_cache_tokens / self.block_size
    }

    /// Blocks holding `tokens` cached tokens.
    pub fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.block_size)
    }
}
