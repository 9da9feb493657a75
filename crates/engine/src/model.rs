//! What the engine needs from a model: one packed step over several sequences, each with
//! a cache of its own. `CausalLm` is the real one; the tests use a scripted model.

use ferro_models::CausalLm;
use ferro_nn::Cache;

/// A model the engine can batch.
pub trait StepModel: Send + 'static {
    /// One sequence's cached state.
    type Cache: Send;

    fn new_cache(&self) -> Self::Cache;
    /// A copy of the first `len` cached tokens, sharing no memory with `cache`.
    fn copy_prefix(&self, cache: &Self::Cache, len: usize) -> Result<Self::Cache, String>;
    /// Feeds each sequence its tokens after what its cache holds; returns each sequence's
    /// last logits. A step where every sequence feeds one token must give each the logits
    /// it gets alone.
    fn step(&self, seqs: &mut [(&[u32], &mut Self::Cache)]) -> Result<Vec<Vec<f32>>, String>;
    /// Positions the model takes (prompt plus generated).
    fn context_length(&self) -> usize;
    fn vocab_size(&self) -> usize;
    /// The end-of-sequence tokens generation stops on by default.
    fn eos_token_ids(&self) -> Vec<u32>;
}

impl StepModel for CausalLm {
    type Cache = Cache;

    fn new_cache(&self) -> Cache {
        CausalLm::new_cache(self)
    }

    fn copy_prefix(&self, cache: &Cache, len: usize) -> Result<Cache, String> {
        cache.copy_prefix(len).map_err(|e| e.to_string())
    }

    fn step(&self, seqs: &mut [(&[u32], &mut Cache)]) -> Result<Vec<Vec<f32>>, String> {
        self.forward_packed(seqs)
            .and_then(|logits| Ok(logits.to_vec2::<f32>()?))
            .map_err(|e| e.to_string())
    }

    fn context_length(&self) -> usize {
        self.max_positions()
    }

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn eos_token_ids(&self) -> Vec<u32> {
        self.config.eos_token_ids.clone()
    }
}
