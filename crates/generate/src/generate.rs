//! The generate loop: prompts of any lengths are left-padded into one batch and prefilled
//! together; then one token per sequence per step with the KV cache, each sequence
//! stopping on its own (end-of-sequence, stop string, length), finished ones leaving the
//! batch. Beam search lives in `beam.rs`.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::time::Instant;

use candle_core::Tensor;
use ferro_models::CausalLm;
use ferro_tokenizers::Tokenizer;
use rand::SeedableRng;

use crate::config::GenerationConfig;
use crate::error::{GenerateError, Result};
use crate::processors::{LogitsProcessorList, Sequence};
use crate::sampling::{argmax, log_softmax, sample, TokenLogprob};
use crate::speculative::{Drafter, SpeculationStats, MAX_DRAFT_TOKENS};
use crate::stopping::{FinishReason, TextTracker};

/// The result of `generate`: for each prompt, `num_return_sequences` sequences (prompt
/// followed by the new tokens), in prompt order.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOutput {
    pub sequences: Vec<Vec<u32>>,
    pub(crate) prompt_lens: Vec<usize>,
    pub finish_reasons: Vec<FinishReason>,
    /// The text of each sequence's new tokens (special tokens skipped, cut before a stop
    /// string), when a tokenizer was given.
    pub texts: Option<Vec<String>>,
    /// Per sequence and new token, when `top_logprobs` was asked for.
    pub logprobs: Option<Vec<Vec<TokenLogprob>>>,
    /// Beam search: each sequence's score (sum of log-probabilities / length^penalty).
    pub sequences_scores: Option<Vec<f32>>,
    /// Speculative decoding: how many draft tokens were proposed and confirmed.
    pub speculation: Option<SpeculationStats>,
}

impl GenerateOutput {
    /// The tokens generated for sequence `i` (transformers' `output[i][len(input_ids[i]):]`).
    pub fn new_tokens(&self, i: usize) -> &[u32] {
        let seq = &self.sequences[i];
        &seq[self.prompt_lens[i].min(seq.len())..]
    }
}

/// What the loop reports as it goes: sequence `seq` got `token`, showing `text` (empty
/// without a tokenizer, or while text is held back). At the end, text still held back
/// comes with `token: None`.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenEvent<'a> {
    pub seq: usize,
    pub token: Option<u32>,
    pub text: &'a str,
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

    /// Generates after each prompt at once (left padding; each sequence stops on its own).
    fn generate_batch(
        &self,
        prompts: &[Vec<u32>],
        cfg: &GenerationConfig,
    ) -> Result<GenerateOutput>;
}

impl Generate for CausalLm {
    fn generate_with(
        &self,
        input_ids: &[u32],
        cfg: &GenerationConfig,
        on_token: &mut dyn FnMut(u32) -> ControlFlow<()>,
    ) -> Result<GenerateOutput> {
        run(
            self,
            std::slice::from_ref(&input_ids.to_vec()),
            cfg,
            None,
            None,
            &mut |e| match e.token {
                Some(t) => on_token(t),
                None => ControlFlow::Continue(()),
            },
        )
    }

    fn generate_batch(
        &self,
        prompts: &[Vec<u32>],
        cfg: &GenerationConfig,
    ) -> Result<GenerateOutput> {
        run(self, prompts, cfg, None, None, &mut |_| {
            ControlFlow::Continue(())
        })
    }
}

/// Generates with a tokenizer: stop strings work, `texts` is filled, and `on_event` sees
/// each token with the text it makes visible.
pub fn generate_text(
    model: &CausalLm,
    tokenizer: &Tokenizer,
    prompts: &[Vec<u32>],
    cfg: &GenerationConfig,
    on_event: &mut dyn FnMut(TokenEvent<'_>) -> ControlFlow<()>,
) -> Result<GenerateOutput> {
    run(model, prompts, cfg, Some(tokenizer), None, on_event)
}

/// `generate_text` with an assistant model drafting tokens for the model to check
/// (transformers' `generate(..., assistant_model=...)`): the same output, fewer passes over
/// the model's weights when the assistant guesses well. One prompt, one sequence.
pub fn generate_text_assisted(
    model: &CausalLm,
    assistant: &CausalLm,
    tokenizer: &Tokenizer,
    prompts: &[Vec<u32>],
    cfg: &GenerationConfig,
    on_event: &mut dyn FnMut(TokenEvent<'_>) -> ControlFlow<()>,
) -> Result<GenerateOutput> {
    run(
        model,
        prompts,
        cfg,
        Some(tokenizer),
        Some(assistant),
        on_event,
    )
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
    generate_text(
        model,
        tokenizer,
        std::slice::from_ref(&input_ids.to_vec()),
        cfg,
        &mut |e| {
            if !e.text.is_empty() {
                on_text(e.text);
            }
            ControlFlow::Continue(())
        },
    )
}

/// Checks the prompts against the model: non-empty, ids in the vocabulary, room left in
/// the context. Returns the longest prompt's length.
pub(crate) fn check_prompts(model: &CausalLm, prompts: &[Vec<u32>]) -> Result<usize> {
    let bad = |msg: String| GenerateError::InvalidArgument {
        param: "input_ids",
        msg,
    };
    if prompts.is_empty() {
        return Err(bad("no prompt was given".into()));
    }
    let vocab = model.config.vocab_size as u32;
    let context = model.max_positions();
    for (i, p) in prompts.iter().enumerate() {
        let which = if prompts.len() > 1 {
            format!("prompt {i}")
        } else {
            "the prompt".into()
        };
        if p.is_empty() {
            return Err(bad(format!("{which} is empty")));
        }
        if let Some(&id) = p.iter().find(|&&id| id >= vocab) {
            return Err(bad(format!(
                "{which}: token id {id} is outside the vocabulary of {vocab}"
            )));
        }
        if p.len() >= context {
            return Err(bad(format!(
                "{which} has {} tokens; the model's context is {context}",
                p.len()
            )));
        }
    }
    Ok(prompts.iter().map(Vec::len).max().unwrap_or(0))
}

/// Left-pads the prompts into one `(b, longest)` batch; returns it with each row's padding.
pub(crate) fn left_padded(
    model: &CausalLm,
    prompts: &[Vec<u32>],
    pad: u32,
) -> Result<(Tensor, Vec<usize>)> {
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(prompts.len() * longest);
    let mut pads = Vec::with_capacity(prompts.len());
    for p in prompts {
        let n = longest - p.len();
        ids.extend(std::iter::repeat_n(pad, n));
        ids.extend_from_slice(p);
        pads.push(n);
    }
    let pads = if pads.iter().all(|&p| p == 0) {
        Vec::new()
    } else {
        pads
    };
    Ok((
        Tensor::from_vec(ids, (prompts.len(), longest), &model.device)?,
        pads,
    ))
}

/// The end-of-sequence tokens `cfg` asks for (the model's own unless overridden), and the
/// token that fills padding.
pub(crate) fn eos_and_pad(model: &CausalLm, cfg: &GenerationConfig) -> (Vec<u32>, u32) {
    let eos = cfg
        .eos_token_ids
        .clone()
        .unwrap_or_else(|| model.config.eos_token_ids.clone());
    let pad = cfg.pad_token_id.or(eos.first().copied()).unwrap_or(0);
    (eos, pad)
}

/// Prefills the prompts as one left-padded batch, then repeats each prompt's row `copies`
/// times (sampled sequences, beams), cache included: prompt `p`'s copies are rows
/// `p * copies..(p + 1) * copies`. Returns the cache and the last logits `(b * copies, 1, vocab)`.
pub(crate) fn prefill_copies(
    model: &CausalLm,
    prompts: &[Vec<u32>],
    pad: u32,
    copies: usize,
) -> Result<(ferro_nn::Cache, Tensor)> {
    let (batch, left_pad) = left_padded(model, prompts, pad)?;
    let mut cache = model.new_batch_cache(left_pad);
    let logits = model.forward(&batch, &mut cache, true)?;
    if copies == 1 {
        return Ok((cache, logits));
    }
    let rows: Vec<usize> = (0..prompts.len())
        .flat_map(|p| std::iter::repeat_n(p, copies))
        .collect();
    cache.select(&rows)?;
    let ids: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
    let logits = logits.index_select(&Tensor::new(ids.as_slice(), &model.device)?, 0)?;
    Ok((cache, logits))
}

/// One sequence being generated.
struct Row<'t> {
    prompt_len: usize,
    ids: Vec<u32>,
    finish: Option<FinishReason>,
    text: Option<TextTracker<'t>>,
    logprobs: Vec<TokenLogprob>,
}

fn run(
    model: &CausalLm,
    prompts: &[Vec<u32>],
    cfg: &GenerationConfig,
    tokenizer: Option<&Tokenizer>,
    assistant: Option<&CausalLm>,
    on_event: &mut dyn FnMut(TokenEvent<'_>) -> ControlFlow<()>,
) -> Result<GenerateOutput> {
    cfg.validate()?;
    if !cfg.stop_strings.is_empty() && tokenizer.is_none() {
        return Err(GenerateError::InvalidArgument {
            param: "stop_strings",
            msg: "matching stop strings needs the tokenizer (use generate_text)".into(),
        });
    }
    if cfg.num_beams > 1 {
        return crate::beam::beam_search(model, prompts, cfg, tokenizer);
    }
    let longest = check_prompts(model, prompts)?;
    let (eos, pad) = eos_and_pad(model, cfg);
    let processors = LogitsProcessorList::from_config(cfg, &eos)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
    let started = Instant::now();

    // Each prompt's sequences share its prefill.
    let n = cfg.num_return_sequences;
    let mut drafter = Drafter::new(model, cfg, assistant, prompts.len() * n)?;
    let (mut cache, mut logits) = prefill_copies(model, prompts, pad, n)?;
    tracing::debug!(prompts = prompts.len(), longest, elapsed = ?started.elapsed(), "prefill");
    let mut rows: Vec<Row<'_>> = prompts
        .iter()
        .flat_map(|p| std::iter::repeat_n(p, n))
        .map(|p| Row {
            prompt_len: p.len(),
            ids: p.clone(),
            finish: None,
            text: tokenizer.map(|t| TextTracker::new(t, &cfg.stop_strings)),
            logprobs: Vec::new(),
        })
        .collect();
    // `active[k]`: the row in batch position `k`.
    let mut active: Vec<usize> = (0..rows.len()).collect();
    let budget = cfg.max_new_tokens.min(model.max_positions() - longest);
    let mut cancelled = false;
    // Speculation: the drafts of the last verify pass, each with the logits that follow
    // it (valid while the chosen tokens equal the drafts), and the round's counts.
    let mut pending: VecDeque<(u32, Tensor)> = VecDeque::new();
    let mut stats = drafter.as_ref().map(|_| SpeculationStats::default());
    let mut round = (0usize, 0usize);
    for step in 0..budget {
        let step_logits: Vec<Vec<f32>> = logits.squeeze(1)?.to_vec2()?;
        let mut next = Vec::with_capacity(active.len());
        for (&r, raw) in active.iter().zip(step_logits) {
            let row = &mut rows[r];
            let mut scores = raw;
            let raw_logprobs = cfg.top_logprobs.map(|_| log_softmax(&scores));
            processors.process(
                Sequence {
                    ids: &row.ids,
                    prompt_len: row.prompt_len,
                },
                &mut scores,
            );
            let token = if cfg.do_sample {
                sample(&scores, &mut rng)
            } else {
                argmax(&scores)
            };
            if let (Some(lp), Some(k)) = (raw_logprobs, cfg.top_logprobs) {
                row.logprobs.push(TokenLogprob::new(&lp, token, k));
            }
            row.ids.push(token);
            let mut shown = String::new();
            if let Some(text) = &mut row.text {
                let (delta, stop) = text.push(token)?;
                shown = delta;
                if let Some(s) = stop {
                    row.finish = Some(FinishReason::StopString(s));
                }
            }
            if row.finish.is_none() && eos.contains(&token) {
                row.finish = Some(FinishReason::Eos);
            }
            let event = TokenEvent {
                seq: r,
                token: Some(token),
                text: &shown,
            };
            if on_event(event).is_break() {
                cancelled = true;
            }
            next.push(token);
        }
        if cancelled {
            finish_all(&mut rows, &active, FinishReason::Cancelled);
            break;
        }
        if step + 1 == budget {
            finish_all(&mut rows, &active, FinishReason::Length);
            break;
        }
        if cfg.max_time.is_some_and(|t| started.elapsed() >= t) {
            finish_all(&mut rows, &active, FinishReason::Time);
            break;
        }
        // Finished sequences leave the batch.
        let keep: Vec<usize> = (0..active.len())
            .filter(|&k| rows[active[k]].finish.is_none())
            .collect();
        if keep.is_empty() {
            break;
        }
        if keep.len() < active.len() {
            cache.select(&keep)?;
            active = keep.iter().map(|&k| active[k]).collect();
            next = keep.iter().map(|&k| next[k]).collect();
        }
        if let (Some(drafter), Some(stats)) = (drafter.as_mut(), stats.as_mut()) {
            let ids = &rows[active[0]].ids;
            if let Some((draft, following)) = pending.pop_front() {
                if draft == next[0] {
                    // Confirmed: its keys and values are cached, its successor's logits known.
                    logits = following;
                    stats.accepted += 1;
                    round.1 += 1;
                    continue;
                }
            }
            drafter.feedback(round.0, round.1);
            pending.clear();
            // Drop the rejected drafts; feed the new token and the next drafts.
            cache.truncate(ids.len() - 1);
            let room = (budget - step - 1).min(model.max_positions() - ids.len());
            let drafts = drafter.propose(ids, room.min(MAX_DRAFT_TOKENS))?;
            let mut input = Vec::with_capacity(1 + drafts.len());
            input.push(next[0]);
            input.extend_from_slice(&drafts);
            let t = input.len();
            let all = model.forward(
                &Tensor::from_vec(input, (1, t), &model.device)?,
                &mut cache,
                drafts.is_empty(),
            )?;
            logits = all.narrow(1, 0, 1)?;
            for (i, &d) in drafts.iter().enumerate() {
                pending.push_back((d, all.narrow(1, i + 1, 1)?));
            }
            stats.drafted += drafts.len();
            stats.verify_passes += 1;
            round = (drafts.len(), 0);
            continue;
        }
        let input = Tensor::from_vec(next, (active.len(), 1), &model.device)?;
        logits = model.forward(&input, &mut cache, true)?;
    }
    tracing::debug!(
        new_tokens = rows.iter().map(|r| r.ids.len() - r.prompt_len).sum::<usize>(),
        elapsed = ?started.elapsed(),
        "generated"
    );
    finish_all(&mut rows, &active, FinishReason::Length);
    let mut texts = tokenizer.map(|_| Vec::with_capacity(rows.len()));
    for (r, row) in rows.iter_mut().enumerate() {
        if let (Some(text), Some(texts)) = (&mut row.text, &mut texts) {
            let rest = text.finish()?;
            if !rest.is_empty() {
                let _ = on_event(TokenEvent {
                    seq: r,
                    token: None,
                    text: &rest,
                });
            }
            texts.push(text.text().to_string());
        }
    }
    let want_logprobs = cfg.top_logprobs.is_some();
    Ok(GenerateOutput {
        prompt_lens: rows.iter().map(|r| r.prompt_len).collect(),
        finish_reasons: rows
            .iter()
            .map(|r| r.finish.clone().unwrap_or(FinishReason::Length))
            .collect(),
        texts,
        logprobs: want_logprobs.then(|| rows.iter().map(|r| r.logprobs.clone()).collect()),
        sequences: rows.into_iter().map(|r| r.ids).collect(),
        sequences_scores: None,
        speculation: stats,
    })
}

fn finish_all(rows: &mut [Row<'_>], active: &[usize], reason: FinishReason) {
    for &r in active {
        rows[r].finish.get_or_insert_with(|| reason.clone());
    }
}
