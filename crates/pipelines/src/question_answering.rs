//! transformers' `question-answering` pipeline (extractive; as in 4.57.6, the last release
//! that has it): the context is cut into windows of `max_seq_len` tokens overlapping by
//! `doc_stride`, each window scores every span by p(start) · p(end), and spans are mapped
//! back to whole words of the context. Equal answers (ignoring case) add their scores,
//! within a window and across windows.

use ferro_models::{BertForQuestionAnswering, LoadOptions};
use ferro_tokenizers::{PairStrategy, PairTruncation, Side, Tokenizer};
use serde::Serialize;

use crate::error::{PipelineError, Result};
use crate::inputs::{max_length, resolve, PaddedBatch};

/// transformers' default window: `min(model_max_length, 384)`.
const DEFAULT_MAX_SEQ_LEN: usize = 384;

/// The call's options, with transformers' defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QaOptions {
    /// How many answers to return.
    pub top_k: usize,
    /// Tokens shared by consecutive windows (default: half a window, at most 128).
    pub doc_stride: Option<usize>,
    /// Tokens per window, question and special tokens included (default:
    /// `min(model_max_length, 384)`).
    pub max_seq_len: Option<usize>,
    /// The longest answer, in tokens.
    pub max_answer_len: usize,
    /// Also offer the empty answer, scored by the [CLS] token.
    pub handle_impossible_answer: bool,
    /// Grow each span to whole words.
    pub align_to_words: bool,
}

impl Default for QaOptions {
    fn default() -> Self {
        Self {
            top_k: 1,
            doc_stride: None,
            max_seq_len: None,
            max_answer_len: 15,
            handle_impossible_answer: false,
            align_to_words: true,
        }
    }
}

/// One answer: its text and character span in the context (`start..end`, in characters
/// as Python counts them), with its score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    pub score: f32,
    pub start: usize,
    pub end: usize,
    pub answer: String,
}

pub struct QuestionAnsweringPipeline {
    model: BertForQuestionAnswering,
    tokenizer: Tokenizer,
    /// The most tokens a window may hold.
    positions: usize,
}

impl QuestionAnsweringPipeline {
    /// A question-answering checkpoint (folder or Hub id) and its tokenizer.
    pub fn from_pretrained(model: &str) -> Result<Self> {
        Self::from_pretrained_with(model, &LoadOptions::default())
    }

    /// The same, loaded with `opts` (transformers' `model_kwargs`).
    pub fn from_pretrained_with(model: &str, opts: &LoadOptions) -> Result<Self> {
        let (source, tokenizer) = resolve(model)?;
        let m = BertForQuestionAnswering::from_source(&source, opts)?;
        let positions = m.bert.config.max_tokens();
        Ok(Self {
            model: m,
            tokenizer,
            positions,
        })
    }

    /// The best answers to `question` found in `context`, best first (at most `top_k`).
    pub fn call(&self, question: &str, context: &str, opts: &QaOptions) -> Result<Vec<Answer>> {
        for (param, text) in [("question", question), ("context", context)] {
            if text.is_empty() {
                return Err(PipelineError::InvalidArgument {
                    param,
                    msg: "cannot be empty".into(),
                });
            }
        }
        if opts.top_k == 0 || opts.max_answer_len == 0 {
            let param = if opts.top_k == 0 {
                "top_k"
            } else {
                "max_answer_len"
            };
            return Err(PipelineError::InvalidArgument {
                param,
                msg: "must be at least 1".into(),
            });
        }
        let default_len = max_length(&self.tokenizer, self.positions).min(DEFAULT_MAX_SEQ_LEN);
        let max_seq_len = opts.max_seq_len.unwrap_or(default_len);
        if max_seq_len > self.positions {
            return Err(PipelineError::InvalidArgument {
                param: "max_seq_len",
                msg: format!(
                    "{max_seq_len} tokens; the model takes at most {}",
                    self.positions
                ),
            });
        }
        let doc_stride = opts.doc_stride.unwrap_or((max_seq_len / 2).min(128));
        if doc_stride > max_seq_len {
            return Err(PipelineError::InvalidArgument {
                param: "doc_stride",
                msg: format!("{doc_stride} is larger than max_seq_len ({max_seq_len})"),
            });
        }
        let windows = self.windows(question, context, max_seq_len, doc_stride)?;
        let (starts, ends) = self.logits(&windows)?;

        // As transformers: keep more spans than asked when aligning to words, since
        // several spans can grow into the same words and merge.
        let per_window = if opts.align_to_words {
            opts.top_k * 2 + 10
        } else {
            opts.top_k
        };
        let chars: Vec<usize> = context.char_indices().map(|(b, _)| b).collect();
        let slice = |s: usize, e: usize| {
            let byte = |c: usize| chars.get(c).copied().unwrap_or(context.len());
            context
                .get(byte(s)..byte(e.max(s)))
                .unwrap_or_default()
                .to_string()
        };
        let mut min_null = f32::INFINITY;
        let mut answers: Vec<Answer> = Vec::new();
        for (w, window) in windows.iter().enumerate() {
            let n = window.ids.len();
            let (start, end) = (&starts[w][..n], &ends[w][..n]);
            let p_start = softmax_over(start, &window.candidate);
            let p_end = softmax_over(end, &window.candidate);
            min_null = min_null.min(p_start[0] * p_end[0]);
            for (s, e, score) in best_spans(&p_start, &p_end, &window.candidate, opts, per_window) {
                let (cs, ce) = window.char_span(s, e, opts.align_to_words);
                let text = slice(cs, ce);
                let lower = text.to_lowercase();
                match answers
                    .iter_mut()
                    .find(|a| a.answer.to_lowercase() == lower)
                {
                    Some(a) => a.score += score,
                    None => answers.push(Answer {
                        score,
                        start: cs,
                        end: ce,
                        answer: text,
                    }),
                }
            }
        }
        if opts.handle_impossible_answer {
            answers.push(Answer {
                score: min_null,
                start: 0,
                end: 0,
                answer: String::new(),
            });
        }
        // Stable, as Python's `sorted`: equal scores keep the order found.
        answers.sort_by(|a, b| b.score.total_cmp(&a.score));
        answers.truncate(opts.top_k);
        Ok(answers)
    }

    /// The question and the context cut into windows, question first (or context first
    /// for tokenizers that pad on the left, as transformers does).
    fn windows(
        &self,
        question: &str,
        context: &str,
        max_seq_len: usize,
        doc_stride: usize,
    ) -> Result<Vec<Window>> {
        let question_first = self.tokenizer.padding_side == Side::Right;
        let (first, second, strategy) = if question_first {
            (question, context, PairStrategy::OnlySecond)
        } else {
            (context, question, PairStrategy::OnlyFirst)
        };
        let truncation = PairTruncation {
            max_length: max_seq_len,
            strategy,
            stride: doc_stride,
        };
        let mut enc = self
            .tokenizer
            .encode_pair(first, second, Some(truncation))
            .map_err(|e| PipelineError::InvalidArgument {
                param: "max_seq_len",
                msg: format!("the question does not leave room for the context: {e}"),
            })?;
        let overflowing = enc.take_overflowing();
        let context_seq = usize::from(question_first);
        let cls = self
            .tokenizer
            .special_tokens
            .cls
            .as_deref()
            .and_then(|t| self.tokenizer.token_to_id(t));
        Ok(std::iter::once(enc)
            .chain(overflowing)
            .map(|enc| {
                // Answers come from context tokens; [CLS] stays in the softmax for the
                // empty answer.
                let candidate = enc
                    .get_sequence_ids()
                    .iter()
                    .zip(enc.get_ids())
                    .map(|(seq, &id)| *seq == Some(context_seq) || Some(id) == cls)
                    .collect();
                Window {
                    ids: enc.get_ids().to_vec(),
                    type_ids: enc.get_type_ids().to_vec(),
                    candidate,
                    context_seq,
                    enc,
                }
            })
            .collect())
    }

    /// Start and end logits of every window (rows padded to the longest), run as one
    /// batch.
    fn logits(&self, windows: &[Window]) -> Result<(Rows, Rows)> {
        let ids: Vec<&[u32]> = windows.iter().map(|w| w.ids.as_slice()).collect();
        let types: Vec<&[u32]> = windows.iter().map(|w| w.type_ids.as_slice()).collect();
        let pad = self.tokenizer.pad_token_id().unwrap_or(0);
        let b = PaddedBatch::new(&ids, Some(&types), pad, &self.model.bert.device)?;
        let (start, end) =
            self.model
                .forward(&b.input_ids, &b.token_type_ids, &b.attention_mask)?;
        Ok((start.to_vec2()?, end.to_vec2()?))
    }
}

/// One row of logits per window.
type Rows = Vec<Vec<f32>>;

/// One window of the question and context, as the model sees it.
struct Window {
    ids: Vec<u32>,
    type_ids: Vec<u32>,
    /// Tokens an answer may start or end on (the context's), plus [CLS].
    candidate: Vec<bool>,
    /// Which sequence of the pair is the context.
    context_seq: usize,
    enc: tokenizers::Encoding,
}

impl Window {
    /// Characters of the context from token `s` to token `e`: grown to the words they
    /// fall in, or the tokens' own offsets when not aligning (or when a token has no word).
    fn char_span(&self, s: usize, e: usize, align_to_words: bool) -> (usize, usize) {
        let word_chars = |t: usize| {
            let (_, word) = self.enc.token_to_word(t)?;
            self.enc.word_to_chars(word, self.context_seq)
        };
        if align_to_words {
            if let (Some(a), Some(b)) = (word_chars(s), word_chars(e)) {
                return (a.0, b.1);
            }
        }
        let offsets = self.enc.get_offsets();
        (offsets[s].0, offsets[e].1)
    }
}

/// Softmax of `logits` over the candidate tokens (the others get 0), in f32 as numpy does.
fn softmax_over(logits: &[f32], candidate: &[bool]) -> Vec<f32> {
    let masked: Vec<f32> = logits
        .iter()
        .zip(candidate)
        .map(|(&x, &c)| if c { x } else { f32::NEG_INFINITY })
        .collect();
    ferro_generate::processors::softmax(&masked)
}

/// The `keep` best spans `(start, end, p_start · p_end)` over candidate tokens, with
/// `end - start < max_answer_len`. Position 0 ([CLS] in BERT) is the empty answer's, never
/// a span's.
fn best_spans(
    p_start: &[f32],
    p_end: &[f32],
    candidate: &[bool],
    opts: &QaOptions,
    keep: usize,
) -> Vec<(usize, usize, f32)> {
    let n = p_start.len();
    let mut spans = Vec::new();
    for s in (1..n).filter(|&s| candidate[s]) {
        for e in (s..n.min(s + opts.max_answer_len)).filter(|&e| candidate[e]) {
            let score = p_start[s] * p_end[e];
            if score > 0.0 {
                spans.push((s, e, score));
            }
        }
    }
    spans.sort_by(|a, b| b.2.total_cmp(&a.2));
    spans.truncate(keep);
    spans
}
