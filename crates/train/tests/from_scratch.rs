//! Pretraining from scratch: run_clm.py's `group_texts` (documents joined with EOS, cut
//! into whole blocks), and a `ferro train` run from a config.json alone on the committed
//! public-domain corpus (tests/fixtures/training/scratch, made by
//! scripts/make_scratch_corpus.py) whose loss falls far below its start and whose saved
//! folder loads back as the model it trained.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::{Path, PathBuf};

use ferro_models::{AutoModelForCausalLM, LoadOptions};
use ferro_tokenizers::AutoTokenizer;
use ferro_train::data::{group_texts, tokenize_grouped};
use ferro_train::{Dataset, TrainConfig};
use serde_json::json;

fn scratch() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/training/scratch")
}

#[test]
fn group_texts_joins_with_eos_and_drops_the_remainder() {
    let docs = vec![vec![1, 2, 3], vec![4, 5], vec![6]];
    // Joined: 1 2 3 0 4 5 0 6 0 (EOS 0 after each document).
    assert_eq!(
        group_texts(&docs, 0, 3),
        vec![vec![1, 2, 3], vec![0, 4, 5], vec![0, 6, 0]]
    );
    assert_eq!(
        group_texts(&docs, 0, 4),
        vec![vec![1, 2, 3, 0], vec![4, 5, 0, 6]]
    );
    assert!(group_texts(&docs, 0, 10).is_empty());
}

#[test]
fn grouped_blocks_are_the_tokenized_documents() {
    let tok =
        AutoTokenizer::from_pretrained(scratch().join("tokenizer").to_str().unwrap()).unwrap();
    let eos = tok.eos_token_id().unwrap();
    assert_eq!(tok.id_to_token(eos).as_deref(), Some("<|endoftext|>"));
    let texts = ["Mr. Phileas Fogg lived in 1872.", "Passepartout smiled."];
    let mut ds = Dataset::default();
    for t in texts {
        let mut row = serde_json::Map::new();
        row.insert("text".into(), json!(t));
        ds.rows.push(row);
    }
    let mut joined = Vec::new();
    for t in texts {
        joined.extend(tok.encode(t, false).unwrap().ids);
        joined.push(eos);
    }
    let examples = tokenize_grouped(&ds, &tok, "text", 4).unwrap();
    assert_eq!(examples.len(), joined.len() / 4);
    for (i, e) in examples.iter().enumerate() {
        assert_eq!(e.input_ids, joined[i * 4..(i + 1) * 4]);
        let labels: Vec<i64> = e.input_ids.iter().map(|&t| i64::from(t)).collect();
        assert_eq!(e.labels, labels, "every token is scored");
    }
    let e = tokenize_grouped(&ds, &tok, "text", 1000)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("block_size") && e.contains("no block of 1000"),
        "{e}"
    );
}

/// A tiny Llama over the corpus tokenizer's 2,048 tokens.
fn write_model_config(dir: &Path) -> PathBuf {
    let config = json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": 2048,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 64,
        "bos_token_id": 0,
        "eos_token_id": 0
    });
    let path = dir.join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

fn train_toml(config: &Path, out: &Path, extra_model: &str) -> String {
    let s = scratch();
    format!(
        r#"
[model]
from_config = "{}"
tokenizer = "{}"
task = "causal-lm"
{extra_model}

[data]
train_file = "{}"
eval_file = "{}"
block_size = 32
max_train_samples = 6

[training]
output_dir = "{}"
max_steps = 60
per_device_train_batch_size = 4
learning_rate = 1e-2
warmup_steps = 5
logging_steps = 5
save_strategy = "no"
disable_tqdm = true
seed = 3
"#,
        config.display(),
        s.join("tokenizer").display(),
        s.join("train.jsonl").display(),
        s.join("eval.jsonl").display(),
        out.display()
    )
}

#[test]
fn training_from_a_config_learns_and_saves_a_loadable_model() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_model_config(dir.path());
    let out = dir.path().join("out");
    let cfg = TrainConfig::from_toml(&train_toml(&config, &out, ""), Path::new("t.toml")).unwrap();
    let report = ferro_train::recipe::run(&cfg).unwrap();
    let losses: Vec<f64> = report
        .output
        .log_history
        .iter()
        .filter_map(|e| e.get("loss").and_then(|l| l.as_f64()))
        .collect();
    eprintln!("logged losses: {losses:?}");
    assert!(losses.len() >= 10, "{losses:?}");
    let (first, last) = (losses[0], *losses.last().unwrap());
    // Near-uniform at first (ln 2048 = 7.62), then the few training paragraphs are learnt.
    assert!(
        (first - 2048f64.ln()).abs() < 0.5,
        "first logged loss {first}"
    );
    assert!(last < 0.6 * first, "loss fell from {first} to {last} only");

    // The saved folder (weights, config, tokenizer) gives the same eval loss as the
    // model that trained.
    let eval = report.eval.unwrap();
    let want = eval["eval_loss"];
    assert!(
        (eval["eval_perplexity"] - want.exp()).abs() < 1e-6 * want.exp(),
        "{eval:?}"
    );
    let saved = AutoModelForCausalLM::from_pretrained(
        out.to_str().unwrap(),
        &LoadOptions {
            trainable: true,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    let tok = AutoTokenizer::from_pretrained(out.to_str().unwrap()).unwrap();
    let data = Dataset::from_file(&scratch().join("eval.jsonl")).unwrap();
    let examples = tokenize_grouped(&data, &tok, "text", 32).unwrap();
    let got = ferro_train::trainer::evaluate(&saved, &examples, 8, 0, None).unwrap();
    assert!(
        (got["eval_loss"] - want).abs() < 1e-5,
        "reloaded {} vs trained {want}",
        got["eval_loss"]
    );
}

/// The error of a config that must be refused.
fn refused(toml: &str) -> String {
    TrainConfig::from_toml(toml, Path::new("t.toml"))
        .unwrap_err()
        .to_string()
}

/// The error of a run that must fail.
fn failed_run(toml: &str) -> String {
    let cfg = TrainConfig::from_toml(toml, Path::new("t.toml")).unwrap();
    ferro_train::recipe::run(&cfg).unwrap_err().to_string()
}

#[test]
fn from_config_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_model_config(dir.path());
    let out = dir.path().join("out");
    let base = train_toml(&config, &out, "");
    let e = refused(&base.replace("task = \"causal-lm\"", "task = \"text-classification\""));
    assert!(
        e.contains("model.from_config") && e.contains("causal-lm"),
        "{e}"
    );
    let e = refused(&train_toml(&config, &out, "name_or_path = \"some/model\""));
    assert!(
        e.contains("model.from_config") && e.contains("some/model"),
        "{e}"
    );
    let e = refused(&base.replace(&format!("from_config = \"{}\"", config.display()), ""));
    assert!(
        e.contains("model.name_or_path") && e.contains("from_config"),
        "{e}"
    );
    let e = refused(&format!("{base}\n[lora]\nr = 4\n"));
    assert!(e.contains("lora"), "{e}");

    // Checked once the model exists: blocks longer than its positions, a vocabulary
    // smaller than the tokenizer's.
    let e = failed_run(&base.replace("block_size = 32", "block_size = 65"));
    assert!(
        e.contains("data.block_size") && e.contains("64 positions"),
        "{e}"
    );
    let small = std::fs::read_to_string(&config)
        .unwrap()
        .replace("\"vocab_size\":2048", "\"vocab_size\":1000");
    std::fs::write(&config, small).unwrap();
    let e = failed_run(&base);
    assert!(e.contains("vocab_size 1000") && e.contains("2048"), "{e}");
}
