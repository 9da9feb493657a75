//! `Tokenizer`: a `tokenizers` pipeline plus what transformers keeps beside it (named
//! special tokens, chat templates, padding and truncation sides, generation eos ids).

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use tokenizers::{PostProcessor, TruncationDirection};

use crate::chat_template::{self, ChatMessage, ChatTemplateOptions};
use crate::error::{Result, TokenizerError};
use crate::stream::DecodeStream;

/// Which end of a sequence padding or truncation applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Side {
    Left,
    #[default]
    Right,
}

impl Side {
    /// The `tokenizers` truncation direction that cuts from this side.
    fn direction(self) -> TruncationDirection {
        match self {
            Side::Left => TruncationDirection::Left,
            Side::Right => TruncationDirection::Right,
        }
    }

    pub(crate) fn parse(field: &'static str, s: &str) -> Result<Self> {
        match s {
            "left" => Ok(Side::Left),
            "right" => Ok(Side::Right),
            other => Err(TokenizerError::InvalidArgument {
                param: field,
                msg: format!("expected \"left\" or \"right\", got {other:?}"),
            }),
        }
    }
}

/// The tokens transformers names (`bos_token`, `eos_token`, ...), as text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpecialTokens {
    pub bos: Option<String>,
    pub eos: Option<String>,
    pub unk: Option<String>,
    pub pad: Option<String>,
    pub sep: Option<String>,
    pub cls: Option<String>,
    pub mask: Option<String>,
    pub additional: Vec<String>,
}

impl SpecialTokens {
    /// `(name, token)` pairs as transformers' `special_tokens_map` has them.
    pub fn named(&self) -> Vec<(&'static str, &str)> {
        [
            ("bos_token", &self.bos),
            ("eos_token", &self.eos),
            ("unk_token", &self.unk),
            ("sep_token", &self.sep),
            ("pad_token", &self.pad),
            ("cls_token", &self.cls),
            ("mask_token", &self.mask),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
    }
}

/// Chat templates of a model: an optional default and named ones (`tool_use`, `rag`, ...).
#[derive(Debug, Clone, Default)]
pub struct ChatTemplates {
    pub default: Option<String>,
    pub named: BTreeMap<String, String>,
}

/// How to pad a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Padding {
    /// No padding: rows keep their lengths.
    #[default]
    None,
    /// Pad to the longest row of the batch.
    Longest,
    /// Pad every row to this length (rows already longer are left as they are).
    MaxLength(usize),
}

/// Options of `encode_batch`, as transformers' `__call__` arguments.
#[derive(Debug, Clone)]
pub struct EncodeOptions {
    pub add_special_tokens: bool,
    pub padding: Padding,
    /// Cut each row (special tokens included) to this many tokens.
    pub truncation: Option<usize>,
    /// Overrides the tokenizer's `padding_side`.
    pub padding_side: Option<Side>,
    /// Overrides the tokenizer's `truncation_side`.
    pub truncation_side: Option<Side>,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            add_special_tokens: true,
            padding: Padding::None,
            truncation: None,
            padding_side: None,
            truncation_side: None,
        }
    }
}

/// Which part of a text pair truncation cuts (transformers' `truncation=` strategies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairStrategy {
    /// Token by token from the longer of the two.
    LongestFirst,
    OnlyFirst,
    OnlySecond,
}

/// How to cut a text pair: to `max_length` tokens (special tokens included), the cut-off
/// tokens returned as windows overlapping by `stride`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairTruncation {
    pub max_length: usize,
    pub strategy: PairStrategy,
    pub stride: usize,
}

/// One encoded text. Offsets are character offsets into the input, as transformers
/// returns them with `return_offsets_mapping=True`; special tokens get `(0, 0)`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Encoding {
    pub ids: Vec<u32>,
    pub attention_mask: Vec<u32>,
    pub offsets: Vec<(usize, usize)>,
    pub tokens: Vec<String>,
}

impl From<&tokenizers::Encoding> for Encoding {
    fn from(e: &tokenizers::Encoding) -> Self {
        Self {
            ids: e.get_ids().to_vec(),
            attention_mask: e.get_attention_mask().to_vec(),
            offsets: e.get_offsets().to_vec(),
            tokens: e.get_tokens().to_vec(),
        }
    }
}

impl Encoding {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// A batch of encodings, padded as asked.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BatchEncoding {
    pub input_ids: Vec<Vec<u32>>,
    pub attention_mask: Vec<Vec<u32>>,
    pub offsets: Vec<Vec<(usize, usize)>>,
}

/// A tokenizer as transformers' `AutoTokenizer` returns it.
#[derive(Clone)]
pub struct Tokenizer {
    pub(crate) inner: tokenizers::Tokenizer,
    /// The model this came from, for messages.
    pub(crate) name: String,
    pub special_tokens: SpecialTokens,
    pub chat_templates: ChatTemplates,
    /// The longest input the model takes, when known.
    pub model_max_length: Option<usize>,
    pub padding_side: Side,
    pub truncation_side: Side,
    /// transformers' `clean_up_tokenization_spaces` (" ." → "." etc. after decoding).
    pub clean_up_tokenization_spaces: bool,
    /// Token ids that end generation (generation_config.json's `eos_token_id`, else the eos token).
    pub eos_token_ids: Vec<u32>,
    /// Computed once: the backend recounts its whole vocabulary on every query.
    pub(crate) vocab_size: usize,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("name", &self.name)
            .field("vocab_size", &self.vocab_size())
            .field("special_tokens", &self.special_tokens)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// The underlying `tokenizers` pipeline.
    pub fn backend(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Where this tokenizer came from.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Vocabulary size including added tokens (transformers' `len(tokenizer)`).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn bos_token_id(&self) -> Option<u32> {
        self.special_tokens
            .bos
            .as_deref()
            .and_then(|t| self.token_to_id(t))
    }
    pub fn eos_token_id(&self) -> Option<u32> {
        self.special_tokens
            .eos
            .as_deref()
            .and_then(|t| self.token_to_id(t))
    }
    pub fn pad_token_id(&self) -> Option<u32> {
        self.special_tokens
            .pad
            .as_deref()
            .and_then(|t| self.token_to_id(t))
    }
    pub fn unk_token_id(&self) -> Option<u32> {
        self.special_tokens
            .unk
            .as_deref()
            .and_then(|t| self.token_to_id(t))
    }

    /// Ids of the named special tokens, then the additional ones, without repeats
    /// (transformers' `all_special_ids`).
    pub fn all_special_ids(&self) -> Vec<u32> {
        let mut ids = Vec::new();
        let named = self.special_tokens.named().into_iter().map(|(_, t)| t);
        for t in named.chain(self.special_tokens.additional.iter().map(String::as_str)) {
            if let Some(id) = self.token_to_id(t) {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        ids
    }

    /// Encodes one text. `add_special_tokens` adds what the model's post-processor adds
    /// (BOS for Gemma and Llama, [CLS]/[SEP] for BERT, nothing for Qwen).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Encoding> {
        self.encode_with(text, add_special_tokens, None, self.truncation_side)
    }

    fn encode_with(
        &self,
        text: &str,
        add_special_tokens: bool,
        truncation: Option<usize>,
        side: Side,
    ) -> Result<Encoding> {
        let enc = match truncation {
            None => self
                .inner
                .encode_char_offsets(text, add_special_tokens)
                .map_err(|e| TokenizerError::backend("encode", e))?,
            Some(max) => self.truncated(text, add_special_tokens, max, None, side)?,
        };
        Ok(Encoding::from(&enc))
    }

    /// One input (a text, or pre-split words) encoded with character offsets and cut so
    /// that, with the special tokens the post-processor adds, it holds at most
    /// `max_length` tokens from `side`; with a `stride` (windows) the tokens cut off come
    /// back as overflowing windows sharing `stride` tokens with the one before.
    fn truncated<'s, E: Into<tokenizers::EncodeInput<'s>>>(
        &self,
        input: E,
        add_special_tokens: bool,
        max_length: usize,
        stride: Option<usize>,
        side: Side,
    ) -> Result<tokenizers::Encoding> {
        let mut enc = self
            .inner
            .encode_char_offsets(input, false)
            .map_err(|e| TokenizerError::backend("encode", e))?;
        let specials = if add_special_tokens {
            self.inner
                .get_post_processor()
                .map_or(0, |p| p.added_tokens(false))
        } else {
            0
        };
        let room = max_length.saturating_sub(specials);
        // `tokenizers` panics when the stride does not fit in a window; refuse it here.
        if let Some(stride) = stride.filter(|&st| enc.len() > room && st >= room) {
            return Err(TokenizerError::InvalidArgument {
                param: "stride",
                msg: format!(
                    "{stride} must be less than the {room} text tokens a window of \
                     {max_length} holds besides {specials} special ones"
                ),
            });
        }
        enc.truncate(room, stride.unwrap_or(0), side.direction());
        self.inner
            .post_process(enc, None, add_special_tokens)
            .map_err(|e| TokenizerError::backend("encode", e))
    }

    /// Pre-split words (transformers' `is_split_into_words=True`) encoded with special
    /// tokens and cut to `max_length`; the result keeps each token's word index.
    pub fn encode_words(&self, words: &[&str], max_length: usize) -> Result<tokenizers::Encoding> {
        self.truncated(words, true, max_length, None, self.truncation_side)
    }

    /// Encodes several texts, truncated and padded as `opts` says.
    pub fn encode_batch<S: AsRef<str>>(
        &self,
        texts: &[S],
        opts: &EncodeOptions,
    ) -> Result<BatchEncoding> {
        if opts.truncation == Some(0) {
            return Err(TokenizerError::InvalidArgument {
                param: "truncation",
                msg: "max_length must be > 0".into(),
            });
        }
        let side = opts.truncation_side.unwrap_or(self.truncation_side);
        let encs = texts
            .iter()
            .map(|t| self.encode_with(t.as_ref(), opts.add_special_tokens, opts.truncation, side))
            .collect::<Result<Vec<_>>>()?;
        let target = match opts.padding {
            Padding::None => None,
            Padding::Longest => Some(encs.iter().map(Encoding::len).max().unwrap_or(0)),
            Padding::MaxLength(n) => Some(n),
        };
        let pad_id = match target {
            Some(_) => {
                Some(
                    self.pad_token_id()
                        .ok_or_else(|| TokenizerError::InvalidArgument {
                            param: "padding",
                            msg: format!(
                                "the tokenizer of `{}` has no pad token; set one before padding",
                                self.name
                            ),
                        })?,
                )
            }
            None => None,
        };
        let padding_side = opts.padding_side.unwrap_or(self.padding_side);
        let mut out = BatchEncoding::default();
        for mut e in encs {
            if let (Some(target), Some(pad)) = (target, pad_id) {
                let n = target.saturating_sub(e.len());
                let at = if padding_side == Side::Left {
                    0
                } else {
                    e.len()
                };
                e.ids.splice(at..at, std::iter::repeat_n(pad, n));
                e.attention_mask.splice(at..at, std::iter::repeat_n(0, n));
                e.offsets.splice(at..at, std::iter::repeat_n((0, 0), n));
            }
            out.input_ids.push(e.ids);
            out.attention_mask.push(e.attention_mask);
            out.offsets.push(e.offsets);
        }
        Ok(out)
    }

    /// Encodes `text` (special tokens added) in windows of at most `max_length` tokens,
    /// each sharing its first `stride` tokens with the end of the one before, as
    /// transformers' `tokenizer(text, truncation=True, max_length=..., stride=...,
    /// return_overflowing_tokens=True)`. A text that fits is one window.
    pub fn encode_windows(
        &self,
        text: &str,
        max_length: usize,
        stride: usize,
    ) -> Result<Vec<Encoding>> {
        let mut enc = self.truncated(text, true, max_length, Some(stride), self.truncation_side)?;
        let overflowing = enc.take_overflowing();
        Ok(std::iter::once(enc)
            .chain(overflowing)
            .map(|e| Encoding::from(&e))
            .collect())
    }

    /// Encodes the pair `(first, second)` as one input (special tokens added, character
    /// offsets, type ids, words and sequence ids kept), as transformers'
    /// `tokenizer(first, second, truncation=..., max_length=..., stride=...,
    /// return_overflowing_tokens=True)`: cut to `max_length` tokens as `strategy` says;
    /// the tokens cut off come back as further windows, each overlapping the one before by
    /// `stride` tokens, in the result's `get_overflowing()`.
    pub fn encode_pair(
        &self,
        first: &str,
        second: &str,
        truncation: Option<PairTruncation>,
    ) -> Result<tokenizers::Encoding> {
        let encode = |text: &str| {
            self.inner
                .encode_char_offsets(text, false)
                .map_err(|e| TokenizerError::backend("encode", e))
        };
        let (a, mut b) = (encode(first)?, encode(second)?);
        // As `tokenizers` encodes a pair: the second text's tokens are type 1 before the
        // post-processor runs, which is what the overflowing windows keep.
        b.set_type_ids(vec![1; b.len()]);
        let (a, b) = match truncation {
            None => (a, Some(b)),
            Some(t) => {
                let specials = self
                    .inner
                    .get_post_processor()
                    .map_or(0, |p| p.added_tokens(true));
                let room = t.max_length.saturating_sub(specials);
                // The window the cut sequence keeps; `tokenizers` panics when the stride
                // does not fit in it, so refuse that here.
                let kept = match t.strategy {
                    PairStrategy::OnlyFirst => room.checked_sub(b.len()),
                    PairStrategy::OnlySecond => room.checked_sub(a.len()),
                    PairStrategy::LongestFirst => Some(room / 2),
                };
                let too_long = a.len() + b.len() > room;
                match kept {
                    Some(k) if !too_long || (k > 0 && t.stride < k) => {}
                    _ => {
                        return Err(TokenizerError::InvalidArgument {
                            param: "max_length",
                            msg: format!(
                                "{} + {} tokens (and {specials} special ones) cannot be cut \
                                 to {} as {:?} with a stride of {}: too little room is left \
                                 for the part being cut",
                                a.len(),
                                b.len(),
                                t.max_length,
                                t.strategy,
                                t.stride
                            ),
                        })
                    }
                }
                let params = tokenizers::TruncationParams {
                    max_length: room,
                    strategy: match t.strategy {
                        PairStrategy::LongestFirst => tokenizers::TruncationStrategy::LongestFirst,
                        PairStrategy::OnlyFirst => tokenizers::TruncationStrategy::OnlyFirst,
                        PairStrategy::OnlySecond => tokenizers::TruncationStrategy::OnlySecond,
                    },
                    stride: t.stride,
                    direction: self.truncation_side.direction(),
                };
                tokenizers::utils::truncation::truncate_encodings(a, Some(b), &params)
                    .map_err(|e| TokenizerError::backend("encode", e))?
            }
        };
        self.inner
            .post_process(a, b, true)
            .map_err(|e| TokenizerError::backend("encode", e))
    }

    /// Checks every id against the vocabulary.
    pub(crate) fn check_ids(&self, ids: &[u32]) -> Result<()> {
        match ids.iter().find(|&&id| self.inner.id_to_token(id).is_none()) {
            Some(&id) => Err(TokenizerError::IdOutOfVocab {
                id,
                vocab_size: self.vocab_size,
            }),
            None => Ok(()),
        }
    }

    /// Turns ids back into text, as transformers' `decode`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.check_ids(ids)?;
        let text = self
            .inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| TokenizerError::backend("decode", e))?;
        Ok(if self.clean_up_tokenization_spaces {
            clean_up_tokenization(&text)
        } else {
            text
        })
    }

    /// Decodes each row of a batch.
    pub fn decode_batch(
        &self,
        rows: &[Vec<u32>],
        skip_special_tokens: bool,
    ) -> Result<Vec<String>> {
        rows.iter()
            .map(|r| self.decode(r, skip_special_tokens))
            .collect()
    }

    /// An incremental decoder for streaming generated ids as text.
    pub fn decode_stream(&self, skip_special_tokens: bool) -> DecodeStream<'_> {
        DecodeStream::new(self, skip_special_tokens)
    }

    /// The template `apply_chat_template` would use: the override given in `opts` (a
    /// template text, or the name of one of the model's templates), else `tool_use` when
    /// tools are given and the model has it, else the default.
    pub fn chat_template(&self, opts: &ChatTemplateOptions) -> Result<(String, String)> {
        if let Some(t) = &opts.chat_template {
            return Ok(match self.chat_templates.named.get(t) {
                Some(named) => (t.clone(), named.clone()),
                None => (
                    opts.chat_template_name
                        .clone()
                        .unwrap_or_else(|| "custom".into()),
                    t.clone(),
                ),
            });
        }
        if opts.tools.is_some() {
            if let Some(t) = self.chat_templates.named.get("tool_use") {
                return Ok(("tool_use".into(), t.clone()));
            }
        }
        if let Some(t) = &self.chat_templates.default {
            return Ok(("default".into(), t.clone()));
        }
        if let Some(t) = self.chat_templates.named.get("default") {
            return Ok(("default".into(), t.clone()));
        }
        Err(TokenizerError::NoChatTemplate {
            model: self.name.clone(),
        })
    }

    /// Renders a conversation to the prompt text (transformers' `tokenize=False`). Templates
    /// see the named special tokens (`bos_token`, ...), as in transformers 5.
    pub fn render_chat(&self, messages: &[Value], opts: &ChatTemplateOptions) -> Result<String> {
        let (name, source) = self.chat_template(opts)?;
        let mut tokens = Map::new();
        for (k, v) in self.special_tokens.named() {
            tokens.insert(k.into(), Value::String(v.into()));
        }
        chat_template::render(&name, &source, messages, opts, &tokens)
    }

    /// Renders the conversation and tokenizes it, as transformers' `apply_chat_template`.
    /// The template writes the special tokens itself, so none are added.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        opts: &ChatTemplateOptions,
    ) -> Result<Vec<u32>> {
        let values = messages
            .iter()
            .map(|m| serde_json::to_value(m).map_err(|e| TokenizerError::Messages(e.to_string())))
            .collect::<Result<Vec<_>>>()?;
        let text = self.render_chat(&values, opts)?;
        Ok(self.encode(&text, false)?.ids)
    }
}

/// transformers' `clean_up_tokenization`: removes the spaces the old word-level
/// tokenizers put before punctuation and contractions.
pub fn clean_up_tokenization(text: &str) -> String {
    text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_up_matches_transformers() {
        assert_eq!(
            clean_up_tokenization("hello , world . is n't it ? i 'm ok !"),
            "hello, world. isn't it? i'm ok!"
        );
    }
}
