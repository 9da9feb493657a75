//! The side files of a tokenizer.json checkpoint (tokenizer_config.json, special_tokens_map.json,
//! generation_config.json, chat_template.jinja, ...) read as transformers 5.24 reads them.
//!
//! Each folder of tests/fixtures/tokenizers/configured/ is a small synthetic checkpoint with a
//! `reference.json` of what transformers' `AutoTokenizer.from_pretrained(folder)` gives for it
//! (made by scripts/make_tokenizer_config_refs.py). No model download is needed.
//!
//! Every difference of a folder is collected and reported at once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::PathBuf;

use ferro_tokenizers::{
    AutoTokenizer, ChatTemplateOptions, EncodeOptions, Padding, Side, Tokenizer,
};
use serde_json::Value;

fn folder(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tokenizers/configured")
        .join(name)
}

fn load(name: &str) -> (Tokenizer, Value) {
    let path = folder(name);
    let text = std::fs::read_to_string(path.join("reference.json")).expect("reference.json");
    let reference: Value = serde_json::from_str(&text).expect("JSON");
    let tok = AutoTokenizer::from_pretrained(path.to_str().expect("utf-8 path"))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    (tok, reference)
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("list of ids")
        .iter()
        .map(|x| u32::try_from(x.as_u64().expect("id")).expect("u32 id"))
        .collect()
}

fn rows(v: &Value) -> Vec<Vec<u32>> {
    v.as_array().expect("rows").iter().map(ids).collect()
}

fn opt_u32(v: &Value) -> Option<u32> {
    v.as_u64().map(|x| u32::try_from(x).expect("u32"))
}

fn side(s: Side) -> &'static str {
    match s {
        Side::Left => "left",
        Side::Right => "right",
    }
}

/// Differences between the tokenizer and transformers' reference, one line each.
#[derive(Default)]
struct Diffs(Vec<String>);

impl Diffs {
    fn eq<T: PartialEq + std::fmt::Debug>(
        &mut self,
        what: impl std::fmt::Display,
        got: T,
        want: T,
    ) {
        if got != want {
            self.0
                .push(format!("{what}: got {got:?}, transformers {want:?}"));
        }
    }
}

/// Compares everything `reference.json` records except `all_special_ids` (see
/// `all_special_ids_are_the_named_and_extra_tokens`).
fn compare(name: &str) -> Vec<String> {
    let (tok, r) = load(name);
    let mut d = Diffs::default();

    d.eq(
        "len(tok)",
        tok.vocab_size(),
        r["len"].as_u64().unwrap() as usize,
    );
    d.eq(
        "model_max_length",
        tok.model_max_length,
        r["model_max_length"].as_u64().map(|n| n as usize),
    );
    d.eq(
        "padding_side",
        side(tok.padding_side),
        r["padding_side"].as_str().unwrap(),
    );
    d.eq(
        "truncation_side",
        side(tok.truncation_side),
        r["truncation_side"].as_str().unwrap(),
    );

    // Named special tokens, as text and as ids.
    let st = &tok.special_tokens;
    let named = [
        ("bos", &st.bos, tok.bos_token_id()),
        ("eos", &st.eos, tok.eos_token_id()),
        ("unk", &st.unk, tok.unk_token_id()),
        ("pad", &st.pad, tok.pad_token_id()),
        (
            "cls",
            &st.cls,
            st.cls.as_deref().and_then(|t| tok.token_to_id(t)),
        ),
        (
            "sep",
            &st.sep,
            st.sep.as_deref().and_then(|t| tok.token_to_id(t)),
        ),
        (
            "mask",
            &st.mask,
            st.mask.as_deref().and_then(|t| tok.token_to_id(t)),
        ),
    ];
    for (key, token, id) in named {
        let want = &r["special_tokens"][key];
        d.eq(
            format_args!("{key}_token"),
            token.as_deref(),
            want["token"].as_str(),
        );
        d.eq(format_args!("{key}_token_id"), id, opt_u32(&want["id"]));
    }
    let extra: Vec<&str> = r["extra_special_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    d.eq(
        "extra_special_tokens",
        st.additional.iter().map(String::as_str).collect::<Vec<_>>(),
        extra,
    );

    // The added vocabulary: ids, contents and special flags.
    let mut added: Vec<(u32, String, bool)> = tok
        .backend()
        .get_added_tokens_decoder()
        .into_iter()
        .map(|(id, t)| (id, t.content, t.special))
        .collect();
    added.sort();
    let want_added: Vec<(u32, String, bool)> = r["added_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                opt_u32(&t["id"]).unwrap(),
                t["content"].as_str().unwrap().to_string(),
                t["special"].as_bool().unwrap(),
            )
        })
        .collect();
    d.eq("added_tokens_decoder", added, want_added);

    for case in r["encodings"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let with = tok
            .encode(text, true)
            .map(|e| e.ids)
            .map_err(|e| e.to_string());
        let without = tok
            .encode(text, false)
            .map(|e| e.ids)
            .map_err(|e| e.to_string());
        d.eq(format_args!("ids of {text:?}"), with, Ok(ids(&case["ids"])));
        d.eq(
            format_args!("ids of {text:?} without special tokens"),
            without,
            Ok(ids(&case["ids_no_special"])),
        );
        let reference_ids = ids(&case["ids"]);
        d.eq(
            format_args!("decode({reference_ids:?})"),
            tok.decode(&reference_ids, false).map_err(|e| e.to_string()),
            Ok(case["decoded"].as_str().unwrap().to_string()),
        );
        d.eq(
            format_args!("decode({reference_ids:?}, skip_special_tokens)"),
            tok.decode(&reference_ids, true).map_err(|e| e.to_string()),
            Ok(case["decoded_skip_special"].as_str().unwrap().to_string()),
        );
    }

    // padding=True, truncation=True, max_length=5.
    let batch = &r["batch"];
    let texts: Vec<&str> = batch["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let opts = EncodeOptions {
        padding: Padding::Longest,
        truncation: Some(batch["max_length"].as_u64().unwrap() as usize),
        ..Default::default()
    };
    match (tok.encode_batch(&texts, &opts), batch.get("error")) {
        (Ok(got), None) => {
            d.eq("batch input_ids", got.input_ids, rows(&batch["input_ids"]));
            d.eq(
                "batch attention_mask",
                got.attention_mask,
                rows(&batch["attention_mask"]),
            );
        }
        (Err(e), Some(want)) => {
            // Both refuse to pad without a pad token.
            let (e, want) = (e.to_string(), want.as_str().unwrap());
            if !(e.contains("pad token") && want.contains("padding token")) {
                d.0.push(format!("batch: error {e:?}, transformers {want:?}"));
            }
        }
        (Ok(got), Some(want)) => d.0.push(format!(
            "batch: got {:?}, transformers raised {want}",
            got.input_ids
        )),
        (Err(e), None) => d.0.push(format!(
            "batch: error {e}, transformers gave {}",
            batch["input_ids"]
        )),
    }

    for case in r["chats"].as_array().unwrap() {
        let chat = case["name"].as_str().unwrap();
        let opts = ChatTemplateOptions {
            add_generation_prompt: case["add_generation_prompt"].as_bool().unwrap_or(false),
            tools: case.get("tools").and_then(Value::as_array).cloned(),
            chat_template: case
                .get("chat_template")
                .and_then(Value::as_str)
                .map(String::from),
            ..Default::default()
        };
        let messages = case["messages"].as_array().unwrap();
        let got = tok.render_chat(messages, &opts).map_err(|e| e.to_string());
        match case.get("rendered").and_then(Value::as_str) {
            Some(want) => d.eq(format_args!("chat {chat}"), got, Ok(want.to_string())),
            None => d.0.push(format!(
                "chat {chat}: transformers raised {}, got {got:?}",
                case["error"]
            )),
        }
    }

    if let Some(generation) = r.get("generation") {
        d.eq(
            "eos_token_ids (GenerationConfig.eos_token_id)",
            tok.eos_token_ids.clone(),
            ids(&generation["eos_token_ids"]),
        );
    }
    d.0
}

fn assert_matches(name: &str) {
    assert_matches_except(name, &[]);
}

/// As `assert_matches`, leaving out the differences that start with one of `skip` (those have
/// a test of their own).
fn assert_matches_except(name: &str, skip: &[&str]) {
    let diffs: Vec<String> = compare(name)
        .into_iter()
        .filter(|d| !skip.iter().any(|s| d.starts_with(s)))
        .collect();
    assert!(
        diffs.is_empty(),
        "{name}: {} difference(s) from transformers:\n  {}",
        diffs.len(),
        diffs.join("\n  ")
    );
}

#[test]
fn every_fixture_is_checked() {
    let dir = folder("");
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut known = FOLDERS.to_vec();
    known.sort_unstable();
    assert_eq!(
        found, known,
        "a folder without a test, or a test without a folder"
    );
}

const FOLDERS: &[&str] = &[
    "added_decoder",
    "added_decoder_flags",
    "bos_eos",
    "bos_eos_json_wins",
    "generation",
    "json_padding",
    "named_templates",
    "special_map",
    "special_map_ignored",
    "special_map_override",
    "template_dir",
    "template_file",
    "template_file_over_named",
    "template_json",
];

// ---- folders where ferroformers matches transformers --------------------------------------------

#[test]
fn named_templates() {
    assert_matches("named_templates");
}

#[test]
fn template_file() {
    assert_matches("template_file");
}

#[test]
fn special_map() {
    assert_matches_except("special_map", &[ADDITIONAL_IN_TEMPLATES]);
}

#[test]
fn added_decoder() {
    assert_matches("added_decoder");
}

#[test]
fn generation() {
    assert_matches("generation");
}

// ---- folders where ferroformers still differs ---------------------------------------------------

#[test]

fn bos_eos() {
    assert_matches("bos_eos");
}

#[test]

fn bos_eos_json_wins() {
    assert_matches("bos_eos_json_wins");
}

#[test]

fn template_file_over_named() {
    assert_matches("template_file_over_named");
}

#[test]

fn template_dir() {
    assert_matches("template_dir");
}

#[test]

fn template_json() {
    assert_matches("template_json");
}

#[test]

fn special_map_override() {
    assert_matches("special_map_override");
}

#[test]

fn special_map_ignored() {
    assert_matches("special_map_ignored");
}

#[test]

fn added_decoder_flags() {
    assert_matches("added_decoder_flags");
}

#[test]

fn json_padding() {
    assert_matches("json_padding");
}

const ADDITIONAL_IN_TEMPLATES: &str = "chat additional_special_tokens:";

/// transformers 5 gives templates the named special tokens only (`special_tokens_map`), so
/// `additional_special_tokens` is undefined there.
#[test]

fn templates_see_only_the_named_special_tokens() {
    let diffs: Vec<String> = compare("special_map")
        .into_iter()
        .filter(|d| d.starts_with(ADDITIONAL_IN_TEMPLATES))
        .collect();
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

/// transformers' `all_special_ids` lists the named and extra special tokens only, not every added
/// token marked special (the reference stores them sorted).
#[test]
fn all_special_ids_are_the_named_and_extra_tokens() {
    let mut diffs = Vec::new();
    for name in FOLDERS {
        let (tok, r) = load(name);
        let want = ids(&r["all_special_ids"]);
        let mut got = tok.all_special_ids();
        got.sort_unstable();
        if got != want {
            diffs.push(format!("{name}: got {got:?}, transformers {want:?}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "all_special_ids:\n  {}",
        diffs.join("\n  ")
    );
}
