//! `GenerationConfig`: transformers' knobs and defaults, validated before generating.

use crate::error::{GenerateError, Result};

/// What `generate` does; defaults are transformers' (greedy unless `do_sample`).
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    pub max_new_tokens: usize,
    pub do_sample: bool,
    /// Divides the logits before sampling.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0 = off; transformers' default is 50).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p`.
    pub top_p: f32,
    /// > 1 discourages tokens already in the sequence (CTRL's penalty, as transformers).
    pub repetition_penalty: f32,
    /// Seed of the sampler; the same seed gives the same text.
    pub seed: u64,
    /// Tokens that end generation: `None` means the model's own; an empty list, none.
    pub eos_token_ids: Option<Vec<u32>>,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 20,
            do_sample: false,
            temperature: 1.0,
            top_k: 50,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
            eos_token_ids: None,
        }
    }
}

impl GenerationConfig {
    /// Greedy decoding of up to `max_new_tokens` tokens.
    pub fn greedy(max_new_tokens: usize) -> Self {
        Self {
            max_new_tokens,
            ..Self::default()
        }
    }

    /// Checks every knob; the error names the one at fault.
    pub fn validate(&self) -> Result<()> {
        let bad =
            |param: &'static str, msg: String| Err(GenerateError::InvalidArgument { param, msg });
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return bad(
                "temperature",
                format!("must be a positive number, got {}", self.temperature),
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", format!("must be in (0, 1], got {}", self.top_p));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad(
                "repetition_penalty",
                format!("must be a positive number, got {}", self.repetition_penalty),
            );
        }
        Ok(())
    }
}
