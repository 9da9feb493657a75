//! Datasets as rows of named values, read from JSONL, JSON, CSV, Parquet or plain text, split into
//! train and test, and tokenized into model inputs for classification.

use std::path::Path;

use candle_core::{Device, Tensor};
use ferro_tokenizers::{PairStrategy, PairTruncation, Tokenizer};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::{Map, Value};

use crate::error::{Result, TrainError};

/// Rows of named values (a JSON object per example), with where they came from.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub rows: Vec<Map<String, Value>>,
    /// The file (or description) rows came from, for error messages.
    pub origin: String,
}

impl Dataset {
    /// Reads `path` by its extension: `.jsonl` (an object per line), `.json` (a list of
    /// objects), `.csv` (a header row names the columns) or anything else as text (one
    /// example per line, in a `text` column); `.parquet` as in [`crate::parquet`].
    pub fn from_file(path: &Path) -> Result<Self> {
        let bad = |msg: String| TrainError::File {
            path: path.into(),
            msg,
        };
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        // Parquet is binary and read apart; the other formats are text.
        let text = match ext {
            "parquet" => String::new(),
            _ => std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?,
        };
        let object = |v: Value, at: String| match v {
            Value::Object(o) => Ok(o),
            _ => Err(bad(format!("{at}: not a JSON object"))),
        };
        let rows = match ext {
            "parquet" => crate::parquet::read_rows(path)?,
            "jsonl" => text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(i, l)| {
                    let v = serde_json::from_str(l)
                        .map_err(|e| bad(format!("line {}: invalid JSON: {e}", i + 1)))?;
                    object(v, format!("line {}", i + 1))
                })
                .collect::<Result<_>>()?,
            "json" => {
                match serde_json::from_str(&text).map_err(|e| bad(format!("invalid JSON: {e}")))? {
                    Value::Array(items) => items
                        .into_iter()
                        .enumerate()
                        .map(|(i, v)| object(v, format!("item {i}")))
                        .collect::<Result<_>>()?,
                    _ => return Err(bad("expected a list of objects".into())),
                }
            }
            "csv" => {
                let records = ferro_core::csv::parse(&text).map_err(bad)?;
                let mut records = records.into_iter();
                let header: Vec<String> = records
                    .next()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|h| h.trim().to_string())
                    .collect();
                records
                    .enumerate()
                    .map(|(i, fields)| {
                        if fields.len() != header.len() {
                            return Err(bad(format!(
                                "row {}: {} fields for the {} columns of the header",
                                i + 2,
                                fields.len(),
                                header.len()
                            )));
                        }
                        Ok(header
                            .iter()
                            .cloned()
                            .zip(fields.into_iter().map(Value::from))
                            .collect())
                    })
                    .collect::<Result<_>>()?
            }
            _ => text
                .lines()
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let mut row = Map::new();
                    row.insert("text".into(), Value::from(l));
                    row
                })
                .collect(),
        };
        let ds = Self {
            rows,
            origin: path.display().to_string(),
        };
        if ds.rows.is_empty() {
            return Err(bad("no examples".into()));
        }
        Ok(ds)
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// An error about row `i` (0-based) of this dataset.
    fn row_error(&self, i: usize, msg: String) -> TrainError {
        TrainError::InvalidArgument {
            param: "column",
            msg: format!("{}: row {}: {msg}", self.origin, i + 1),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Checks that every row has `column`; the error names the dataset, the column and the
    /// columns the first row has.
    pub fn require_column(&self, column: &str) -> Result<()> {
        if let Some((i, row)) = self
            .rows
            .iter()
            .enumerate()
            .find(|(_, r)| !r.contains_key(column))
        {
            let have: Vec<&str> = row.keys().map(String::as_str).collect();
            return Err(TrainError::InvalidArgument {
                param: "column",
                msg: format!(
                    "{}: row {} has no column `{column}` (it has: {})",
                    self.origin,
                    i + 1,
                    have.join(", ")
                ),
            });
        }
        Ok(())
    }

    /// A shuffled split (as `datasets`' `train_test_split(test_size, seed=...)`): a
    /// `test_size` fraction (or count, when >= 1) of the rows goes to the test part.
    pub fn train_test_split(&self, test_size: f64, seed: u64) -> Result<(Dataset, Dataset)> {
        let n = self.len();
        let test = if test_size >= 1.0 {
            test_size as usize
        } else {
            (n as f64 * test_size).ceil() as usize
        };
        if test_size.is_nan() || test_size <= 0.0 || test >= n {
            return Err(TrainError::InvalidArgument {
                param: "test_size",
                msg: format!("{test_size} leaves no rows to train on out of {n}"),
            });
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        let part = |idx: &[usize], name: &str| Dataset {
            rows: idx.iter().map(|&i| self.rows[i].clone()).collect(),
            origin: format!("{} ({name})", self.origin),
        };
        Ok((part(&order[test..], "train"), part(&order[..test], "test")))
    }
}

/// One tokenized example: its inputs and labels, one for a sequence classifier, one per
/// token for token classification and causal LMs (-100: not scored).
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub input_ids: Vec<u32>,
    pub token_type_ids: Vec<u32>,
    pub labels: Vec<i64>,
}

/// Which columns hold what, for sequence classification.
#[derive(Debug, Clone)]
pub struct ClassificationColumns {
    pub text: String,
    pub text_pair: Option<String>,
    pub label: String,
}

impl Default for ClassificationColumns {
    fn default() -> Self {
        Self {
            text: "text".into(),
            text_pair: None,
            label: "label".into(),
        }
    }
}

/// Tokenizes `ds` for sequence classification: texts (and pairs) truncated to `max_length`
/// tokens, labels given as class ids or as names from `labels`.
pub fn tokenize_classification(
    ds: &Dataset,
    tokenizer: &Tokenizer,
    columns: &ClassificationColumns,
    labels: &[String],
    max_length: usize,
) -> Result<Vec<Example>> {
    ds.require_column(&columns.text)?;
    ds.require_column(&columns.label)?;
    if let Some(p) = &columns.text_pair {
        ds.require_column(p)?;
    }
    let text_of = |row: &Map<String, Value>, col: &str, i: usize| -> Result<String> {
        match &row[col] {
            Value::String(s) => Ok(s.clone()),
            other => Err(TrainError::InvalidArgument {
                param: "column",
                msg: format!("{}: row {}: `{col}` is {other}, not text", ds.origin, i + 1),
            }),
        }
    };
    ds.rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let label = label_id(&row[&columns.label], labels).map_err(|msg| {
                TrainError::InvalidArgument {
                    param: "labels",
                    msg: format!("{}: row {}: {msg}", ds.origin, i + 1),
                }
            })?;
            let text = text_of(row, &columns.text, i)?;
            let truncation = Some(PairTruncation {
                max_length,
                strategy: PairStrategy::LongestFirst,
                stride: 0,
            });
            let (input_ids, token_type_ids) = match &columns.text_pair {
                Some(p) => {
                    let enc = tokenizer.encode_pair(&text, &text_of(row, p, i)?, truncation)?;
                    (enc.get_ids().to_vec(), enc.get_type_ids().to_vec())
                }
                None => {
                    let enc = tokenizer.encode_windows(&text, max_length, 0)?;
                    let ids = enc.into_iter().next().map(|e| e.ids).unwrap_or_default();
                    let types = vec![0; ids.len()];
                    (ids, types)
                }
            };
            Ok(Example {
                input_ids,
                token_type_ids,
                labels: vec![label],
            })
        })
        .collect()
}

/// A label as a class id: an integer below the number of labels, or one of their names.
fn label_id(v: &Value, labels: &[String]) -> std::result::Result<i64, String> {
    let n = labels.len() as i64;
    match v {
        Value::Number(x) => match x.as_i64() {
            Some(id) if (0..n).contains(&id) => Ok(id),
            _ => Err(format!("label {x} is outside the {n} classes (0..{n})")),
        },
        Value::String(s) => match labels.iter().position(|l| l == s) {
            Some(i) => Ok(i as i64),
            None => match s.parse::<i64>() {
                Ok(id) if (0..n).contains(&id) => Ok(id),
                _ => Err(format!("label `{s}` is not one of {labels:?}")),
            },
        },
        other => Err(format!(
            "label {other} is neither a class id nor a label name"
        )),
    }
}

/// A padded batch.
#[derive(Debug, Clone)]
pub struct Batch {
    pub input_ids: Tensor,
    pub token_type_ids: Tensor,
    pub attention_mask: Tensor,
    /// Per row: its one label, or one per token padded with -100 to the batch's width.
    pub labels: Vec<Vec<i64>>,
}

impl Batch {
    /// The rows' single labels (sequence classification).
    pub fn row_labels(&self) -> Vec<i64> {
        self.labels
            .iter()
            .map(|l| l.first().copied().unwrap_or(crate::loss::IGNORE_INDEX))
            .collect()
    }
}

/// Pads `examples` to the longest of them with `pad_id` (transformers'
/// `DataCollatorWithPadding`; per-token labels padded with -100, as
/// `DataCollatorForTokenClassification` does).
pub fn collate(
    examples: &[&Example],
    pad_id: u32,
    per_token: bool,
    device: &Device,
) -> Result<Batch> {
    let width = examples
        .iter()
        .map(|e| e.input_ids.len())
        .max()
        .unwrap_or(0);
    let (mut ids, mut types, mut mask) = (Vec::new(), Vec::new(), Vec::new());
    for e in examples {
        let fill = width - e.input_ids.len();
        ids.extend(
            e.input_ids
                .iter()
                .copied()
                .chain(std::iter::repeat_n(pad_id, fill)),
        );
        types.extend(
            e.token_type_ids
                .iter()
                .copied()
                .chain(std::iter::repeat_n(0, fill)),
        );
        mask.extend(
            std::iter::repeat_n(1u32, e.input_ids.len()).chain(std::iter::repeat_n(0, fill)),
        );
    }
    let shape = (examples.len(), width);
    Ok(Batch {
        input_ids: Tensor::from_vec(ids, shape, device)?,
        token_type_ids: Tensor::from_vec(types, shape, device)?,
        attention_mask: Tensor::from_vec(mask, shape, device)?,
        labels: examples
            .iter()
            .map(|e| {
                let mut l = e.labels.clone();
                if per_token {
                    l.resize(width, crate::loss::IGNORE_INDEX);
                }
                l
            })
            .collect(),
    })
}

/// Tokenizes pre-split words (`tokens_column`, a list of strings per row) with their tags
/// (`tags_column`: ids or names from `labels`) for token classification, as transformers'
/// run_ner does: each word's first sub-token carries the word's label, the other sub-tokens
/// and the special tokens -100; cut to `max_length` tokens.
pub fn tokenize_token_classification(
    ds: &Dataset,
    tokenizer: &Tokenizer,
    tokens_column: &str,
    tags_column: &str,
    labels: &[String],
    max_length: usize,
) -> Result<Vec<Example>> {
    ds.require_column(tokens_column)?;
    ds.require_column(tags_column)?;
    ds.rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let at = |msg: String| ds.row_error(i, msg);
            let words: Vec<String> = serde_json::from_value(row[tokens_column].clone())
                .map_err(|_| at(format!("`{tokens_column}` is not a list of strings")))?;
            let tags = row[tags_column]
                .as_array()
                .ok_or_else(|| at(format!("`{tags_column}` is not a list")))?;
            if tags.len() != words.len() {
                return Err(at(format!("{} tags for {} words", tags.len(), words.len())));
            }
            let tag_ids: Vec<i64> = tags
                .iter()
                .map(|t| label_id(t, labels))
                .collect::<std::result::Result<_, _>>()
                .map_err(|msg| TrainError::InvalidArgument {
                    param: "labels",
                    msg: format!("{}: row {}: {msg}", ds.origin, i + 1),
                })?;
            let word_refs: Vec<&str> = words.iter().map(String::as_str).collect();
            let enc = tokenizer.encode_words(&word_refs, max_length)?;
            let mut previous = None;
            let labels = enc
                .get_word_ids()
                .iter()
                .map(|w| {
                    let label = match *w {
                        Some(w) if Some(w) != previous => tag_ids[w as usize],
                        _ => crate::loss::IGNORE_INDEX,
                    };
                    previous = *w;
                    label
                })
                .collect();
            Ok(Example {
                input_ids: enc.get_ids().to_vec(),
                token_type_ids: enc.get_type_ids().to_vec(),
                labels,
            })
        })
        .collect()
}

/// Tokenizes rows for causal-LM training: a `text` column is scored whole (labels = the
/// ids); a `messages` column (a chat) is rendered by the chat template and only the
/// assistant's turns are scored, the rest labelled -100. Cut to `max_length` tokens.
pub fn tokenize_causal_lm(
    ds: &Dataset,
    tokenizer: &Tokenizer,
    column: &str,
    max_length: usize,
) -> Result<Vec<Example>> {
    use ferro_tokenizers::ChatTemplateOptions;
    ds.require_column(column)?;
    ds.rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let at = |msg: String| ds.row_error(i, msg);
            let (mut ids, mut labels) = match &row[column] {
                Value::String(text) => {
                    let ids = tokenizer.encode(text, true)?.ids;
                    let labels = ids.iter().map(|&t| i64::from(t)).collect();
                    (ids, labels)
                }
                Value::Array(messages) => {
                    let render = |upto: usize, prompt: bool| -> Result<Vec<u32>> {
                        let opts = ChatTemplateOptions {
                            add_generation_prompt: prompt,
                            ..ChatTemplateOptions::default()
                        };
                        let text = tokenizer.render_chat(&messages[..upto], &opts)?;
                        Ok(tokenizer.encode(&text, false)?.ids)
                    };
                    let ids = render(messages.len(), false)?;
                    let mut labels = vec![crate::loss::IGNORE_INDEX; ids.len()];
                    for (m, msg) in messages.iter().enumerate() {
                        if msg.get("role").and_then(Value::as_str) != Some("assistant") {
                            continue;
                        }
                        let start = render(m, true)?.len().min(ids.len());
                        let end = render(m + 1, false)?.len().min(ids.len());
                        for p in start..end {
                            labels[p] = i64::from(ids[p]);
                        }
                    }
                    (ids, labels)
                }
                other => {
                    return Err(at(format!(
                        "`{column}` is {other}: neither text nor messages"
                    )))
                }
            };
            ids.truncate(max_length);
            labels.truncate(max_length);
            if ids.len() < 2 {
                return Err(at("fewer than 2 tokens: nothing to predict".into()));
            }
            Ok(Example {
                token_type_ids: vec![0; ids.len()],
                input_ids: ids,
                labels,
            })
        })
        .collect()
}

/// Masked-LM masking, as transformers' `DataCollatorForLanguageModeling`: each non-special
/// token is chosen with `probability` (0.15); a chosen token becomes the mask token 80 % of
/// the time, a random token 10 %, stays 10 %, and only chosen tokens are scored (at least
/// one per text).
#[derive(Debug, Clone)]
pub struct MlmMasking {
    pub mask_id: u32,
    pub vocab_size: u32,
    pub special_ids: Vec<u32>,
    pub probability: f64,
}

impl MlmMasking {
    /// The masking for `tokenizer`'s vocabulary (it needs a mask token).
    pub fn for_tokenizer(tokenizer: &Tokenizer, probability: f64) -> Result<Self> {
        let mask_id = tokenizer
            .special_tokens
            .mask
            .as_deref()
            .and_then(|t| tokenizer.token_to_id(t))
            .ok_or_else(|| TrainError::InvalidArgument {
                param: "tokenizer",
                msg: format!(
                    "`{}` has no mask token for masked-LM training",
                    tokenizer.name()
                ),
            })?;
        if !(probability > 0.0 && probability < 1.0) {
            return Err(TrainError::InvalidArgument {
                param: "mlm_probability",
                msg: format!("must be between 0 and 1, got {probability}"),
            });
        }
        Ok(Self {
            mask_id,
            vocab_size: tokenizer.vocab_size() as u32,
            special_ids: tokenizer.all_special_ids(),
            probability,
        })
    }

    /// `example` masked with a generator seeded by `seed` (the Trainer derives it from the
    /// run's seed, the epoch and the example, so a resumed run masks the same way).
    pub fn apply(&self, example: &Example, seed: u64) -> Example {
        use rand::Rng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut input_ids = example.input_ids.clone();
        let mut labels = vec![crate::loss::IGNORE_INDEX; input_ids.len()];
        let ordinary: Vec<usize> = (0..input_ids.len())
            .filter(|&i| !self.special_ids.contains(&input_ids[i]))
            .collect();
        let mut chosen: Vec<usize> = ordinary
            .iter()
            .copied()
            .filter(|_| rng.random::<f64>() < self.probability)
            .collect();
        // A short text can draw nothing; score one token rather than none (the collator
        // would give a batch of such texts a NaN loss).
        if chosen.is_empty() && !ordinary.is_empty() {
            chosen.push(ordinary[rng.random_range(0..ordinary.len())]);
        }
        for i in chosen {
            labels[i] = i64::from(input_ids[i]);
            let r: f64 = rng.random();
            if r < 0.8 {
                input_ids[i] = self.mask_id;
            } else if r < 0.9 {
                input_ids[i] = rng.random_range(0..self.vocab_size);
            }
        }
        Example {
            input_ids,
            token_type_ids: example.token_type_ids.clone(),
            labels,
        }
    }
}

/// Tokenizes a text column for masked-LM training (labels come from the masking at batch
/// time); cut to `max_length` tokens.
pub fn tokenize_masked_lm(
    ds: &Dataset,
    tokenizer: &Tokenizer,
    column: &str,
    max_length: usize,
) -> Result<Vec<Example>> {
    ds.texts(column)?
        .into_iter()
        .map(|text| {
            let ids = tokenizer
                .encode_windows(text, max_length, 0)?
                .into_iter()
                .next()
                .map(|e| e.ids)
                .unwrap_or_default();
            Ok(Example {
                token_type_ids: vec![0; ids.len()],
                labels: vec![crate::loss::IGNORE_INDEX; ids.len()],
                input_ids: ids,
            })
        })
        .collect()
}

/// run_clm.py's `group_texts` on token ids: the documents joined with `eos` after each
/// one, cut into blocks of `block_size` tokens; the tokens after the last whole block are
/// dropped.
pub fn group_texts(documents: &[Vec<u32>], eos: u32, block_size: usize) -> Vec<Vec<u32>> {
    let mut all = Vec::with_capacity(documents.iter().map(|d| d.len() + 1).sum());
    for d in documents {
        all.extend_from_slice(d);
        all.push(eos);
    }
    all.chunks_exact(block_size.max(1))
        .map(<[u32]>::to_vec)
        .collect()
}

/// Tokenizes a text column for pretraining: every text (without special tokens) is a
/// document, grouped by `group_texts` into blocks of `block_size` tokens with the
/// tokenizer's EOS between documents; every token of a block is scored.
pub fn tokenize_grouped(
    ds: &Dataset,
    tokenizer: &Tokenizer,
    column: &str,
    block_size: usize,
) -> Result<Vec<Example>> {
    let bad = |msg: String| TrainError::InvalidArgument {
        param: "data.block_size",
        msg,
    };
    if block_size < 2 {
        return Err(bad(format!(
            "{block_size}: a block needs at least 2 tokens"
        )));
    }
    let eos = tokenizer
        .eos_token_id()
        .ok_or_else(|| bad("the tokenizer has no EOS token to put between documents".into()))?;
    let documents = ds
        .texts(column)?
        .into_iter()
        .map(|text| Ok(tokenizer.encode(text, false)?.ids))
        .collect::<Result<Vec<_>>>()?;
    let blocks = group_texts(&documents, eos, block_size);
    if blocks.is_empty() {
        let total: usize = documents.iter().map(|d| d.len() + 1).sum();
        return Err(bad(format!(
            "the {total} tokens of {} make no block of {block_size}",
            ds.origin
        )));
    }
    Ok(blocks
        .into_iter()
        .map(|ids| Example {
            token_type_ids: vec![0; ids.len()],
            labels: ids.iter().map(|&t| i64::from(t)).collect(),
            input_ids: ids,
        })
        .collect())
}

impl Dataset {
    /// Every row's `column`, which must be text (errors name the row).
    fn texts(&self, column: &str) -> Result<Vec<&str>> {
        self.require_column(column)?;
        self.rows
            .iter()
            .enumerate()
            .map(|(i, row)| {
                row[column]
                    .as_str()
                    .ok_or_else(|| self.row_error(i, format!("`{column}` is not text")))
            })
            .collect()
    }
}
