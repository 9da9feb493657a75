//! Logits processors: each a small unit with one signature, its arguments checked when it
//! is built, applied in one place (`LogitsProcessorList`) in transformers' order —
//! constraints and penalties first, then (when sampling) temperature, top-k, top-p, min-p,
//! typical-p. Each one equals transformers' class of the same name on the same scores.

use std::collections::HashMap;

use crate::config::GenerationConfig;
use crate::error::{GenerateError, Result};

/// One row of the batch as the processors see it.
#[derive(Debug, Clone, Copy)]
pub struct Sequence<'a> {
    /// Prompt followed by the tokens generated so far.
    pub ids: &'a [u32],
    /// How many of `ids` are the prompt.
    pub prompt_len: usize,
}

impl Sequence<'_> {
    pub fn generated(&self) -> &[u32] {
        &self.ids[self.prompt_len.min(self.ids.len())..]
    }
}

/// Rewrites the next-token scores of one sequence in place; -inf removes a token.
pub trait LogitsProcessor: Send + Sync + std::fmt::Debug {
    /// transformers' class name, for logs and tests.
    fn name(&self) -> &'static str;
    fn process(&self, seq: Sequence<'_>, scores: &mut [f32]);
}

fn invalid(param: &'static str, msg: String) -> GenerateError {
    GenerateError::InvalidArgument { param, msg }
}

fn set(scores: &mut [f32], id: u32, value: f32) {
    if let Some(s) = scores.get_mut(id as usize) {
        *s = value;
    }
}

/// Softmax in f32 over the finite scores (-inf gets 0).
pub fn softmax(scores: &[f32]) -> Vec<f32> {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return vec![0.0; scores.len()];
    }
    let mut p: Vec<f32> = scores.iter().map(|&s| (s - max).exp()).collect();
    let sum: f32 = p.iter().sum();
    p.iter_mut().for_each(|x| *x /= sum);
    p
}

/// Indices sorted by score, highest first; equal scores keep index order.
fn descending(scores: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order
}

/// `TemperatureLogitsWarper`.
#[derive(Debug)]
pub struct Temperature(f32);

impl Temperature {
    pub fn new(temperature: f32) -> Result<Self> {
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(invalid(
                "temperature",
                format!("must be a positive number, got {temperature}"),
            ));
        }
        Ok(Self(temperature))
    }
}

impl LogitsProcessor for Temperature {
    fn name(&self) -> &'static str {
        "TemperatureLogitsWarper"
    }
    fn process(&self, _: Sequence<'_>, scores: &mut [f32]) {
        scores.iter_mut().for_each(|s| *s /= self.0);
    }
}

/// `TopKLogitsWarper`: scores below the k-th largest are removed (ties with it stay).
#[derive(Debug)]
pub struct TopK {
    k: usize,
    min_tokens_to_keep: usize,
}

impl TopK {
    pub fn new(k: usize, min_tokens_to_keep: usize) -> Result<Self> {
        if k == 0 {
            return Err(invalid("top_k", "must be a positive integer".into()));
        }
        Ok(Self {
            k,
            min_tokens_to_keep,
        })
    }
}

impl LogitsProcessor for TopK {
    fn name(&self) -> &'static str {
        "TopKLogitsWarper"
    }
    fn process(&self, _: Sequence<'_>, scores: &mut [f32]) {
        let k = self.k.max(self.min_tokens_to_keep).min(scores.len());
        if k == 0 || k == scores.len() {
            return;
        }
        let order = descending(scores);
        let kth = scores[order[k - 1]];
        scores
            .iter_mut()
            .filter(|s| **s < kth)
            .for_each(|s| *s = f32::NEG_INFINITY);
    }
}

/// `TopPLogitsWarper`: from the least likely up, tokens are removed while the mass
/// removed stays within `1 - top_p`; the `min_tokens_to_keep` most likely always stay.
#[derive(Debug)]
pub struct TopP {
    p: f32,
    min_tokens_to_keep: usize,
}

impl TopP {
    pub fn new(p: f32, min_tokens_to_keep: usize) -> Result<Self> {
        if !(p > 0.0 && p <= 1.0) {
            return Err(invalid("top_p", format!("must be in (0, 1], got {p}")));
        }
        Ok(Self {
            p,
            min_tokens_to_keep,
        })
    }
}

impl LogitsProcessor for TopP {
    fn name(&self) -> &'static str {
        "TopPLogitsWarper"
    }
    fn process(&self, _: Sequence<'_>, scores: &mut [f32]) {
        let n = scores.len();
        // Ascending order, as transformers sorts.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
        let sorted: Vec<f32> = order.iter().map(|&i| scores[i]).collect();
        let probs = softmax(&sorted);
        let keep_from = n.saturating_sub(self.min_tokens_to_keep);
        let mut cumulative = 0.0f32;
        let mut remove = Vec::new();
        for (rank, (&i, p)) in order.iter().zip(&probs).enumerate() {
            cumulative += p;
            if cumulative <= 1.0 - self.p && rank < keep_from {
                remove.push(i);
            }
        }
        for i in remove {
            scores[i] = f32::NEG_INFINITY;
        }
    }
}

/// `MinPLogitsWarper`: tokens less likely than `min_p` × the most likely are removed.
#[derive(Debug)]
pub struct MinP {
    min_p: f32,
    min_tokens_to_keep: usize,
}

impl MinP {
    pub fn new(min_p: f32, min_tokens_to_keep: usize) -> Result<Self> {
        if !(0.0..=1.0).contains(&min_p) {
            return Err(invalid("min_p", format!("must be in [0, 1], got {min_p}")));
        }
        Ok(Self {
            min_p,
            min_tokens_to_keep,
        })
    }
}

impl LogitsProcessor for MinP {
    fn name(&self) -> &'static str {
        "MinPLogitsWarper"
    }
    fn process(&self, _: Sequence<'_>, scores: &mut [f32]) {
        let probs = softmax(scores);
        let top = probs.iter().copied().fold(0.0, f32::max);
        let threshold = self.min_p * top;
        for (rank, i) in descending(scores).into_iter().enumerate() {
            if rank >= self.min_tokens_to_keep && probs[i] < threshold {
                scores[i] = f32::NEG_INFINITY;
            }
        }
    }
}

/// `TypicalLogitsWarper`: keeps the tokens whose surprise is closest to the entropy until
/// their mass reaches `mass`.
#[derive(Debug)]
pub struct TypicalP {
    mass: f32,
    min_tokens_to_keep: usize,
}

impl TypicalP {
    pub fn new(mass: f32, min_tokens_to_keep: usize) -> Result<Self> {
        if !(mass > 0.0 && mass < 1.0) {
            return Err(invalid(
                "typical_p",
                format!("must be in (0, 1), got {mass}"),
            ));
        }
        Ok(Self {
            mass,
            min_tokens_to_keep,
        })
    }
}

impl LogitsProcessor for TypicalP {
    fn name(&self) -> &'static str {
        "TypicalLogitsWarper"
    }
    fn process(&self, _: Sequence<'_>, scores: &mut [f32]) {
        let n = scores.len();
        let probs = softmax(scores);
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let log_sum = probs_log_sum(scores, max);
        let logp: Vec<f32> = scores.iter().map(|&s| s - max - log_sum).collect();
        // nansum: -inf scores give 0 * -inf = NaN, which torch's nansum skips.
        let entropy: f32 = -logp
            .iter()
            .zip(&probs)
            .map(|(l, p)| l * p)
            .filter(|x| !x.is_nan())
            .sum::<f32>();
        let shifted: Vec<f32> = logp.iter().map(|l| (-l - entropy).abs()).collect();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| shifted[a].total_cmp(&shifted[b]));
        let sorted_logits: Vec<f32> = order.iter().map(|&i| scores[i]).collect();
        let sorted_probs = softmax(&sorted_logits);
        let mut cumulative = 0.0f32;
        let mut last = 0usize;
        for p in &sorted_probs {
            cumulative += p;
            if cumulative < self.mass {
                last += 1;
            }
        }
        let last = last.min(n - 1);
        let cutoff = shifted[order[last]];
        for (rank, &i) in order.iter().enumerate() {
            if rank >= self.min_tokens_to_keep && shifted[i] > cutoff {
                scores[i] = f32::NEG_INFINITY;
            }
        }
    }
}

/// `log(sum(exp(s - max)))` over the scores.
fn probs_log_sum(scores: &[f32], max: f32) -> f32 {
    scores.iter().map(|&s| (s - max).exp()).sum::<f32>().ln()
}

/// `RepetitionPenaltyLogitsProcessor` (CTRL): a token already in the sequence (prompt
/// included) has its logit divided by `penalty` when positive, multiplied when negative.
#[derive(Debug)]
pub struct RepetitionPenalty(f32);

impl RepetitionPenalty {
    pub fn new(penalty: f32) -> Result<Self> {
        if !(penalty.is_finite() && penalty > 0.0) {
            return Err(invalid(
                "repetition_penalty",
                format!("must be a positive number, got {penalty}"),
            ));
        }
        Ok(Self(penalty))
    }
}

impl LogitsProcessor for RepetitionPenalty {
    fn name(&self) -> &'static str {
        "RepetitionPenaltyLogitsProcessor"
    }
    fn process(&self, seq: Sequence<'_>, scores: &mut [f32]) {
        let mut seen = vec![false; scores.len()];
        for &id in seq.ids {
            let i = id as usize;
            if i < scores.len() && !seen[i] {
                seen[i] = true;
                let s = scores[i];
                scores[i] = if s < 0.0 { s * self.0 } else { s / self.0 };
            }
        }
    }
}

/// OpenAI's presence and frequency penalties over the generated tokens (as vLLM):
/// `logit -= presence * [count > 0] + frequency * count`.
#[derive(Debug)]
pub struct PresenceFrequencyPenalty {
    presence: f32,
    frequency: f32,
}

impl PresenceFrequencyPenalty {
    pub fn new(presence: f32, frequency: f32) -> Result<Self> {
        for (param, x) in [
            ("presence_penalty", presence),
            ("frequency_penalty", frequency),
        ] {
            if !x.is_finite() {
                return Err(invalid(param, format!("must be a finite number, got {x}")));
            }
        }
        Ok(Self {
            presence,
            frequency,
        })
    }
}

impl LogitsProcessor for PresenceFrequencyPenalty {
    fn name(&self) -> &'static str {
        "PresenceFrequencyPenalty"
    }
    fn process(&self, seq: Sequence<'_>, scores: &mut [f32]) {
        let mut counts: HashMap<u32, u32> = HashMap::new();
        for &id in seq.generated() {
            *counts.entry(id).or_default() += 1;
        }
        for (id, n) in counts {
            if let Some(s) = scores.get_mut(id as usize) {
                *s -= self.presence + self.frequency * n as f32;
            }
        }
    }
}

/// `NoRepeatNGramLogitsProcessor`: a token that would repeat an n-gram of the sequence
/// (prompt included) is removed.
#[derive(Debug)]
pub struct NoRepeatNGram(usize);

impl NoRepeatNGram {
    pub fn new(n: usize) -> Result<Self> {
        if n == 0 {
            return Err(invalid(
                "no_repeat_ngram_size",
                "must be a positive integer".into(),
            ));
        }
        Ok(Self(n))
    }
}

impl LogitsProcessor for NoRepeatNGram {
    fn name(&self) -> &'static str {
        "NoRepeatNGramLogitsProcessor"
    }
    fn process(&self, seq: Sequence<'_>, scores: &mut [f32]) {
        let (ids, n) = (seq.ids, self.0);
        if ids.len() + 1 < n {
            return;
        }
        let prefix = &ids[ids.len() + 1 - n..];
        for start in 0..=(ids.len() - n) {
            if &ids[start..start + n - 1] == prefix {
                set(scores, ids[start + n - 1], f32::NEG_INFINITY);
            }
        }
    }
}

/// `SequenceBiasLogitsProcessor`: a bias on a sequence's last token when the sequence so
/// far ends with the rest of it (single tokens always). `NoBadWordsLogitsProcessor` is the
/// same with a bias of -inf.
#[derive(Debug)]
pub struct SequenceBias {
    biases: Vec<(Vec<u32>, f32)>,
    name: &'static str,
}

impl SequenceBias {
    pub fn new(biases: Vec<(Vec<u32>, f32)>) -> Result<Self> {
        if let Some((seq, b)) = biases.iter().find(|(s, b)| s.is_empty() || b.is_nan()) {
            return Err(invalid(
                "sequence_bias",
                format!("entry {seq:?}: needs at least one token and a number, got {b}"),
            ));
        }
        Ok(Self {
            biases,
            name: "SequenceBiasLogitsProcessor",
        })
    }

    /// `NoBadWordsLogitsProcessor`: the sequences can never be completed. Bad words equal
    /// to an end-of-sequence token are ignored, as transformers does.
    pub fn bad_words(bad_words_ids: &[Vec<u32>], eos: &[u32]) -> Result<Self> {
        if bad_words_ids.iter().any(Vec::is_empty) {
            return Err(invalid(
                "bad_words_ids",
                "contains an empty sequence".into(),
            ));
        }
        let biases = bad_words_ids
            .iter()
            .filter(|w| !(w.len() == 1 && eos.contains(&w[0])))
            .map(|w| (w.clone(), f32::NEG_INFINITY))
            .collect();
        Ok(Self {
            biases,
            name: "NoBadWordsLogitsProcessor",
        })
    }
}

impl LogitsProcessor for SequenceBias {
    fn name(&self) -> &'static str {
        self.name
    }
    fn process(&self, seq: Sequence<'_>, scores: &mut [f32]) {
        let mut bias = vec![0f32; scores.len()];
        for (tokens, b) in &self.biases {
            // Constructors refuse empty sequences.
            let Some((last, prefix)) = tokens.split_last() else {
                continue;
            };
            if seq.ids.ends_with(prefix) {
                if let Some(x) = bias.get_mut(*last as usize) {
                    *x += b;
                }
            }
        }
        scores.iter_mut().zip(bias).for_each(|(s, b)| *s += b);
    }
}

/// `MinNewTokensLengthLogitsProcessor`: end-of-sequence tokens are removed until
/// `min_new_tokens` tokens were generated.
#[derive(Debug)]
pub struct MinNewTokens {
    min_new_tokens: usize,
    eos: Vec<u32>,
}

impl MinNewTokens {
    pub fn new(min_new_tokens: usize, eos: Vec<u32>) -> Self {
        Self {
            min_new_tokens,
            eos,
        }
    }
}

impl LogitsProcessor for MinNewTokens {
    fn name(&self) -> &'static str {
        "MinNewTokensLengthLogitsProcessor"
    }
    fn process(&self, seq: Sequence<'_>, scores: &mut [f32]) {
        if seq.generated().len() < self.min_new_tokens {
            for &e in &self.eos {
                set(scores, e, f32::NEG_INFINITY);
            }
        }
    }
}

/// The processors of a `GenerationConfig`, in the order transformers applies them.
#[derive(Debug, Default)]
pub struct LogitsProcessorList(Vec<Box<dyn LogitsProcessor>>);

impl LogitsProcessorList {
    /// Builds the list `generate` uses for `cfg`, with `eos` the end-of-sequence tokens.
    pub fn from_config(cfg: &GenerationConfig, eos: &[u32]) -> Result<Self> {
        let mut list: Vec<Box<dyn LogitsProcessor>> = Vec::new();
        if !cfg.sequence_bias.is_empty() {
            list.push(Box::new(SequenceBias::new(cfg.sequence_bias.clone())?));
        }
        if cfg.repetition_penalty != 1.0 {
            list.push(Box::new(RepetitionPenalty::new(cfg.repetition_penalty)?));
        }
        // Not in transformers; vLLM applies them with the repetition penalty.
        if cfg.presence_penalty != 0.0 || cfg.frequency_penalty != 0.0 {
            list.push(Box::new(PresenceFrequencyPenalty::new(
                cfg.presence_penalty,
                cfg.frequency_penalty,
            )?));
        }
        if cfg.no_repeat_ngram_size > 0 {
            list.push(Box::new(NoRepeatNGram::new(cfg.no_repeat_ngram_size)?));
        }
        if !cfg.bad_words_ids.is_empty() {
            list.push(Box::new(SequenceBias::bad_words(&cfg.bad_words_ids, eos)?));
        }
        if cfg.min_new_tokens > 0 && !eos.is_empty() {
            list.push(Box::new(MinNewTokens::new(
                cfg.min_new_tokens,
                eos.to_vec(),
            )));
        }
        if cfg.do_sample {
            // Beam sampling keeps two candidates at least, as transformers.
            let keep = if cfg.num_beams > 1 { 2 } else { 1 };
            if cfg.temperature != 1.0 {
                list.push(Box::new(Temperature::new(cfg.temperature)?));
            }
            if cfg.top_k != 0 {
                list.push(Box::new(TopK::new(cfg.top_k, keep)?));
            }
            if cfg.top_p < 1.0 {
                list.push(Box::new(TopP::new(cfg.top_p, keep)?));
            }
            if cfg.min_p > 0.0 {
                list.push(Box::new(MinP::new(cfg.min_p, keep)?));
            }
            if cfg.typical_p < 1.0 {
                list.push(Box::new(TypicalP::new(cfg.typical_p, keep)?));
            }
        }
        Ok(Self(list))
    }

    pub fn push(&mut self, p: Box<dyn LogitsProcessor>) {
        self.0.push(p);
    }

    /// transformers' class names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|p| p.name()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Applies every processor, in order.
    pub fn process(&self, seq: Sequence<'_>, scores: &mut [f32]) {
        for p in &self.0 {
            p.process(seq, scores);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(ids: &[u32], prompt_len: usize) -> Sequence<'_> {
        Sequence { ids, prompt_len }
    }

    #[test]
    fn presence_and_frequency_count_generated_tokens_only() {
        let p = PresenceFrequencyPenalty::new(0.5, 0.25).unwrap();
        let mut s = vec![1.0; 4];
        // Prompt [1, 1]; generated [2, 2, 3].
        p.process(seq(&[1, 1, 2, 2, 3], 2), &mut s);
        assert_eq!(s, vec![1.0, 1.0, 1.0 - 0.5 - 0.5, 1.0 - 0.5 - 0.25]);
    }

    #[test]
    fn no_repeat_ngram_bans_the_continuation_of_a_seen_prefix() {
        let p = NoRepeatNGram::new(2).unwrap();
        let mut s = vec![0.0; 5];
        p.process(seq(&[1, 2, 3, 1], 0), &mut s);
        assert_eq!(s[2], f32::NEG_INFINITY);
        assert_eq!(s.iter().filter(|x| x.is_finite()).count(), 4);
    }

    #[test]
    fn constructors_check_their_arguments() {
        assert!(Temperature::new(0.0).is_err());
        assert!(TopK::new(0, 1).is_err());
        assert!(TopP::new(1.5, 1).is_err());
        assert!(MinP::new(-0.1, 1).is_err());
        assert!(TypicalP::new(1.0, 1).is_err());
        assert!(RepetitionPenalty::new(f32::NAN).is_err());
        assert!(NoRepeatNGram::new(0).is_err());
        assert!(SequenceBias::new(vec![(vec![], 1.0)]).is_err());
        assert!(SequenceBias::bad_words(&[vec![]], &[]).is_err());
    }
}
