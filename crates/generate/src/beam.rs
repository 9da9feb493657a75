//! Beam search, step for step as transformers 5's `_beam_search` (generation/utils.py):
//! each step extends every running beam by every token (log-probabilities summed), keeps
//! the best `2 × num_beams` candidates, makes the best `num_beams` of them that did not end
//! the next running beams, and offers those among the first `num_beams` that ended (an
//! end-of-sequence token, or the length limit) as finished hypotheses, scored by their
//! sum divided by `generated_tokens ^ length_penalty`.

use candle_core::Tensor;
use ferro_models::CausalLm;
use ferro_tokenizers::Tokenizer;

use crate::config::{EarlyStopping, GenerationConfig};
use crate::error::{GenerateError, Result};
use crate::generate::{check_prompts, eos_and_pad, prefill_copies, GenerateOutput};
use crate::processors::{LogitsProcessorList, Sequence};
use crate::sampling::log_softmax;
use crate::stopping::FinishReason;

/// transformers' score of a beam that must not be chosen.
const BLOCKED: f32 = -1e9;

struct Beam {
    /// Generated tokens (after the prompt).
    tokens: Vec<u32>,
    /// Sum of their log-probabilities.
    score: f32,
}

struct Finished {
    tokens: Vec<u32>,
    /// Length-normalized score.
    score: f32,
}

/// One prompt's search.
struct Search {
    prompt: Vec<u32>,
    running: Vec<Beam>,
    /// At most `num_beams`, best first.
    finished: Vec<Finished>,
    /// transformers' `beam_search_unsatisfied`: may a running beam still beat the finished?
    unsatisfied: bool,
}

struct Candidate {
    beam: usize,
    token: u32,
    score: f32,
}

pub(crate) fn beam_search(
    model: &CausalLm,
    prompts: &[Vec<u32>],
    cfg: &GenerationConfig,
    tokenizer: Option<&Tokenizer>,
) -> Result<GenerateOutput> {
    if !cfg.stop_strings.is_empty() {
        return Err(GenerateError::InvalidArgument {
            param: "stop_strings",
            msg: "not supported with beam search (num_beams > 1)".into(),
        });
    }
    let longest = check_prompts(model, prompts)?;
    let n = cfg.num_beams;
    let (eos, pad) = eos_and_pad(model, cfg);
    let processors = LogitsProcessorList::from_config(cfg, &eos)?;
    let keep = 2usize.max(1 + eos.len()) * n;
    let max_new = cfg.max_new_tokens.min(model.max_positions() - longest);
    if max_new == 0 {
        return Err(GenerateError::InvalidArgument {
            param: "max_new_tokens",
            msg: "beam search needs at least one new token".into(),
        });
    }
    let lp = cfg.length_penalty;

    // Every prompt's row becomes `n` beams (all equal, so only beam 0 starts live).
    let (mut cache, mut logits) = prefill_copies(model, prompts, pad, n)?;
    let mut searches: Vec<Search> = prompts
        .iter()
        .map(|p| Search {
            prompt: p.clone(),
            running: (0..n)
                .map(|j| Beam {
                    tokens: Vec::new(),
                    score: if j == 0 { 0.0 } else { BLOCKED },
                })
                .collect(),
            finished: Vec::new(),
            unsatisfied: true,
        })
        .collect();

    for step in 0..max_new {
        let generated = step + 1;
        let at_limit = generated >= max_new;
        let step_logits: Vec<Vec<f32>> = logits.squeeze(1)?.to_vec2()?;
        let mut reorder = Vec::with_capacity(searches.len() * n);
        let mut next_tokens = Vec::with_capacity(searches.len() * n);
        for (b, s) in searches.iter_mut().enumerate() {
            // All beams' candidates, best `keep` of them.
            let mut candidates: Vec<Candidate> = Vec::with_capacity(n * keep);
            for (j, beam) in s.running.iter().enumerate() {
                let mut logp = log_softmax(&step_logits[b * n + j]);
                let ids: Vec<u32> = s.prompt.iter().chain(&beam.tokens).copied().collect();
                processors.process(
                    Sequence {
                        ids: &ids,
                        prompt_len: s.prompt.len(),
                    },
                    &mut logp,
                );
                candidates.extend(top(&logp, keep).into_iter().map(|(token, l)| Candidate {
                    beam: j,
                    token,
                    score: l + beam.score,
                }));
            }
            candidates.sort_by(|a, c| c.score.total_cmp(&a.score));
            candidates.truncate(keep);
            let hit = |c: &Candidate| at_limit || eos.contains(&c.token);

            // Finished hypotheses: only those ranked among the first `n` candidates.
            let full_before = s.finished.len() == n;
            let blocked =
                !s.unsatisfied || (cfg.early_stopping == EarlyStopping::True && full_before);
            if !blocked {
                for c in candidates.iter().take(n).filter(|c| hit(c)) {
                    let mut tokens = s.running[c.beam].tokens.clone();
                    tokens.push(c.token);
                    s.finished.push(Finished {
                        tokens,
                        score: c.score / (generated as f32).powf(lp),
                    });
                }
                s.finished.sort_by(|a, c| c.score.total_cmp(&a.score));
                s.finished.truncate(n);
            }

            // The next running beams: the best `n` candidates that did not end.
            let next: Vec<&Candidate> = candidates.iter().filter(|c| !hit(c)).take(n).collect();
            let mut running = Vec::with_capacity(n);
            for j in 0..n {
                // At the limit every candidate ended; the beams no longer matter.
                let (beam, token, score) = next
                    .get(j)
                    .map_or((0, pad, BLOCKED), |c| (c.beam, c.token, c.score));
                let mut tokens = s.running[beam].tokens.clone();
                tokens.push(token);
                running.push(Beam { tokens, score });
                reorder.push(b * n + beam);
                next_tokens.push(token);
            }
            s.running = running;

            // transformers' early-stop heuristic (sticky once satisfied).
            let horizon = if cfg.early_stopping == EarlyStopping::Never && lp > 0.0 {
                max_new
            } else {
                generated
            };
            let best_running = s.running[0].score / (horizon as f32).powf(lp);
            let worst_finished = s.finished.last().map_or(BLOCKED, |f| f.score);
            s.unsatisfied &= s.finished.len() < n || best_running > worst_finished;
        }
        let all_full = searches.iter().all(|s| s.finished.len() == n);
        let go_on = searches.iter().any(|s| s.unsatisfied)
            && !(cfg.early_stopping == EarlyStopping::True && all_full)
            && !at_limit;
        if !go_on {
            break;
        }
        cache.select(&reorder)?;
        let input = Tensor::from_vec(next_tokens, (reorder.len(), 1), &model.device)?;
        logits = model.forward(&input, &mut cache, true)?;
    }

    let mut out = GenerateOutput {
        sequences: Vec::new(),
        prompt_lens: Vec::new(),
        finish_reasons: Vec::new(),
        texts: tokenizer.map(|_| Vec::new()),
        logprobs: None,
        sequences_scores: Some(Vec::new()),
        speculation: None,
    };
    for s in searches {
        for f in s.finished.into_iter().take(cfg.num_return_sequences) {
            let ended = f.tokens.last().is_some_and(|t| eos.contains(t));
            if let (Some(texts), Some(t)) = (&mut out.texts, tokenizer) {
                texts.push(t.decode(&f.tokens, true)?);
            }
            out.finish_reasons.push(if ended {
                FinishReason::Eos
            } else {
                FinishReason::Length
            });
            out.prompt_lens.push(s.prompt.len());
            out.sequences
                .push(s.prompt.iter().chain(&f.tokens).copied().collect());
            if let Some(scores) = &mut out.sequences_scores {
                scores.push(f.score);
            }
        }
    }
    Ok(out)
}

/// The `k` highest scores of one beam as `(token, score)` (finite ones only).
fn top(scores: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut order: Vec<usize> = (0..scores.len())
        .filter(|&i| scores[i] > f32::NEG_INFINITY)
        .collect();
    let k = k.min(order.len());
    if k > 0 && k < order.len() {
        order.select_nth_unstable_by(k - 1, |&a, &b| scores[b].total_cmp(&scores[a]));
        order.truncate(k);
    }
    order.into_iter().map(|i| (i as u32, scores[i])).collect()
}
