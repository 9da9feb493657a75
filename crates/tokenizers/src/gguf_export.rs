//! The tokenizer section of a GGUF file, as llama.cpp's converter writes it, from a
//! loaded tokenizer.json tokenizer: the keys `gguf.rs` reads back.

use ferro_core::GgufValue;
use serde_json::Value;

use crate::error::{Result, TokenizerError};
use crate::gguf::split_regex;
use crate::tokenizer::Tokenizer;

/// llama.cpp's token types.
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

/// `tokenizer.ggml.pre` names whose split regex we know, tried in this order.
const PRE_NAMES: &[&str] = &["qwen2", "llama-bpe", "tekken", "gpt-4o"];

fn unsupported(tok: &Tokenizer, msg: impl Into<String>) -> TokenizerError {
    TokenizerError::InvalidArgument {
        param: "tokenizer",
        msg: format!("{}: {}", tok.name(), msg.into()),
    }
}

/// The `tokenizer.*` metadata of a byte-level BPE tokenizer (Qwen, Llama 3, GPT-2:
/// `tokenizer.ggml.model = "gpt2"`), its vocabulary padded to `vocab_size` entries (the
/// embedding rows) with `[PAD{id}]` tokens as llama.cpp's converter pads it.
pub fn gguf_tokenizer_metadata(
    tok: &Tokenizer,
    vocab_size: usize,
) -> Result<Vec<(String, GgufValue)>> {
    let json: Value = serde_json::from_str(
        &tok.backend()
            .to_string(false)
            .map_err(|e| TokenizerError::backend("serializing the tokenizer", e))?,
    )
    .map_err(|e| TokenizerError::backend("reading the serialized tokenizer", e))?;
    let model = &json["model"];
    let byte_level = json["pre_tokenizer"].to_string().contains("\"ByteLevel\"");
    if model["type"] != "BPE" || !byte_level {
        return Err(unsupported(
            tok,
            format!(
                "only byte-level BPE tokenizers are written to GGUF yet (this one is {} with pre-tokenizer {})",
                model["type"], json["pre_tokenizer"]["type"]
            ),
        ));
    }

    let mut tokens: Vec<Option<(String, i32)>> = Vec::new();
    let mut put = |id: u64, text: &str, ty: i32| {
        let id = id as usize;
        if tokens.len() <= id {
            tokens.resize(id + 1, None);
        }
        tokens[id] = Some((text.to_string(), ty));
    };
    for (text, id) in model["vocab"].as_object().into_iter().flatten() {
        if let Some(id) = id.as_u64() {
            put(id, text, NORMAL);
        }
    }
    for added in json["added_tokens"].as_array().into_iter().flatten() {
        if let (Some(id), Some(text)) = (added["id"].as_u64(), added["content"].as_str()) {
            let ty = if added["special"].as_bool() == Some(true) {
                CONTROL
            } else {
                USER_DEFINED
            };
            put(id, text, ty);
        }
    }
    let n = tokens.len().max(vocab_size);
    let (mut texts, mut types) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for id in 0..n {
        let pad = format!("[PAD{id}]");
        let (text, ty) = match tokens.get(id).cloned().flatten() {
            // llama.cpp's own padding, read back from a GGUF: still padding.
            Some((text, _)) if text == pad => (text, UNUSED),
            Some(t) => t,
            None => (pad, UNUSED),
        };
        texts.push(GgufValue::String(text));
        types.push(GgufValue::I32(ty));
    }
    // Merges are "a b" strings (tokenizers' older form) or [a, b] pairs.
    let merges: Vec<GgufValue> = model["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| match m {
            Value::String(s) => Some(s.clone()),
            Value::Array(p) => Some(format!("{} {}", p.first()?.as_str()?, p.get(1)?.as_str()?)),
            _ => None,
        })
        .map(GgufValue::String)
        .collect();

    let regex = json["pre_tokenizer"].to_string();
    let pre = PRE_NAMES
        .iter()
        .find(|name| split_regex(name).is_some_and(|r| regex.contains(&Value::from(r).to_string())))
        .copied()
        .unwrap_or("default");

    let s = |v: &str| GgufValue::String(v.to_string());
    let mut meta = vec![
        ("tokenizer.ggml.model".to_string(), s("gpt2")),
        ("tokenizer.ggml.pre".to_string(), s(pre)),
        ("tokenizer.ggml.tokens".to_string(), GgufValue::Array(texts)),
        (
            "tokenizer.ggml.token_type".to_string(),
            GgufValue::Array(types),
        ),
        (
            "tokenizer.ggml.merges".to_string(),
            GgufValue::Array(merges),
        ),
    ];
    for (key, id) in [
        ("bos_token_id", tok.bos_token_id()),
        ("eos_token_id", tok.eos_token_id()),
        ("unknown_token_id", tok.unk_token_id()),
        ("padding_token_id", tok.pad_token_id()),
    ] {
        if let Some(id) = id {
            meta.push((format!("tokenizer.ggml.{key}"), GgufValue::U32(id)));
        }
    }
    // What the post-processor adds around a text, read off an empty encoding.
    let ids = tok.encode("", true)?.ids;
    let adds = |id: Option<u32>, at: Option<&u32>| id.is_some() && id == at.copied();
    meta.push((
        "tokenizer.ggml.add_bos_token".into(),
        GgufValue::Bool(adds(tok.bos_token_id(), ids.first())),
    ));
    meta.push((
        "tokenizer.ggml.add_eos_token".into(),
        GgufValue::Bool(adds(tok.eos_token_id(), ids.last())),
    ));
    if let Some(t) = &tok.chat_templates.default {
        meta.push(("tokenizer.chat_template".into(), s(t)));
    }
    for (name, t) in &tok.chat_templates.named {
        meta.push((format!("tokenizer.chat_template.{name}"), s(t)));
    }
    Ok(meta)
}
