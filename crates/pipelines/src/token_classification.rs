//! transformers' `token-classification` pipeline (NER): a label per token, or entities
//! grouped by the aggregation strategies none / simple / first / average / max, with
//! character offsets into the input.

use ferro_generate::processors::softmax;
use ferro_models::{BertForTokenClassification, LoadOptions};
use ferro_tokenizers::Tokenizer;
use serde::Serialize;

use crate::error::{PipelineError, Result};
use crate::inputs::{encode, max_length, resolve, PaddedBatch};

/// transformers' `aggregation_strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Aggregation {
    /// One record per token (`entity`, `index`).
    #[default]
    None,
    /// Consecutive tokens of one tag (B- starts a new one) grouped, scores averaged.
    Simple,
    /// Sub-words joined into words first, each word labelled by its first token…
    First,
    /// … by the average of its tokens' scores …
    Average,
    /// … or by its most confident token; then grouped as `Simple`.
    Max,
}

impl Aggregation {
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "none" => Self::None,
            "simple" => Self::Simple,
            "first" => Self::First,
            "average" => Self::Average,
            "max" => Self::Max,
            _ => {
                return Err(PipelineError::InvalidArgument {
                    param: "aggregation_strategy",
                    msg: format!("`{name}` is not one of none, simple, first, average, max"),
                })
            }
        })
    }
}

/// One token's or one group's label, as transformers prints it: `entity` and `index` for
/// tokens, `entity_group` for groups.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entity {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity_group: Option<String>,
    pub score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    pub word: String,
    pub start: usize,
    pub end: usize,
}

/// A token before aggregation.
struct PreEntity {
    word: String,
    scores: Vec<f32>,
    start: usize,
    end: usize,
    index: usize,
    is_subword: bool,
}

pub struct TokenClassificationPipeline {
    model: BertForTokenClassification,
    tokenizer: Tokenizer,
    labels: Vec<String>,
    max_length: usize,
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

/// `B-PER` → (B, PER); `I-PER` → (I, PER); anything else → (I, itself).
fn tag(entity: &str) -> (&str, &str) {
    match entity.split_at_checked(2) {
        Some(("B-", rest)) => ("B", rest),
        Some(("I-", rest)) => ("I", rest),
        _ => ("I", entity),
    }
}

/// Tokens back to text with the tokenizer's decoder (transformers'
/// `convert_tokens_to_string`: for WordPiece, `##` joins and the punctuation clean-up).
fn join_tokens(tokenizer: &Tokenizer, tokens: &[&str]) -> String {
    use tokenizers::Decoder;
    let owned: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
    match tokenizer.backend().get_decoder().map(|d| d.decode(owned)) {
        Some(Ok(text)) => text,
        _ => tokens.join(" ").replace(" ##", "").trim().to_string(),
    }
}

impl TokenClassificationPipeline {
    pub fn from_pretrained(model: &str) -> Result<Self> {
        Self::from_pretrained_with(model, &LoadOptions::default())
    }

    /// The same, loaded with `opts` (transformers' `model_kwargs`).
    pub fn from_pretrained_with(model: &str, opts: &LoadOptions) -> Result<Self> {
        let (source, tokenizer) = resolve(model)?;
        let m = BertForTokenClassification::from_source(&source, opts)?;
        let labels = m.bert.config.labels()?;
        if labels.is_empty() {
            return Err(PipelineError::InvalidArgument {
                param: "model",
                msg: format!("`{model}` has no id2label in its config: entities need names"),
            });
        }
        let max_length = max_length(&tokenizer, m.bert.config.max_tokens());
        Ok(Self {
            model: m,
            tokenizer,
            labels,
            max_length,
        })
    }

    /// The entities of `text` (labels in `ignore` left out; transformers ignores `O`).
    pub fn call(
        &self,
        text: &str,
        aggregation: Aggregation,
        ignore: &[String],
    ) -> Result<Vec<Entity>> {
        self.call_windows(text, aggregation, ignore, None)
    }

    /// `call`, and with `stride` the whole of a text longer than the model takes: windows
    /// of the model's length overlapping by `stride` tokens, each labelled alone, then
    /// overlapping entities resolved (the longer wins, or the higher score), as
    /// transformers' `stride`. Without it, the text is cut to the model's length.
    pub fn call_windows(
        &self,
        text: &str,
        aggregation: Aggregation,
        ignore: &[String],
        stride: Option<usize>,
    ) -> Result<Vec<Entity>> {
        let Some(stride) = stride else {
            // transformers truncates token-classification inputs to the model's length.
            let bert = &self.model.bert;
            let e = encode(
                &self.tokenizer,
                text,
                None,
                Some(self.max_length),
                bert.config.max_tokens(),
                &bert.device,
            )?;
            let logits: Vec<Vec<f32>> = self
                .model
                .forward(&e.input_ids, &e.token_type_ids, &e.attention_mask)?
                .squeeze(0)?
                .to_vec2()?;
            return Ok(self.entities(text, &e.ids, &e.offsets, &logits, aggregation, ignore));
        };
        if aggregation == Aggregation::None {
            return Err(PipelineError::InvalidArgument {
                param: "stride",
                msg: "windows need an aggregation_strategy other than none (as in transformers)"
                    .into(),
            });
        }
        let windows = self
            .tokenizer
            .encode_windows(text, self.max_length, stride)?;
        let logits = self.window_logits(&windows)?;
        let mut all: Vec<Entity> = windows
            .iter()
            .zip(&logits)
            .flat_map(|(w, l)| self.entities(text, &w.ids, &w.offsets, l, aggregation, ignore))
            .collect();
        if windows.len() > 1 {
            all = resolve_overlaps(all);
        }
        Ok(all)
    }

    /// Each window's logits, `[window][token][label]`, run as one padded batch.
    fn window_logits(&self, windows: &[ferro_tokenizers::Encoding]) -> Result<Vec<Vec<Vec<f32>>>> {
        let ids: Vec<&[u32]> = windows.iter().map(|w| w.ids.as_slice()).collect();
        let pad = self.tokenizer.pad_token_id().unwrap_or(0);
        let b = PaddedBatch::new(&ids, None, pad, &self.model.bert.device)?;
        let logits: Vec<Vec<Vec<f32>>> = self
            .model
            .forward(&b.input_ids, &b.token_type_ids, &b.attention_mask)?
            .to_vec3()?;
        Ok(logits
            .into_iter()
            .zip(windows)
            .map(|(mut l, w)| {
                l.truncate(w.len());
                l
            })
            .collect())
    }

    /// The entities of one window: its tokens' ids, character offsets into `text` and
    /// logits, aggregated and filtered.
    fn entities(
        &self,
        text: &str,
        ids: &[u32],
        offsets: &[(usize, usize)],
        logits: &[Vec<f32>],
        aggregation: Aggregation,
        ignore: &[String],
    ) -> Vec<Entity> {
        let special = self.tokenizer.all_special_ids();
        let unk = self.tokenizer.unk_token_id();
        let chars: Vec<char> = text.chars().collect();
        let mut pre = Vec::new();
        for (index, ((&id, &(start, end)), row)) in ids.iter().zip(offsets).zip(logits).enumerate()
        {
            // Tokens the tokenizer added ([CLS], [SEP]) have no text; an [UNK] standing for
            // a word of the input does, and stays.
            if special.contains(&id) && start == end {
                continue;
            }
            let word_ref: String = chars[start.min(chars.len())..end.min(chars.len())]
                .iter()
                .collect();
            let token = self.tokenizer.id_to_token(id).unwrap_or_default();
            let (word, is_subword) = if Some(id) == unk {
                (word_ref, false)
            } else {
                let sub = token.chars().count() != word_ref.chars().count();
                (token, sub)
            };
            pre.push(PreEntity {
                word,
                scores: softmax(row),
                start,
                end,
                index,
                is_subword,
            });
        }
        let entities = match aggregation {
            Aggregation::None | Aggregation::Simple => {
                let tokens: Vec<Entity> = pre
                    .iter()
                    .map(|p| {
                        let i = argmax(&p.scores);
                        Entity {
                            entity: Some(self.labels[i].clone()),
                            entity_group: None,
                            score: p.scores[i],
                            index: Some(p.index),
                            word: p.word.clone(),
                            start: p.start,
                            end: p.end,
                        }
                    })
                    .collect();
                if aggregation == Aggregation::None {
                    tokens
                } else {
                    group_entities(&self.tokenizer, &tokens)
                }
            }
            _ => group_entities(&self.tokenizer, &self.aggregate_words(&pre, aggregation)),
        };
        entities
            .into_iter()
            .filter(|e| {
                let label = e.entity.as_ref().or(e.entity_group.as_ref());
                !label.is_some_and(|l| ignore.contains(l))
            })
            .collect()
    }

    /// Words (a token and the sub-words after it), each labelled by `how`.
    fn aggregate_words(&self, pre: &[PreEntity], how: Aggregation) -> Vec<Entity> {
        let mut groups: Vec<Vec<&PreEntity>> = Vec::new();
        for p in pre {
            match groups.last_mut() {
                Some(g) if p.is_subword => g.push(p),
                _ => groups.push(vec![p]),
            }
        }
        groups
            .iter()
            .map(|g| {
                let scores: Vec<f32> = match how {
                    Aggregation::Max => {
                        let best = g.iter().copied().fold(g[0], |b, e| {
                            let m = |x: &PreEntity| {
                                x.scores.iter().copied().fold(f32::NEG_INFINITY, f32::max)
                            };
                            if m(e) > m(b) {
                                e
                            } else {
                                b
                            }
                        });
                        best.scores.clone()
                    }
                    Aggregation::Average => (0..g[0].scores.len())
                        .map(|j| g.iter().map(|e| e.scores[j]).sum::<f32>() / g.len() as f32)
                        .collect(),
                    _ => g[0].scores.clone(),
                };
                let i = argmax(&scores);
                let words: Vec<&str> = g.iter().map(|e| e.word.as_str()).collect();
                Entity {
                    entity: Some(self.labels[i].clone()),
                    entity_group: None,
                    score: scores[i],
                    index: None,
                    word: join_tokens(&self.tokenizer, &words),
                    start: g[0].start,
                    end: g[g.len() - 1].end,
                }
            })
            .collect()
    }
}

/// Entities of overlapping windows, by start: of two that overlap, the longer stays (equal
/// lengths: the higher score), as transformers' `aggregate_overlapping_entities`.
fn resolve_overlaps(mut entities: Vec<Entity>) -> Vec<Entity> {
    entities.sort_by_key(|e| e.start); // stable, as Python's `sorted`
    let mut out = Vec::new();
    let mut iter = entities.into_iter();
    let Some(mut previous) = iter.next() else {
        return out;
    };
    for e in iter {
        if previous.start <= e.start && e.start < previous.end {
            let (len, prev_len) = (e.end - e.start, previous.end - previous.start);
            if len > prev_len || (len == prev_len && e.score > previous.score) {
                previous = e;
            }
        } else {
            out.push(std::mem::replace(&mut previous, e));
        }
    }
    out.push(previous);
    out
}

/// Consecutive entities of one tag (a `B-` starts a new group) as one, scores averaged.
fn group_entities(tokenizer: &Tokenizer, entities: &[Entity]) -> Vec<Entity> {
    let mut groups: Vec<Vec<&Entity>> = Vec::new();
    for e in entities {
        let label = e.entity.as_deref().unwrap_or("");
        let joins = groups.last().and_then(|g| g.last()).is_some_and(|last| {
            let (bi, t) = tag(label);
            let (_, last_t) = tag(last.entity.as_deref().unwrap_or(""));
            t == last_t && bi != "B"
        });
        match groups.last_mut() {
            Some(g) if joins => g.push(e),
            _ => groups.push(vec![e]),
        }
    }
    groups
        .iter()
        .map(|g| {
            let first = g[0].entity.as_deref().unwrap_or("");
            let group = first.split_once('-').map_or(first, |(_, rest)| rest);
            let words: Vec<&str> = g.iter().map(|e| e.word.as_str()).collect();
            Entity {
                entity: None,
                entity_group: Some(group.to_string()),
                score: g.iter().map(|e| e.score).sum::<f32>() / g.len() as f32,
                index: None,
                word: join_tokens(tokenizer, &words),
                start: g[0].start,
                end: g[g.len() - 1].end,
            }
        })
        .collect()
}
