//! A tokenizer built from GGUF metadata alone, as transformers builds it
//! (`integrations/gguf/gguf_tokenizer_mapping.py` in transformers 5.24): the same
//! model class per `tokenizer.ggml.model` and architecture, the same respelled
//! vocabularies, merges recovered from the vocabulary when the file has none, control
//! tokens added as special and user-defined ones as plain added tokens, and the split
//! regex named by `tokenizer.ggml.pre`.

use std::collections::HashMap;
use std::path::Path;

use ferro_core::GgufFile;
use serde_json::json;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper,
};

use crate::error::{Result, TokenizerError};
use crate::tokenizer::{ChatTemplates, Side, SpecialTokens};

/// What the GGUF says besides the pipeline: the fields transformers puts in tokenizer_config.
#[derive(Debug, Clone, Default)]
pub struct GgufTokenizerConfig {
    pub special_tokens: SpecialTokens,
    pub add_bos_token: bool,
    pub add_eos_token: bool,
    pub chat_templates: ChatTemplates,
    pub padding_side: Side,
}

/// The transformers tokenizer class a GGUF vocabulary is handed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// `GPT2Tokenizer`: byte-level BPE (`tokenizer.ggml.model = gpt2`).
    ByteLevel,
    /// `LlamaTokenizer`: SentencePiece BPE with Metaspace and byte fallback.
    Llama,
    /// `LlamaTokenizer` with a normalizer prefix space instead of Metaspace.
    Phi3,
    /// `GemmaTokenizer`: SentencePiece BPE, spaces replaced by ▁, no prefix space.
    Gemma,
}

const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The split regex for a `tokenizer.ggml.pre` value, as transformers maps them.
pub(crate) fn split_regex(pre: &str) -> Option<&'static str> {
    Some(match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" | "dbrx" | "smaug-bpe" => LLAMA3_SPLIT,
        "tekken" => TEKKEN_SPLIT,
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" => QWEN2_SPLIT,
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => GPT4O_SPLIT,
        _ => return None,
    })
}

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

struct Meta<'a> {
    path: &'a Path,
    tokens: Vec<&'a str>,
    token_types: Vec<i64>,
    scores: Option<Vec<f64>>,
    merges: Option<Vec<&'a str>>,
}

fn gguf_err(path: &Path, msg: impl Into<String>) -> TokenizerError {
    TokenizerError::Gguf {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Builds the tokenizer a GGUF file describes.
pub fn tokenizer_from_gguf(path: &Path) -> Result<(tokenizers::Tokenizer, GgufTokenizerConfig)> {
    let start = std::time::Instant::now();
    let gguf = GgufFile::open(path)?;
    tracing::debug!(elapsed = ?start.elapsed(), "read GGUF metadata");
    let out = from_metadata(&gguf);
    tracing::debug!(elapsed = ?start.elapsed(), "built tokenizer from GGUF");
    out
}

pub(crate) fn from_metadata(
    gguf: &GgufFile,
) -> Result<(tokenizers::Tokenizer, GgufTokenizerConfig)> {
    let path = gguf.path.as_path();
    let model = gguf.get_str("tokenizer.ggml.model")?.ok_or_else(|| {
        gguf_err(path, "no `tokenizer.ggml.model` key: this file carries no tokenizer; use the model's tokenizer.json")
    })?;
    let architecture = gguf.architecture()?.unwrap_or_default();
    let tokens = gguf
        .get_str_array("tokenizer.ggml.tokens")?
        .ok_or_else(|| gguf_err(path, "no `tokenizer.ggml.tokens` (the vocabulary)"))?;
    if tokens.is_empty() {
        return Err(gguf_err(path, "`tokenizer.ggml.tokens` is empty"));
    }
    let token_types = gguf
        .get_i64_array("tokenizer.ggml.token_type")?
        .unwrap_or_default();
    if !token_types.is_empty() && token_types.len() != tokens.len() {
        return Err(gguf_err(
            path,
            format!(
                "`tokenizer.ggml.token_type` has {} entries for {} tokens",
                token_types.len(),
                tokens.len()
            ),
        ));
    }
    let scores = gguf.get_f64_array("tokenizer.ggml.scores")?;
    let merges = gguf.get_str_array("tokenizer.ggml.merges")?;
    let meta = Meta {
        path,
        tokens,
        token_types,
        scores,
        merges,
    };

    let family = match (model, architecture) {
        ("llama", "gemma" | "gemma2" | "gemma3") | ("gemma4", _) => Family::Gemma,
        ("llama", "phi3") => Family::Phi3,
        ("llama", _) => Family::Llama,
        ("gpt2", _) => Family::ByteLevel,
        (other, _) => {
            return Err(gguf_err(
                path,
                format!(
                    "tokenizer model `{other}` is not supported (supported: gpt2, llama, gemma4)"
                ),
            ))
        }
    };

    let token_id = |key: &str| -> Result<Option<String>> {
        match gguf.get_i64(key)? {
            None => Ok(None),
            Some(id) => meta
                .tokens
                .get(usize::try_from(id).unwrap_or(usize::MAX))
                .map(|t| Some((*t).to_string()))
                .ok_or_else(|| gguf_err(path, format!("`{key}` = {id} is outside the vocabulary"))),
        }
    };
    // transformers: llama vocabularies add BOS unless the file says otherwise; gemma4 never does.
    let add_bos_default = model == "llama";
    let mut config = GgufTokenizerConfig {
        special_tokens: SpecialTokens {
            bos: token_id("tokenizer.ggml.bos_token_id")?,
            eos: token_id("tokenizer.ggml.eos_token_id")?,
            unk: token_id("tokenizer.ggml.unknown_token_id")?,
            pad: token_id("tokenizer.ggml.padding_token_id")?,
            // GemmaTokenizer's default, which no GGUF key overrides.
            mask: (family == Family::Gemma).then(|| "<mask>".to_string()),
            ..SpecialTokens::default()
        },
        add_bos_token: if model == "gemma4" {
            false
        } else {
            gguf.get_bool("tokenizer.ggml.add_bos_token")?
                .unwrap_or(add_bos_default)
        },
        add_eos_token: gguf
            .get_bool("tokenizer.ggml.add_eos_token")?
            .unwrap_or(false),
        chat_templates: ChatTemplates {
            default: gguf.get_str("tokenizer.chat_template")?.map(str::to_string),
            named: Default::default(),
        },
        // A class attribute of GemmaTokenizer.
        padding_side: if family == Family::Gemma {
            Side::Left
        } else {
            Side::Right
        },
    };
    // llama.cpp stores named templates as `tokenizer.chat_template.<name>`.
    for key in gguf.metadata.keys() {
        if let Some(name) = key.strip_prefix("tokenizer.chat_template.") {
            if let Some(t) = gguf.get_str(key)? {
                config
                    .chat_templates
                    .named
                    .insert(name.to_string(), t.to_string());
            }
        }
    }

    let mut tok = match family {
        Family::ByteLevel => byte_level(&meta)?,
        Family::Llama | Family::Phi3 => sentencepiece(&meta, family, None, &meta.tokens)?,
        Family::Gemma => {
            // Runs of spaces are stored as spaces but looked up as ▁s.
            let respelled: Vec<String> = meta
                .tokens
                .iter()
                .map(|t| {
                    if t.contains(' ') && t.trim_matches(py_space).is_empty() {
                        "\u{2581}".repeat(t.chars().count())
                    } else {
                        (*t).to_string()
                    }
                })
                .collect();
            let refs: Vec<&str> = respelled.iter().map(String::as_str).collect();
            // Gemma's merge order is the vocabulary order, not its scores.
            let positions: Vec<f64> = (0..refs.len()).map(|i| -(i as f64)).collect();
            sentencepiece(&meta, family, Some(&positions), &refs)?
        }
    };

    add_gguf_added_tokens(&mut tok, &meta, family == Family::ByteLevel)?;
    if let Some(split) = gguf.get_str("tokenizer.ggml.pre")?.and_then(split_regex) {
        let pre = component(json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": split}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
        ]}))?;
        tok.with_pre_tokenizer(Some::<PreTokenizerWrapper>(pre));
    }
    Ok((tok, config))
}

/// Python's `str.strip()` whitespace.
fn py_space(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\u{1c}'..='\u{1f}')
}

/// Deserializes one pipeline component from its tokenizer.json form.
fn component<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| TokenizerError::backend("building the GGUF tokenizer", e))
}

/// GPT-2's byte-to-character table (`bytes_to_unicode`).
pub(crate) fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[b as usize] = if printable {
            char::from(b)
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap_or('\0')
        };
    }
    table
}

fn bpe(
    meta: &Meta,
    vocab: Vocab,
    merges: Vec<(String, String)>,
    configure: impl FnOnce(tokenizers::models::bpe::BpeBuilder) -> tokenizers::models::bpe::BpeBuilder,
) -> Result<BPE> {
    configure(BPE::builder().vocab_and_merges(vocab, merges))
        .build()
        .map_err(|e| {
            gguf_err(
                meta.path,
                format!("the vocabulary and merges do not form a BPE model: {e}"),
            )
        })
}

fn byte_level(meta: &Meta) -> Result<tokenizers::Tokenizer> {
    let table = bytes_to_unicode();
    let alphabet: std::collections::HashSet<char> = table.iter().copied().collect();
    let mut vocab = Vocab::default();
    for (i, t) in meta.tokens.iter().enumerate() {
        let spelled = if t.chars().all(|c| alphabet.contains(&c)) {
            (*t).to_string()
        } else {
            t.bytes().map(|b| table[b as usize]).collect()
        };
        vocab.insert(spelled, i as u32);
    }
    let merges = file_merges(meta)?.unwrap_or_default();
    let model = bpe(meta, vocab, merges, |b| {
        b.continuing_subword_prefix(String::new())
            .end_of_word_suffix(String::new())
    })?;
    let mut tok = tokenizers::Tokenizer::new(model);
    tok.with_pre_tokenizer(Some::<PreTokenizerWrapper>(component(
        json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}),
    )?));
    tok.with_decoder(Some::<DecoderWrapper>(component(
        json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}),
    )?));
    Ok(tok)
}

/// Merges as the file lists them (`"a b"`), if it does.
fn file_merges(meta: &Meta) -> Result<Option<Vec<(String, String)>>> {
    let Some(merges) = &meta.merges else {
        return Ok(None);
    };
    merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| {
                    gguf_err(
                        meta.path,
                        format!("`tokenizer.ggml.merges[{i}]` = {m:?} is not two tokens"),
                    )
                })
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

fn sentencepiece(
    meta: &Meta,
    family: Family,
    order_scores: Option<&[f64]>,
    tokens: &[&str],
) -> Result<tokenizers::Tokenizer> {
    let mut vocab = Vocab::default();
    for (i, t) in tokens.iter().enumerate() {
        vocab.insert((*t).to_string(), i as u32);
    }
    let merges = match file_merges(meta)? {
        Some(m) => m,
        None => {
            let scores = match order_scores {
                Some(s) => s.to_vec(),
                None => meta
                    .scores
                    .clone()
                    .ok_or_else(|| gguf_err(meta.path, "no `tokenizer.ggml.merges` and no `tokenizer.ggml.scores` to derive them from"))?,
            };
            if scores.len() != tokens.len() {
                return Err(gguf_err(
                    meta.path,
                    format!("{} scores for {} tokens", scores.len(), tokens.len()),
                ));
            }
            let start = std::time::Instant::now();
            let merges = generate_merges(tokens, &vocab, &scores);
            tracing::debug!(elapsed = ?start.elapsed(), count = merges.len(), "derived merges from the vocabulary");
            merges
        }
    };
    let mut tok;
    match family {
        Family::Gemma => {
            let model = bpe(meta, vocab, merges, |b| {
                b.fuse_unk(true)
                    .byte_fallback(true)
                    .unk_token("<unk>".into())
            })?;
            tok = tokenizers::Tokenizer::new(model);
            tok.with_normalizer(Some::<NormalizerWrapper>(component(
                json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}),
            )?))
            .map_err(|e| TokenizerError::backend("building the GGUF tokenizer", e))?;
            tok.with_pre_tokenizer(Some::<PreTokenizerWrapper>(component(
                json!({"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": false}),
            )?));
            tok.with_decoder(Some::<DecoderWrapper>(component(
                json!({"type": "Sequence", "decoders": [
                    {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
                    {"type": "ByteFallback"}, {"type": "Fuse"}
                ]}),
            )?));
        }
        Family::Llama | Family::Phi3 => {
            let model = bpe(meta, vocab, merges, |b| {
                b.fuse_unk(true).byte_fallback(true)
            })?;
            tok = tokenizers::Tokenizer::new(model);
            if family == Family::Phi3 {
                tok.with_normalizer(Some::<NormalizerWrapper>(component(
                    json!({"type": "Sequence", "normalizers": [
                        {"type": "Prepend", "prepend": "\u{2581}"},
                        {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}
                    ]}),
                )?))
                .map_err(|e| TokenizerError::backend("building the GGUF tokenizer", e))?;
            } else {
                tok.with_pre_tokenizer(Some::<PreTokenizerWrapper>(component(
                    json!({"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "first", "split": false}),
                )?));
            }
            tok.with_decoder(Some::<DecoderWrapper>(component(
                json!({"type": "Sequence", "decoders": [
                    {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
                    {"type": "ByteFallback"}, {"type": "Fuse"},
                    {"type": "Strip", "content": " ", "start": 1, "stop": 0}
                ]}),
            )?));
        }
        Family::ByteLevel => {
            return Err(gguf_err(
                meta.path,
                "a byte-level vocabulary is not SentencePiece",
            ));
        }
    }
    Ok(tok)
}

/// transformers' `generate_merges`: every split of every token into two vocabulary
/// tokens, best score first (ties: longer left piece, then longer right piece, then
/// vocabulary order).
fn generate_merges(tokens: &[&str], vocab: &Vocab, scores: &[f64]) -> Vec<(String, String)> {
    // A dict from the token list keeps the first position of a repeated token but its
    // last score.
    let mut last_score: HashMap<&str, f64> = HashMap::with_capacity(tokens.len());
    for (t, s) in tokens.iter().zip(scores) {
        last_score.insert(t, *s);
    }
    let mut seen = std::collections::HashSet::with_capacity(tokens.len());
    // (left, right, score, left chars, right chars)
    let mut merges: Vec<(&str, &str, f64, usize, usize)> = Vec::new();
    let mut local: Vec<(&str, &str, u32, u32, usize)> = Vec::new();
    for t in tokens {
        if !seen.insert(*t) {
            continue;
        }
        let score = last_score[t];
        local.clear();
        for (n, (i, _)) in t.char_indices().enumerate().skip(1) {
            let (l, r) = t.split_at(i);
            if let (Some(&il), Some(&ir)) = (vocab.get(l), vocab.get(r)) {
                local.push((l, r, il, ir, n));
            }
        }
        local.sort_by_key(|&(_, _, il, ir, _)| (il, ir));
        let total = t.chars().count();
        merges.extend(
            local
                .iter()
                .map(|&(l, r, _, _, n)| (l, r, score, n, total - n)),
        );
    }
    // Python's sorted(reverse=True) is stable: equal keys keep their order.
    merges.sort_by(|a, b| {
        b.2.partial_cmp(&a.2)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(b.3.cmp(&a.3))
            .then(b.4.cmp(&a.4))
    });
    merges
        .into_iter()
        .map(|(l, r, ..)| (l.to_string(), r.to_string()))
        .collect()
}

/// Control tokens become special added tokens, user-defined ones plain added tokens
/// (llama.cpp matches both whole in text). In a byte-level vocabulary a control token
/// spelled outside the byte alphabet is a mislabel and is skipped, as transformers does.
fn add_gguf_added_tokens(
    tok: &mut tokenizers::Tokenizer,
    meta: &Meta,
    byte_level: bool,
) -> Result<()> {
    let alphabet: std::collections::HashSet<char> = bytes_to_unicode().into_iter().collect();
    let control: Vec<AddedToken> = meta
        .tokens
        .iter()
        .zip(&meta.token_types)
        .filter(|(t, ty)| {
            **ty == TOKEN_TYPE_CONTROL && (!byte_level || t.chars().all(|c| alphabet.contains(&c)))
        })
        .map(|(t, _)| AddedToken::from(*t, true).normalized(false))
        .collect();
    tok.add_special_tokens(control)
        .map_err(|e| TokenizerError::backend("adding control tokens", e))?;
    let user_defined: Vec<AddedToken> = meta
        .tokens
        .iter()
        .zip(&meta.token_types)
        .filter(|(t, ty)| **ty == TOKEN_TYPE_USER_DEFINED && tok.token_to_id(t).is_some())
        .map(|(t, _)| AddedToken::from(*t, false).normalized(false))
        .collect();
    tok.add_tokens(user_defined)
        .map_err(|e| TokenizerError::backend("adding user-defined tokens", e))?;
    Ok(())
}

/// transformers' `update_post_processor`: BOS and/or EOS around the sequence.
pub(crate) fn bos_eos_post_processor(
    bos: Option<(&str, u32)>,
    eos: Option<(&str, u32)>,
) -> Result<PostProcessorWrapper> {
    let mut single = Vec::new();
    let mut pair = Vec::new();
    let mut special = serde_json::Map::new();
    let piece = |id: &str, type_id: u32| json!({"SpecialToken": {"id": id, "type_id": type_id}});
    let seq = |id: &str, type_id: u32| json!({"Sequence": {"id": id, "type_id": type_id}});
    if let Some((t, id)) = bos {
        single.push(piece(t, 0));
        special.insert(t.into(), json!({"id": t, "ids": [id], "tokens": [t]}));
    }
    single.push(seq("A", 0));
    if let Some((t, id)) = eos {
        single.push(piece(t, 0));
        special.insert(t.into(), json!({"id": t, "ids": [id], "tokens": [t]}));
    }
    pair.extend(single.iter().cloned());
    if let Some((t, _)) = bos {
        pair.push(piece(t, 1));
    }
    pair.push(seq("B", 1));
    if let Some((t, _)) = eos {
        pair.push(piece(t, 1));
    }
    component(
        json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": special}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_to_unicode_matches_gpt2() {
        let t = bytes_to_unicode();
        assert_eq!(t[b'!' as usize], '!');
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[0], 'Ā');
        assert_eq!(t[0xAD], 'Ń');
    }

    #[test]
    fn merges_from_vocabulary_order() {
        let tokens = ["a", "b", "c", "ab", "bc", "abc"];
        let mut vocab = Vocab::default();
        for (i, t) in tokens.iter().enumerate() {
            vocab.insert((*t).to_string(), i as u32);
        }
        let scores: Vec<f64> = (0..tokens.len()).map(|i| -(i as f64)).collect();
        let m = generate_merges(&tokens, &vocab, &scores);
        let m: Vec<(&str, &str)> = m.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(m, vec![("a", "b"), ("b", "c"), ("ab", "c"), ("a", "bc")]);
    }
}
