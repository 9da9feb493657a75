//! Datasets and tokenization for training: word labels for token classification (first
//! sub-token labelled, the rest and the specials -100), chat SFT scoring only the
//! assistant's turns, CSV with quoted line breaks, splits, and the errors that name the
//! row and column.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::PathBuf;

use ferro_core::PackagedModel;
use ferro_tokenizers::AutoTokenizer;
use ferro_train::data::{tokenize_causal_lm, tokenize_token_classification, Dataset};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn word_labels_go_to_each_words_first_sub_token() {
    let dir = tempfile::tempdir().unwrap();
    let tok = AutoTokenizer::from_pretrained(
        fixtures()
            .join("encoders/tiny/bert-token-cls")
            .to_str()
            .unwrap(),
    )
    .unwrap();
    // "london" is lon ##don and "google" goo ##gle in this vocabulary.
    let f = write(
        dir.path(),
        "ner.jsonl",
        r#"{"tokens": ["John", "lives", "in", "London"], "ner_tags": ["B-PER", "O", "O", "B-LOC"]}
{"tokens": ["Google"], "ner_tags": [5]}"#,
    );
    let labels: Vec<String> = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let ds = Dataset::from_file(&f).unwrap();
    let ex = tokenize_token_classification(&ds, &tok, "tokens", "ner_tags", &labels, 64).unwrap();
    let pieces: Vec<String> = ex[0]
        .input_ids
        .iter()
        .map(|&i| tok.id_to_token(i).unwrap())
        .collect();
    assert_eq!(
        pieces,
        ["[CLS]", "john", "lives", "in", "lon", "##don", "[SEP]"]
    );
    assert_eq!(ex[0].labels, [-100, 1, 0, 0, 3, -100, -100]);
    assert_eq!(ex[1].labels, [-100, 5, -100, -100]);
    // Tags that do not line up with the words, and unknown tags, name the row.
    let bad = write(
        dir.path(),
        "bad.jsonl",
        r#"{"tokens": ["a", "b"], "ner_tags": ["O"]}"#,
    );
    let err = tokenize_token_classification(
        &Dataset::from_file(&bad).unwrap(),
        &tok,
        "tokens",
        "ner_tags",
        &labels,
        64,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("row 1") && err.contains("1 tags for 2 words"),
        "{err}"
    );
    let bad = write(
        dir.path(),
        "bad2.jsonl",
        r#"{"tokens": ["a"], "ner_tags": ["B-XYZ"]}"#,
    );
    let err = tokenize_token_classification(
        &Dataset::from_file(&bad).unwrap(),
        &tok,
        "tokens",
        "ner_tags",
        &labels,
        64,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("B-XYZ"), "{err}");
}

#[test]
fn chat_sft_scores_only_the_assistants_turns() {
    let path = PackagedModel::Qwen25Coder05BInstruct
        .require()
        .unwrap_or_else(|e| panic!("{e}"));
    let tok = AutoTokenizer::from_pretrained(path.to_str().unwrap()).unwrap();
    let ds = Dataset::from_file(&fixtures().join("training/chat/test.jsonl")).unwrap();
    let ex = tokenize_causal_lm(&ds, &tok, "messages", 512).unwrap();
    assert_eq!(ex.len(), ds.len());
    for (e, row) in ex.iter().zip(&ds.rows) {
        let scored: Vec<u32> = e
            .labels
            .iter()
            .filter(|&&l| l != -100)
            .map(|&l| l as u32)
            .collect();
        // The scored tokens are the assistant's answer and the end of its turn.
        let answer = row["messages"][1]["content"].as_str().unwrap();
        let text = tok.decode(&scored, false).unwrap();
        assert_eq!(text, format!("{answer}<|im_end|>\n"), "scored: {text:?}");
        // Scored labels are the input ids themselves (the model shifts them).
        for (l, i) in e.labels.iter().zip(&e.input_ids) {
            assert!(*l == -100 || *l == i64::from(*i));
        }
    }
}

#[test]
fn csv_rows_splits_and_missing_columns() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "d.csv",
        "text,label\n\"a film, two lines\nlong\",1\nbad,0\nok,1\nfine,0\n",
    );
    let ds = Dataset::from_file(&f).unwrap();
    assert_eq!(ds.len(), 4);
    assert_eq!(ds.rows[0]["text"], "a film, two lines\nlong");
    let (train, test) = ds.train_test_split(0.25, 1).unwrap();
    assert_eq!((train.len(), test.len()), (3, 1));
    let (again, _) = ds.train_test_split(0.25, 1).unwrap();
    assert_eq!(train.rows, again.rows, "the same seed gives the same split");
    assert!(ds.train_test_split(1.0, 1).is_err() || ds.train_test_split(4.0, 1).is_err());
    let err = ds.require_column("review").unwrap_err().to_string();
    assert!(
        err.contains("`review`") && err.contains("d.csv") && err.contains("text, label"),
        "{err}"
    );
}

#[test]
fn masked_lm_masking_follows_the_collators_rules() {
    use ferro_train::data::{Example, MlmMasking};
    let tok =
        AutoTokenizer::from_pretrained(fixtures().join("encoders/tiny/bert-mlm").to_str().unwrap())
            .unwrap();
    let m = MlmMasking::for_tokenizer(&tok, 0.15).unwrap();
    // [CLS] w w ... w [SEP] with 2,000 ordinary tokens.
    let (cls, sep) = (
        tok.token_to_id("[CLS]").unwrap(),
        tok.token_to_id("[SEP]").unwrap(),
    );
    let mut ids = vec![cls];
    ids.extend((0..2000).map(|i| 10 + (i % 200) as u32));
    ids.push(sep);
    let ex = Example {
        token_type_ids: vec![0; ids.len()],
        labels: vec![-100; ids.len()],
        input_ids: ids.clone(),
    };
    let masked = m.apply(&ex, 7);
    assert_eq!(masked, m.apply(&ex, 7), "the same seed masks the same way");
    assert_ne!(masked, m.apply(&ex, 8));
    let chosen: Vec<usize> = (0..ids.len())
        .filter(|&i| masked.labels[i] != -100)
        .collect();
    assert!(
        !chosen.contains(&0) && !chosen.contains(&(ids.len() - 1)),
        "specials never chosen"
    );
    let share = chosen.len() as f64 / 2000.0;
    assert!((0.12..0.18).contains(&share), "{share}");
    let as_mask = chosen
        .iter()
        .filter(|&&i| masked.input_ids[i] == m.mask_id)
        .count() as f64;
    let kept = chosen
        .iter()
        .filter(|&&i| masked.input_ids[i] == ids[i])
        .count() as f64;
    let n = chosen.len() as f64;
    assert!((0.72..0.88).contains(&(as_mask / n)), "{}", as_mask / n);
    assert!((0.04..0.18).contains(&(kept / n)), "{}", kept / n);
    for i in chosen {
        assert_eq!(masked.labels[i], i64::from(ids[i]));
    }
    // Unchosen tokens are untouched.
    for i in (0..ids.len()).filter(|&i| masked.labels[i] == -100) {
        assert_eq!(masked.input_ids[i], ids[i]);
    }
    assert!(MlmMasking::for_tokenizer(&tok, 1.5).is_err());
}
