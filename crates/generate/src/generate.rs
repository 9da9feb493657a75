//! The generate loop: prefill the prompt, then one token at a time with the KV cache,
//! until `max_new_tokens` or an end-of-sequence token.

use std::ops::ControlFlow;

use candle_core::Tensor;
use ferro_models::CausalLm;
use ferro_tokenizers::Tokenizer;
use rand::SeedableRng;

use crate::config::GenerationConfig;
use crate::error::{GenerateError, Result};
use crate::logits::{apply_repetition_penalty, argmax, sample};

/// The result of `generate`: the prompt followed by the new tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOutput {
    pub sequences: Vec<Vec<u32>>,
    prompt_lens: Vec<usize>,
}

impl GenerateOutput {
    /// The tokens generated for sequence `i` (transformers' `output[0][len(input_ids[0]):]`).
    pub fn new_tokens(&self, i: usize) -> &[u32] {
        let seq = &self.sequences[i];
        &seq[self.prompt_lens[i].min(seq.len())..]
    }
}

/// `model.generate(...)`, as in transformers.
pub trait Generate {
    /// Generates after `input_ids` (one prompt).
    fn generate(&self, input_ids: &[u32], cfg: &GenerationConfig) -> Result<GenerateOutput> {
        self.generate_with(input_ids, cfg, &mut |_| ControlFlow::Continue(()))
    }

    /// Like `generate`, calling `on_token` with each new token; `Break` stops early.
    fn generate_with(
        &self,
        input_ids: &[u32],
        cfg: &GenerationConfig,
        on_token: &mut dyn FnMut(u32) -> ControlFlow<()>,
    ) -> Result<GenerateOutput>;
}

impl Generate for CausalLm {
    fn generate_with(
        &self,
        input_ids: &[u32],
        cfg: &GenerationConfig,
        on_token: &mut dyn FnMut(u32) -> ControlFlow<()>,
    ) -> Result<GenerateOutput> {
        cfg.validate()?;
        if input_ids.is_empty() {
            return Err(GenerateError::InvalidArgument {
                param: "input_ids",
                msg: "the prompt is empty".into(),
            });
        }
        let context = self.max_positions();
        if input_ids.len() >= context {
            return Err(GenerateError::InvalidArgument {
                param: "input_ids",
                msg: format!(
                    "the prompt has {} tokens; the model's context is {context}",
                    input_ids.len()
                ),
            });
        }
        let eos: &[u32] = cfg
            .eos_token_ids
            .as_deref()
            .unwrap_or(&self.config.eos_token_ids);
        let vocab = self.config.vocab_size as u32;
        if let Some(&bad) = input_ids.iter().find(|&&id| id >= vocab) {
            return Err(GenerateError::InvalidArgument {
                param: "input_ids",
                msg: format!("token id {bad} is outside the vocabulary of {vocab}"),
            });
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
        let mut cache = self.new_cache();
        let mut seq = input_ids.to_vec();
        let budget = cfg.max_new_tokens.min(context - input_ids.len());
        let mut next_input = Tensor::new(input_ids, &self.device)?.unsqueeze(0)?;
        let started = std::time::Instant::now();
        for step in 0..budget {
            let logits = self.forward(&next_input, &mut cache, true)?;
            if step == 0 {
                tracing::debug!(prompt_tokens = input_ids.len(), elapsed = ?started.elapsed(), "prefill");
            }
            let mut logits: Vec<f32> = logits.flatten_all()?.to_vec1()?;
            apply_repetition_penalty(&mut logits, &seq, cfg.repetition_penalty);
            let token = if cfg.do_sample {
                sample(&logits, cfg, &mut rng)
            } else {
                argmax(&logits)
            };
            seq.push(token);
            if on_token(token).is_break() || eos.contains(&token) {
                break;
            }
            next_input = Tensor::new(&[token], &self.device)?.unsqueeze(0)?;
        }
        let new_tokens = seq.len() - input_ids.len();
        tracing::debug!(new_tokens, elapsed = ?started.elapsed(), "generated");
        Ok(GenerateOutput {
            sequences: vec![seq],
            prompt_lens: vec![input_ids.len()],
        })
    }
}

/// Generates and hands the new text to `on_text` as it is produced (whole characters
/// only, special tokens skipped) — transformers' `TextStreamer(skip_prompt=True)`.
pub fn generate_streaming(
    model: &CausalLm,
    tokenizer: &Tokenizer,
    input_ids: &[u32],
    cfg: &GenerationConfig,
    on_text: &mut dyn FnMut(&str),
) -> Result<GenerateOutput> {
    let mut stream = tokenizer.decode_stream(true);
    let mut failure = None;
    let out = model.generate_with(input_ids, cfg, &mut |token| match stream.step(token) {
        Ok(Some(text)) => {
            on_text(&text);
            ControlFlow::Continue(())
        }
        Ok(None) => ControlFlow::Continue(()),
        Err(e) => {
            failure = Some(e);
            ControlFlow::Break(())
        }
    })?;
    if let Some(e) = failure {
        return Err(e.into());
    }
    if let Some(rest) = stream.finish()? {
        on_text(&rest);
    }
    Ok(out)
}
