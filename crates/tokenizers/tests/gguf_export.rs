//! The GGUF tokenizer section we write, against the one llama.cpp's converter wrote: the
//! Qwen2.5-Coder GGUF's tokenizer, rebuilt from its metadata and written back, gives the
//! file's own vocabulary, token types, merges, pre-tokenizer name, special ids, flags and
//! chat template: every `tokenizer.*` key, value for value.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use ferro_core::{GgufFile, GgufValue, PackagedModel};
use ferro_tokenizers::gguf_export::gguf_tokenizer_metadata;
use ferro_tokenizers::AutoTokenizer;

#[test]
fn qwen_tokenizer_section_round_trips() {
    let path = PackagedModel::Qwen25Coder05BInstruct.require().unwrap();
    let file = GgufFile::open(&path).unwrap();
    let tokenizer = AutoTokenizer::from_pretrained(path.to_str().unwrap()).unwrap();
    let vocab = file.array_len("tokenizer.ggml.tokens").unwrap();
    let written = gguf_tokenizer_metadata(&tokenizer, vocab).unwrap();
    let ours: Vec<&str> = written.iter().map(|(k, _)| k.as_str()).collect();
    let missing: Vec<&String> = file
        .metadata
        .keys()
        .filter(|k| k.starts_with("tokenizer.") && !ours.contains(&k.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "keys of the file we do not write: {missing:?}"
    );
    for (key, value) in &written {
        let Some(theirs) = file.get(key) else {
            // A flag the file leaves at llama.cpp's default.
            assert_eq!(value, &GgufValue::Bool(false), "the file has no `{key}`");
            continue;
        };
        match (value, theirs) {
            (GgufValue::Array(a), GgufValue::Array(b)) => {
                assert_eq!(a.len(), b.len(), "{key}");
                for (i, (x, y)) in a.iter().zip(b).enumerate() {
                    // Integers compare by value (the converter writes i32 token types).
                    let same = x == y || (x.as_i64().is_some() && x.as_i64() == y.as_i64());
                    assert!(same, "{key}[{i}]: ours {x:?}, the file's {y:?}");
                }
            }
            _ => assert!(
                value == theirs || (value.as_i64().is_some() && value.as_i64() == theirs.as_i64()),
                "{key}: ours {value:?}, the file's {theirs:?}"
            ),
        }
    }
}
