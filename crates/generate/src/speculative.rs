//! Speculative decoding: a cheap drafter proposes the next few tokens, the model checks
//! them all in one forward pass (reading its weights once for all of them), and
//! generation keeps each draft token only where the model, given the tokens before it,
//! chooses that same token. The text is therefore what decoding without drafts gives
//! (greedy: the same tokens; sampling: the same distribution, as in transformers'
//! assisted generation); only the number of weight passes changes.
//!
//! Two drafters, as transformers has them: prompt lookup (copy what followed the last
//! n-gram where it occurred before: code edits, summaries and RAG answers repeat their
//! input) and an assistant model (a smaller model with the same vocabulary).

use candle_core::Tensor;
use ferro_models::CausalLm;
use ferro_nn::Cache;

use crate::config::GenerationConfig;
use crate::error::{GenerateError, Result};
use crate::sampling::argmax;

/// The most draft tokens checked in one pass: with the token before them that is 16
/// rows, which the quantized kernels and the fused attention still take row by row (so a
/// token's logits are the same as in a one-token step).
pub const MAX_DRAFT_TOKENS: usize = 14;

/// How many tokens were drafted and how many of them the model confirmed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpeculationStats {
    pub drafted: usize,
    pub accepted: usize,
    /// Forward passes of the model after the prompt (one per generated token without
    /// speculation).
    pub verify_passes: usize,
}

/// Where draft tokens come from.
pub(crate) enum Drafter<'a> {
    PromptLookup { max_ngram: usize, num_tokens: usize },
    Assistant(Assistant<'a>),
}

/// A draft model with its own cache, kept in step with the sequence.
pub(crate) struct Assistant<'a> {
    model: &'a CausalLm,
    cache: Cache,
    /// The tokens whose keys and values `cache` holds.
    cached: Vec<u32>,
    num_tokens: usize,
}

impl<'a> Drafter<'a> {
    /// The drafter `cfg` and `assistant` ask for (`None`: no speculation). Speculation
    /// works on one sequence; an assistant must share the model's vocabulary.
    pub(crate) fn new(
        model: &CausalLm,
        cfg: &GenerationConfig,
        assistant: Option<&'a CausalLm>,
        sequences: usize,
    ) -> Result<Option<Self>> {
        let drafter = match (assistant, cfg.prompt_lookup_num_tokens) {
            (Some(_), Some(_)) => {
                return Err(GenerateError::InvalidArgument {
                    param: "prompt_lookup_num_tokens",
                    msg: "choose prompt lookup or an assistant model, not both".into(),
                })
            }
            (None, None) => return Ok(None),
            (None, Some(n)) => Drafter::PromptLookup {
                max_ngram: cfg.max_matching_ngram_size,
                num_tokens: n.min(MAX_DRAFT_TOKENS),
            },
            (Some(a), None) => {
                if a.config.vocab_size != model.config.vocab_size {
                    return Err(GenerateError::InvalidArgument {
                        param: "assistant_model",
                        msg: format!(
                            "its vocabulary has {} tokens, the model's {}: they must share a tokenizer",
                            a.config.vocab_size, model.config.vocab_size
                        ),
                    });
                }
                Drafter::Assistant(Assistant {
                    model: a,
                    cache: a.new_cache(),
                    cached: Vec::new(),
                    num_tokens: cfg.num_assistant_tokens.min(MAX_DRAFT_TOKENS),
                })
            }
        };
        if sequences != 1 {
            return Err(GenerateError::InvalidArgument {
                param: if matches!(drafter, Drafter::PromptLookup { .. }) {
                    "prompt_lookup_num_tokens"
                } else {
                    "assistant_model"
                },
                msg: format!(
                    "speculative decoding works on one sequence at a time; this call has {sequences} \
                     (several prompts, num_return_sequences or beams)"
                ),
            });
        }
        Ok(Some(drafter))
    }

    /// Up to `max` tokens that may follow `ids`.
    pub(crate) fn propose(&mut self, ids: &[u32], max: usize) -> Result<Vec<u32>> {
        match self {
            Drafter::PromptLookup {
                max_ngram,
                num_tokens,
            } => Ok(prompt_lookup(ids, *max_ngram, (*num_tokens).min(max))),
            Drafter::Assistant(a) => a.propose(ids, max),
        }
    }

    /// How the last proposal went: `accepted` of `proposed` tokens were confirmed.
    pub(crate) fn feedback(&mut self, proposed: usize, accepted: usize) {
        if proposed == 0 {
            return;
        }
        if let Drafter::Assistant(a) = self {
            a.num_tokens = if accepted == proposed {
                (a.num_tokens + 2).min(MAX_DRAFT_TOKENS)
            } else {
                a.num_tokens.saturating_sub(1).max(1)
            };
        }
    }
}

impl Assistant<'_> {
    /// Greedy tokens of the draft model after `ids`, feeding it first what it has not seen.
    fn propose(&mut self, ids: &[u32], max: usize) -> Result<Vec<u32>> {
        let room = self.model.max_positions().saturating_sub(ids.len());
        let k = self.num_tokens.min(max).min(room);
        if k == 0 || ids.is_empty() {
            return Ok(Vec::new());
        }
        // Keep what the draft cache shares with the sequence, less the last token (its
        // logits are needed).
        let same = self
            .cached
            .iter()
            .zip(ids)
            .take_while(|(a, b)| a == b)
            .count()
            .min(ids.len() - 1);
        self.cache.truncate(same);
        self.cached.truncate(same);
        let device = &self.model.device;
        let mut feed = ids[same..].to_vec();
        let mut drafts = Vec::with_capacity(k);
        loop {
            let input = Tensor::from_vec(feed.clone(), (1, feed.len()), device)?;
            let logits = self.model.forward(&input, &mut self.cache, true)?;
            self.cached.extend_from_slice(&feed);
            let last: Vec<f32> = logits.flatten_all()?.to_vec1()?;
            let token = argmax(&last);
            drafts.push(token);
            if drafts.len() == k {
                return Ok(drafts);
            }
            feed = vec![token];
        }
    }
}

/// transformers' prompt lookup: the tokens that followed the earliest earlier occurrence
/// of the sequence's last `n` tokens, trying `n = max_ngram` down to 1; at most `num_tokens`.
pub(crate) fn prompt_lookup(ids: &[u32], max_ngram: usize, num_tokens: usize) -> Vec<u32> {
    let len = ids.len();
    if num_tokens == 0 || len < 2 {
        return Vec::new();
    }
    for n in (1..=max_ngram.min(len - 1)).rev() {
        let tail = &ids[len - n..];
        // Windows that end before the last token (so something follows them).
        if let Some(start) = (0..len - n).find(|&i| &ids[i..i + n] == tail) {
            let from = start + n;
            return ids[from..(from + num_tokens).min(len)].to_vec();
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_lookup_copies_what_followed_the_earliest_match() {
        // "... 1 2 3 4 5 ... 1 2" → 3 4 5 (2-gram), limited to num_tokens.
        let ids = [9, 1, 2, 3, 4, 5, 7, 1, 2];
        assert_eq!(prompt_lookup(&ids, 2, 10), vec![3, 4, 5, 7, 1, 2]);
        assert_eq!(prompt_lookup(&ids, 2, 2), vec![3, 4]);
        // The earliest of two matches.
        let ids = [5, 6, 1, 8, 1];
        assert_eq!(prompt_lookup(&ids, 1, 3), vec![8, 1]);
        let ids = [1, 6, 1, 8, 1];
        assert_eq!(prompt_lookup(&ids, 1, 2), vec![6, 1]);
        // A longer n-gram wins over a shorter, earlier one.
        let ids = [3, 7, 0, 2, 3, 9, 2, 3];
        assert_eq!(prompt_lookup(&ids, 2, 1), vec![9]);
        assert_eq!(prompt_lookup(&ids, 1, 1), vec![7]);
        // Nothing to copy.
        assert!(prompt_lookup(&[1, 2, 3], 3, 4).is_empty());
        assert!(prompt_lookup(&[1], 2, 4).is_empty());
        assert!(prompt_lookup(&[4, 4], 2, 0).is_empty());
        assert_eq!(prompt_lookup(&[4, 4], 2, 3), vec![4]);
    }
}
