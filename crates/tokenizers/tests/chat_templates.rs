//! Rendered prompts byte-identical to transformers 5.24's `apply_chat_template(...,
//! tokenize=False)` (reference data: scripts/make_chat_template_refs.py).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::PathBuf;

use ferro_core::PackagedModel;
use ferro_tokenizers::{AutoTokenizer, ChatTemplateOptions, Tokenizer};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/chat_templates")
}

fn tokenizer(model: PackagedModel) -> Tokenizer {
    let path = model.require().unwrap_or_else(|e| panic!("{e}"));
    AutoTokenizer::from_pretrained(path.to_str().expect("utf-8 path"))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Renders every case of `reference` and compares; `template` overrides the model's.
fn check(tok: &Tokenizer, reference: &str, template: Option<&str>) -> usize {
    let text = std::fs::read_to_string(fixtures().join(reference)).expect("reference");
    let reference: Value = serde_json::from_str(&text).expect("JSON");
    let template = template.map(|t| std::fs::read_to_string(fixtures().join(t)).expect("template"));
    let cases = reference["cases"].as_array().expect("cases");
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let list = |k: &str| case.get(k).and_then(Value::as_array).cloned();
        let opts = ChatTemplateOptions {
            add_generation_prompt: case["add_generation_prompt"].as_bool().unwrap_or(false),
            continue_final_message: case["continue_final_message"].as_bool().unwrap_or(false),
            tools: list("tools"),
            documents: list("documents"),
            chat_template: template.clone(),
            ..Default::default()
        };
        let messages = list("messages").expect("messages");
        let got = tok.render_chat(&messages, &opts);
        match (
            case.get("rendered").and_then(Value::as_str),
            case.get("error").and_then(Value::as_str),
        ) {
            (Some(want), _) => {
                let got = got.unwrap_or_else(|e| panic!("case {name}: {e}"));
                assert_eq!(got, want, "case {name}");
            }
            (None, Some(want_error)) => {
                let e = got.expect_err(name).to_string();
                assert!(
                    e.contains(want_error),
                    "case {name}: error {e:?} should contain {want_error:?}"
                );
                assert!(
                    e.contains("line "),
                    "case {name}: error {e:?} should name the line"
                );
            }
            _ => panic!("case {name} has neither `rendered` nor `error`"),
        }
    }
    cases.len()
}

#[test]
fn qwen25_template_from_gguf_matches_transformers() {
    let tok = tokenizer(PackagedModel::Qwen25Coder05BInstruct);
    let n = check(&tok, "qwen2.5.json", None);
    assert!(n >= 12, "only {n} conversations");
    // The GGUF's template is the one committed beside the references.
    let committed = std::fs::read_to_string(fixtures().join("qwen2.5.jinja")).expect("template");
    assert_eq!(
        tok.chat_templates.default.as_deref(),
        Some(committed.as_str())
    );
}

#[test]
fn gemma3_template_file_matches_transformers() {
    let tok = tokenizer(PackagedModel::Gemma3_270M);
    // The Gemma 3 270M GGUF carries no template: a clear error unless one is supplied.
    let messages = vec![serde_json::json!({"role": "user", "content": "hi"})];
    let e = tok
        .render_chat(&messages, &ChatTemplateOptions::generation_prompt())
        .expect_err("no template");
    assert!(e.to_string().contains("has no chat template"), "{e}");
    check(&tok, "gemma3.json", Some("gemma3.jinja"));
}

#[test]
fn jinja_features_match_transformers() {
    let tok = tokenizer(PackagedModel::Qwen25Coder05BInstruct);
    check(&tok, "features.json", Some("features.jinja"));
}
