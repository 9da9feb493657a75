//! Parquet datasets against pyarrow: every fixture of tests/fixtures/training/parquet
//! (scripts/make_parquet_fixtures.py) reads as the rows pyarrow's `to_pylist()` gave, over
//! several row groups and the snappy, gzip and zstd codecs; token classification and chat
//! SFT tokenize a Parquet file as they tokenize the same rows in JSONL; a training config
//! trains from Parquet; and foreign, cut or corrupt files, unsupported columns and codecs
//! are errors that name the file and the cause, never panics.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::{Path, PathBuf};

use ferro_core::PackagedModel;
use ferro_tokenizers::AutoTokenizer;
use ferro_train::data::{tokenize_causal_lm, tokenize_token_classification, Dataset};
use ferro_train::TrainConfig;
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn parquet(name: &str) -> PathBuf {
    fixtures().join("training/parquet").join(name)
}

fn tiny_encoder(name: &str) -> String {
    fixtures()
        .join("encoders/tiny")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

/// `got` equals pyarrow's `want`, columns in the same order; floats may differ by one unit
/// in the last place, which is serde_json's parsing of the reference (without its
/// `float_roundtrip` feature it reads 3.4028234663852886e+38 one unit low), not the reader.
fn same(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::Number(g), Value::Number(w)) if g.is_f64() && w.is_f64() => {
            let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
            g == w || g.to_bits().abs_diff(w.to_bits()) == 1
        }
        (Value::Array(g), Value::Array(w)) => {
            g.len() == w.len() && g.iter().zip(w).all(|(g, w)| same(g, w))
        }
        (Value::Object(g), Value::Object(w)) => {
            g.keys().eq(w.keys()) && g.values().zip(w.values()).all(|(g, w)| same(g, w))
        }
        _ => got == want,
    }
}

#[test]
fn every_fixture_reads_as_pyarrow_reads_it() {
    for (name, rows) in [
        ("sentiment-snappy", 40),
        ("sentiment-zstd", 40),
        ("sentiment-gzip", 40),
        ("ner", 9),
        ("chat", 8),
        ("types", 4),
    ] {
        let got = Dataset::from_file(&parquet(&format!("{name}.parquet"))).unwrap();
        let want = Dataset::from_file(&parquet(&format!("{name}.jsonl"))).unwrap();
        assert_eq!(got.len(), rows, "{name}");
        assert_eq!(want.len(), rows, "{name}");
        for (i, (g, w)) in got.rows.iter().zip(&want.rows).enumerate() {
            let (g, w) = (Value::Object(g.clone()), Value::Object(w.clone()));
            assert!(same(&g, &w), "{name} row {}:\n{g}\n{w}", i + 1);
        }
        assert!(got.origin.ends_with(&format!("{name}.parquet")));
    }
}

#[test]
fn splits_and_columns_work_as_for_any_file() {
    let ds = Dataset::from_file(&parquet("sentiment-snappy.parquet")).unwrap();
    let (train, test) = ds.train_test_split(0.25, 7).unwrap();
    assert_eq!((train.len(), test.len()), (30, 10));
    let jsonl = Dataset::from_file(&parquet("sentiment-snappy.jsonl")).unwrap();
    let (_, test_jsonl) = jsonl.train_test_split(0.25, 7).unwrap();
    assert_eq!(
        test.rows, test_jsonl.rows,
        "the same seed splits both alike"
    );
    let err = ds.require_column("review").unwrap_err().to_string();
    assert!(
        err.contains("`review`") && err.contains("sentiment-snappy.parquet"),
        "{err}"
    );
}

#[test]
fn token_classification_from_parquet_equals_jsonl() {
    let tok = AutoTokenizer::from_pretrained(&tiny_encoder("bert-token-cls")).unwrap();
    let labels: Vec<String> = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let examples = |file: &str| {
        let ds = Dataset::from_file(&parquet(file)).unwrap();
        tokenize_token_classification(&ds, &tok, "tokens", "ner_tags", &labels, 64).unwrap()
    };
    let (from_parquet, from_jsonl) = (examples("ner.parquet"), examples("ner.jsonl"));
    assert_eq!(from_parquet, from_jsonl);
    // "John Smith lives in New York ." : each word's first sub-token carries its tag.
    let first = &from_parquet[0];
    let scored: Vec<i64> = first
        .labels
        .iter()
        .copied()
        .filter(|&l| l != -100)
        .collect();
    assert_eq!(scored, [1, 2, 0, 0, 3, 4, 0]);
}

#[test]
fn chat_sft_from_parquet_equals_jsonl() {
    let path = PackagedModel::Qwen25Coder05BInstruct
        .require()
        .unwrap_or_else(|e| panic!("{e}"));
    let tok = AutoTokenizer::from_pretrained(path.to_str().unwrap()).unwrap();
    let examples = |file: &Path| {
        let ds = Dataset::from_file(file).unwrap();
        tokenize_causal_lm(&ds, &tok, "messages", 512).unwrap()
    };
    // The JSONL the Parquet file was made from (not pyarrow's reading of it).
    let from_jsonl = examples(&fixtures().join("training/chat/test.jsonl"));
    let from_parquet = examples(&parquet("chat.parquet"));
    assert_eq!(from_parquet.len(), 8);
    assert_eq!(from_parquet, from_jsonl);
    assert!(from_parquet
        .iter()
        .all(|e| e.labels.iter().any(|&l| l != -100)));
}

/// A config for a tiny model trained 2 steps on `train_file`.
fn tiny_config(dir: &Path, model: &str, task: &str, data: &str) -> TrainConfig {
    let text = format!(
        "[model]\nname_or_path = {:?}\ntask = {task:?}\n[data]\n{data}\n[training]\n\
         output_dir = {:?}\nmax_steps = 2\nper_device_train_batch_size = 4\n\
         learning_rate = 1e-3\ndisable_tqdm = true\n",
        tiny_encoder(model),
        dir.join("out").to_str().unwrap(),
    );
    TrainConfig::from_toml(&text, Path::new("test config")).unwrap()
}

#[test]
fn a_training_config_trains_from_parquet() {
    let dir = tempfile::tempdir().unwrap();
    // Sequence classification, the eval set split off the Parquet train file.
    let data = format!(
        "train_file = {:?}\ntest_size = 0.25",
        parquet("sentiment-zstd.parquet").to_str().unwrap()
    );
    let cfg = tiny_config(dir.path(), "bert-seq-cls", "text-classification", &data);
    let report = ferro_train::recipe::run(&cfg).unwrap();
    assert_eq!(report.output.global_step, 2);
    let eval = report.eval.unwrap();
    assert!(eval["eval_accuracy"] >= 0.0 && eval["eval_loss"].is_finite());
    assert!(report.saved_to.join("model.safetensors").is_file());
    // Token classification from list columns, evaluated on another Parquet file.
    let data = format!(
        "train_file = {:?}\neval_file = {:?}",
        parquet("ner.parquet").to_str().unwrap(),
        parquet("ner.parquet").to_str().unwrap()
    );
    let cfg = tiny_config(dir.path(), "bert-token-cls", "token-classification", &data);
    let report = ferro_train::recipe::run(&cfg).unwrap();
    assert_eq!(report.output.global_step, 2);
    assert!(report.eval.unwrap().contains_key("eval_f1"));
}

fn read_err(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    let err = Dataset::from_file(&p).unwrap_err().to_string();
    assert!(err.contains(name), "the error names the file: {err}");
    err
}

#[test]
fn foreign_cut_and_corrupt_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(parquet("sentiment-snappy.parquet")).unwrap();
    let n = good.len();
    let err = read_err(dir.path(), "empty.parquet", b"");
    assert!(err.contains("not a readable Parquet file"), "{err}");
    let err = read_err(
        dir.path(),
        "text.parquet",
        b"{\"text\": \"a JSONL line\"}\n",
    );
    assert!(err.contains("not a readable Parquet file"), "{err}");
    let err = read_err(dir.path(), "cut.parquet", &good[..n / 2]);
    assert!(err.contains("not a readable Parquet file"), "{err}");
    // A footer claiming more metadata than the file holds.
    let mut huge = good.clone();
    huge[n - 8..n - 4].copy_from_slice(&u32::MAX.to_le_bytes());
    read_err(dir.path(), "huge-footer.parquet", &huge);
    // Metadata overwritten with junk behind an intact length and magic.
    let mut junk = good.clone();
    let meta = u32::from_le_bytes(good[n - 8..n - 4].try_into().unwrap()) as usize;
    for (i, b) in junk[n - 8 - meta..n - 8].iter_mut().enumerate() {
        *b = (i * 151 % 251) as u8;
    }
    read_err(dir.path(), "junk-metadata.parquet", &junk);
}

#[test]
fn any_flipped_byte_reads_back_or_fails_without_a_panic() {
    // Bytes of the pages and metadata inverted one at a time (every byte of the nested chat
    // file, every fifth of a flat one): the reader returns rows or an error naming the file;
    // a panic or an abort fails the test (the parquet crate itself panics on a few of these).
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("flipped.parquet");
    for (name, step) in [("chat.parquet", 1), ("sentiment-snappy.parquet", 5)] {
        let good = std::fs::read(parquet(name)).unwrap();
        let mut errors = 0;
        for i in (0..good.len()).step_by(step) {
            let mut bytes = good.clone();
            bytes[i] = !bytes[i];
            std::fs::write(&p, &bytes).unwrap();
            if let Err(e) = Dataset::from_file(&p) {
                assert!(e.to_string().contains("flipped.parquet"), "{e}");
                errors += 1;
            }
        }
        assert!(
            errors > good.len() / step / 4,
            "{name}: only {errors} errors"
        );
    }
}

#[test]
fn unsupported_columns_and_codecs_are_named() {
    let err = Dataset::from_file(&parquet("unsupported.parquet"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unsupported.parquet")
            && err.contains("`image.bytes`")
            && err.contains("binary"),
        "{err}"
    );
    let err = Dataset::from_file(&parquet("timestamp.parquet"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("timestamp.parquet")
            && err.contains("column `created` is INT64 (a timestamp)"),
        "{err}"
    );
    let err = Dataset::from_file(&parquet("sentiment-brotli.parquet"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sentiment-brotli.parquet")
            && err.contains("column `text` is compressed with brotli"),
        "{err}"
    );
    let err = Dataset::from_file(&parquet("empty.parquet"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("empty.parquet") && err.contains("no examples"),
        "{err}"
    );
}
