//! Token ids, decoded text, offsets and batch padding/truncation identical to Python
//! transformers 5.24 on the committed corpus (reference data made by
//! scripts/make_tokenizer_refs.py). Needs the packaged models: scripts/fetch_models.sh.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::PathBuf;

use ferro_core::PackagedModel;
use ferro_tokenizers::{AutoTokenizer, EncodeOptions, Padding, Side, Tokenizer};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tokenizers")
}

fn load_reference(name: &str) -> Value {
    let path = fixtures().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("reference JSON")
}

fn tokenizer(model: PackagedModel) -> Tokenizer {
    let path = model.require().unwrap_or_else(|e| panic!("{e}"));
    AutoTokenizer::from_pretrained(path.to_str().expect("utf-8 path"))
        .unwrap_or_else(|e| panic!("loading {model:?}: {e}"))
}

fn ids(v: &Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).expect("id list")
}

fn snippet(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    format!("{out:?}")
}

/// Compares every corpus case; reports all mismatches at once.
fn check_corpus(model: PackagedModel, reference: &str) {
    let tok = tokenizer(model);
    let reference = load_reference(reference);
    let header = &reference["header"];
    let cases = reference["cases"].as_array().expect("cases");
    assert!(cases.len() >= 300, "corpus has {} strings", cases.len());
    let lossless = header["lossless"].as_bool().unwrap_or(false);
    let mut failures = Vec::new();
    for case in cases {
        let i = case["i"].as_u64().unwrap_or_default();
        let text = case["text"].as_str().expect("text");
        let enc = tok.encode(text, true).expect("encode");
        let plain = tok.encode(text, false).expect("encode");
        if enc.ids != ids(&case["ids"]) {
            failures.push(format!(
                "#{i} {} ids: got {:?}, want {:?}",
                snippet(text),
                &enc.ids[..enc.ids.len().min(20)],
                &ids(&case["ids"])[..ids(&case["ids"]).len().min(20)]
            ));
            continue;
        }
        if plain.ids != ids(&case["ids_no_special"]) {
            failures.push(format!(
                "#{i} {} ids without special tokens differ",
                snippet(text)
            ));
        }
        let decoded = tok.decode(&enc.ids, false).expect("decode");
        if decoded != case["decoded"].as_str().expect("decoded") {
            failures.push(format!(
                "#{i} {} decode: got {:?}, want {:?}",
                snippet(text),
                snippet(&decoded),
                snippet(case["decoded"].as_str().unwrap_or_default())
            ));
        }
        let skipped = tok.decode(&enc.ids, true).expect("decode");
        if skipped
            != case["decoded_skip_special"]
                .as_str()
                .expect("decoded_skip_special")
        {
            failures.push(format!(
                "#{i} {} decode(skip_special_tokens): got {:?}",
                snippet(text),
                snippet(&skipped)
            ));
        }
        if let Some(offsets) = case.get("offsets").filter(|o| !o.is_null()) {
            let want: Vec<(usize, usize)> =
                serde_json::from_value(offsets.clone()).expect("offsets");
            if enc.offsets != want {
                failures.push(format!(
                    "#{i} {} offsets: got {:?}, want {:?}",
                    snippet(text),
                    enc.offsets,
                    want
                ));
            }
        }
        if lossless && tok.decode(&plain.ids, false).expect("decode") != text {
            failures.push(format!("#{i} {} does not round-trip", snippet(text)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from transformers:\n{}",
        failures.len(),
        cases.len(),
        failures
            .iter()
            .take(15)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Header facts.
    assert_eq!(
        tok.vocab_size() as u64,
        header["vocab_size"].as_u64().expect("vocab_size")
    );
    for (name, id) in [
        ("bos", tok.bos_token_id()),
        ("eos", tok.eos_token_id()),
        ("pad", tok.pad_token_id()),
        ("unk", tok.unk_token_id()),
    ] {
        let want = header[format!("{name}_token_id")]
            .as_u64()
            .map(|v| v as u32);
        assert_eq!(id, want, "{name}_token_id");
    }
    let want_side = if header["padding_side"] == "left" {
        Side::Left
    } else {
        Side::Right
    };
    assert_eq!(tok.padding_side, want_side);
    check_batch(&tok, &reference["batch"]);
}

fn check_batch(tok: &Tokenizer, batch: &Value) {
    let texts: Vec<String> = serde_json::from_value(batch["texts"].clone()).expect("texts");
    for (key, case) in batch
        .as_object()
        .expect("batch")
        .iter()
        .filter(|(k, _)| *k != "texts")
    {
        let kwargs = &case["kwargs"];
        let mut opts = EncodeOptions::default();
        if let Some(n) = kwargs.get("max_length").and_then(Value::as_u64) {
            if kwargs.get("truncation") == Some(&Value::Bool(true)) {
                opts.truncation = Some(n as usize);
            }
        }
        opts.padding = match kwargs.get("padding") {
            Some(Value::Bool(true)) => Padding::Longest,
            Some(Value::String(s)) if s == "max_length" => {
                Padding::MaxLength(kwargs["max_length"].as_u64().expect("max_length") as usize)
            }
            _ => Padding::None,
        };
        opts.padding_side = match kwargs.get("padding_side").and_then(Value::as_str) {
            Some("left") => Some(Side::Left),
            Some("right") => Some(Side::Right),
            _ => None,
        };
        let out = tok.encode_batch(&texts, &opts).expect("encode_batch");
        let want_ids: Vec<Vec<u32>> =
            serde_json::from_value(case["input_ids"].clone()).expect("input_ids");
        let want_mask: Vec<Vec<u32>> =
            serde_json::from_value(case["attention_mask"].clone()).expect("mask");
        assert_eq!(out.input_ids, want_ids, "batch case {key}");
        assert_eq!(
            out.attention_mask, want_mask,
            "batch case {key} attention mask"
        );
    }
}

#[test]
fn qwen25_coder_gguf_matches_transformers() {
    check_corpus(
        PackagedModel::Qwen25Coder05BInstruct,
        "qwen2.5-coder-0.5b-instruct",
    );
}

#[test]
fn gemma3_gguf_matches_transformers() {
    check_corpus(PackagedModel::Gemma3_270M, "gemma-3-270m");
}

#[test]
fn minilm_tokenizer_json_matches_transformers() {
    check_corpus(PackagedModel::AllMiniLmL6V2, "all-MiniLM-L6-v2");
}
