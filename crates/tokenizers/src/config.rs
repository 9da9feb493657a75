//! The side files of a Hugging Face tokenizer: tokenizer_config.json,
//! special_tokens_map.json and generation_config.json, with transformers' defaults.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::{Result, TokenizerError};

/// A token given either as a plain string or as an AddedToken object.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "a token: a string or an object with a string `content`"
)]
pub enum TokenSpec {
    Plain(String),
    Added { content: String },
}

impl TokenSpec {
    pub fn content(&self) -> &str {
        match self {
            TokenSpec::Plain(s) | TokenSpec::Added { content: s } => s,
        }
    }
}

/// An entry of `added_tokens_decoder`, with AddedToken's flags.
#[derive(Debug, Clone, Deserialize)]
pub struct AddedTokenEntry {
    pub content: String,
    #[serde(default)]
    pub special: bool,
    #[serde(default)]
    pub lstrip: bool,
    #[serde(default)]
    pub rstrip: bool,
    #[serde(default)]
    pub single_word: bool,
    /// Defaults to `!special`, as AddedToken does.
    pub normalized: Option<bool>,
}

impl AddedTokenEntry {
    pub fn to_added_token(&self) -> tokenizers::AddedToken {
        tokenizers::AddedToken::from(self.content.clone(), self.special)
            .lstrip(self.lstrip)
            .rstrip(self.rstrip)
            .single_word(self.single_word)
            .normalized(self.normalized.unwrap_or(!self.special))
    }
}

/// A chat template: one string, or a list of named templates.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "a chat template string or a list of {name, template} objects"
)]
pub enum ChatTemplateField {
    Single(String),
    Named(Vec<NamedTemplate>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct NamedTemplate {
    pub name: String,
    pub template: String,
}

/// tokenizer_config.json (and special_tokens_map.json, which shares the token fields).
/// Unknown fields are ignored, as transformers ignores them.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenizerConfig {
    pub bos_token: Option<TokenSpec>,
    pub eos_token: Option<TokenSpec>,
    pub unk_token: Option<TokenSpec>,
    pub pad_token: Option<TokenSpec>,
    pub sep_token: Option<TokenSpec>,
    pub cls_token: Option<TokenSpec>,
    pub mask_token: Option<TokenSpec>,
    /// `additional_special_tokens`, or v5's `extra_special_tokens` (a list, or a map of
    /// model-specific named tokens).
    #[serde(
        default,
        alias = "extra_special_tokens",
        deserialize_with = "list_or_map"
    )]
    pub additional_special_tokens: Vec<TokenSpec>,
    pub add_bos_token: Option<bool>,
    pub add_eos_token: Option<bool>,
    pub chat_template: Option<ChatTemplateField>,
    /// Floats such as 1e30 appear here ("no limit"), so read it as a number.
    pub model_max_length: Option<f64>,
    pub padding_side: Option<String>,
    pub truncation_side: Option<String>,
    pub clean_up_tokenization_spaces: Option<bool>,
    pub tokenizer_class: Option<String>,
    /// Present (even empty) means special_tokens_map.json is not read, as in transformers 5.
    pub added_tokens_decoder: Option<BTreeMap<String, AddedTokenEntry>>,
}

impl TokenizerConfig {
    pub fn read(path: &Path) -> Result<Self> {
        read_json(path)
    }

    /// Applies a legacy special_tokens_map.json: its values override this config's.
    pub fn apply_special_tokens_map(&mut self, map: TokenizerConfig) {
        let over = |a: &mut Option<TokenSpec>, b: Option<TokenSpec>| {
            if b.is_some() {
                *a = b;
            }
        };
        over(&mut self.bos_token, map.bos_token);
        over(&mut self.eos_token, map.eos_token);
        over(&mut self.unk_token, map.unk_token);
        over(&mut self.pad_token, map.pad_token);
        over(&mut self.sep_token, map.sep_token);
        over(&mut self.cls_token, map.cls_token);
        over(&mut self.mask_token, map.mask_token);
        if !map.additional_special_tokens.is_empty() {
            self.additional_special_tokens = map.additional_special_tokens;
        }
    }
}

/// The fields of generation_config.json that concern tokens.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GenerationTokens {
    pub bos_token_id: Option<u32>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub eos_token_id: Vec<u32>,
    pub pad_token_id: Option<u32>,
}

impl GenerationTokens {
    pub fn read(path: &Path) -> Result<Self> {
        read_json(path)
    }
}

fn list_or_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<TokenSpec>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "a list of tokens or a map of named tokens")]
    enum ListOrMap {
        List(Vec<TokenSpec>),
        Map(BTreeMap<String, TokenSpec>),
        Null(()),
    }
    Ok(match ListOrMap::deserialize(d)? {
        ListOrMap::List(v) => v,
        ListOrMap::Map(m) => m.into_values().collect(),
        ListOrMap::Null(()) => Vec::new(),
    })
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "a token id or a list of token ids")]
    enum OneOrMany {
        One(u32),
        Many(Vec<u32>),
        Null(()),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(x) => vec![x],
        OneOrMany::Many(v) => v,
        OneOrMany::Null(()) => Vec::new(),
    })
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| TokenizerError::file(path, format!("cannot read: {e}")))?;
    serde_json::from_str(&text)
        .map_err(|e| TokenizerError::file(path, format!("invalid JSON: {e}")))
}
