//! The side files of a Hugging Face tokenizer: tokenizer_config.json,
//! special_tokens_map.json and generation_config.json, with transformers' defaults.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Result, TokenizerError};

/// A token given either as a plain string or as an AddedToken object.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
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

/// An entry of `added_tokens_decoder`.
#[derive(Debug, Clone, Deserialize)]
pub struct AddedTokenEntry {
    pub content: String,
    #[serde(default)]
    pub special: bool,
}

/// A chat template: one string, or a list of named templates.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
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
    #[serde(default)]
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
    #[serde(default)]
    pub added_tokens_decoder: BTreeMap<String, AddedTokenEntry>,
}

impl TokenizerConfig {
    pub fn read(path: &Path) -> Result<Self> {
        read_json(path)
    }

    /// Fills the token fields this config lacks from `other` (special_tokens_map.json
    /// overrides nothing that tokenizer_config.json sets, as in transformers).
    pub fn merge_special_tokens(&mut self, other: TokenizerConfig) {
        let fill = |a: &mut Option<TokenSpec>, b: Option<TokenSpec>| {
            if a.is_none() {
                *a = b;
            }
        };
        fill(&mut self.bos_token, other.bos_token);
        fill(&mut self.eos_token, other.eos_token);
        fill(&mut self.unk_token, other.unk_token);
        fill(&mut self.pad_token, other.pad_token);
        fill(&mut self.sep_token, other.sep_token);
        fill(&mut self.cls_token, other.cls_token);
        fill(&mut self.mask_token, other.mask_token);
        if self.additional_special_tokens.is_empty() {
            self.additional_special_tokens = other.additional_special_tokens;
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

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
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

/// Reads a JSON file into a generic value (for fields read by hand).
pub(crate) fn read_json_value(path: &Path) -> Result<Value> {
    read_json(path)
}
