//! Incremental decoding: the streamed pieces add up to the full decode for every corpus
//! string, and no piece carries a broken character or a stray leading space.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::PathBuf;

use ferro_core::PackagedModel;
use ferro_tokenizers::{AutoTokenizer, Tokenizer};

fn corpus() -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tokenizers/corpus.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("corpus")).expect("corpus JSON")
}

fn tokenizer(model: PackagedModel) -> Tokenizer {
    let path = model.require().unwrap_or_else(|e| panic!("{e}"));
    AutoTokenizer::from_pretrained(path.to_str().expect("utf-8")).unwrap_or_else(|e| panic!("{e}"))
}

fn check_stream(model: PackagedModel) {
    let tok = tokenizer(model);
    for (i, text) in corpus().iter().enumerate() {
        for (add_special, skip_special) in [(false, false), (true, true), (true, false)] {
            let ids = tok.encode(text, add_special).expect("encode").ids;
            let full = tok.decode(&ids, skip_special).expect("decode");
            let mut stream = tok.decode_stream(skip_special);
            let mut pieces = Vec::new();
            for &id in &ids {
                if let Some(p) = stream.step(id).expect("step") {
                    pieces.push(p);
                }
            }
            let tail = stream.finish().expect("finish");
            let streamed: String = pieces
                .iter()
                .map(String::as_str)
                .chain(tail.as_deref())
                .collect();
            assert_eq!(
                streamed, full,
                "{model:?} corpus #{i}: streamed text differs from the full decode"
            );
            if !full.contains('\u{FFFD}') {
                assert!(
                    pieces.iter().all(|p| !p.contains('\u{FFFD}')),
                    "{model:?} corpus #{i}: a piece holds a broken character: {pieces:?}"
                );
                assert!(
                    tail.is_none(),
                    "{model:?} corpus #{i}: text held back until finish: {tail:?}"
                );
            }
            if let Some(first) = pieces.first() {
                assert!(
                    full.starts_with(first.as_str()),
                    "{model:?} corpus #{i}: first piece {first:?} is not how the text starts"
                );
            }
        }
    }
}

#[test]
fn qwen_stream_equals_full_decode() {
    check_stream(PackagedModel::Qwen25Coder05BInstruct);
}

#[test]
fn gemma_stream_equals_full_decode() {
    check_stream(PackagedModel::Gemma3_270M);
}

#[test]
fn minilm_stream_equals_full_decode() {
    check_stream(PackagedModel::AllMiniLmL6V2);
}

#[test]
fn multibyte_characters_wait_for_their_last_byte() {
    // "你" is split by Gemma's byte fallback only if absent from the vocabulary; use an
    // emoji sequence that byte-level BPE spreads over several tokens.
    let tok = tokenizer(PackagedModel::Qwen25Coder05BInstruct);
    let text = "🧑‍🚀 ok";
    let ids = tok.encode(text, false).expect("encode").ids;
    assert!(ids.len() > 2, "needs several tokens: {ids:?}");
    let mut stream = tok.decode_stream(false);
    let mut seen = String::new();
    for &id in &ids {
        if let Some(p) = stream.step(id).expect("step") {
            assert!(!p.contains('\u{FFFD}'), "broken piece {p:?}");
            seen.push_str(&p);
            assert!(text.starts_with(&seen), "{seen:?}");
        }
    }
    assert_eq!(seen, text);
    assert!(
        stream.step(u32::MAX).is_err(),
        "an id out of vocabulary is an error"
    );
}
