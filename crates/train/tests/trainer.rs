//! The Trainer against transformers' Trainer: on the reference batch (the three examples
//! of tests/fixtures/training/bert-seq-cls/reference.json), five steps with AdamW, linear
//! warmup 2, weight decay 0.01 and clipping at 1 log the losses, gradient norms and
//! learning rates transformers' Trainer logged; checkpoints, resuming and bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::PathBuf;

use ferro_core::{HubOptions, ModelSource};
use ferro_models::{BertForSequenceClassification, LoadOptions};
use ferro_train::{Example, Trainer, TrainingArguments};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn reference() -> Value {
    let p = fixtures().join("training/bert-seq-cls/reference.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn model() -> BertForSequenceClassification {
    let dir = fixtures().join("encoders/tiny/bert-seq-cls");
    let source = ModelSource::resolve(dir.to_str().unwrap(), &HubOptions::from_env()).unwrap();
    // transformers' Trainer ran with dropout off (the reference's config overrides).
    let overrides = reference()["model"]["config_overrides"]
        .as_object()
        .unwrap()
        .clone();
    let opts = LoadOptions {
        trainable: true,
        config_overrides: overrides,
        ..LoadOptions::default()
    };
    BertForSequenceClassification::from_source(&source, &opts).unwrap()
}

/// The reference batch as unpadded examples.
fn examples(r: &Value) -> Vec<Example> {
    let b = &r["batch"];
    let rows = |k: &str| -> Vec<Vec<u32>> { serde_json::from_value(b[k].clone()).unwrap() };
    let (ids, types, mask) = (
        rows("input_ids"),
        rows("token_type_ids"),
        rows("attention_mask"),
    );
    let labels: Vec<i64> = serde_json::from_value(b["labels"].clone()).unwrap();
    (0..ids.len())
        .map(|i| {
            let n = mask[i].iter().filter(|&&m| m == 1).count();
            Example {
                input_ids: ids[i][..n].to_vec(),
                token_type_ids: types[i][..n].to_vec(),
                labels: vec![labels[i]],
            }
        })
        .collect()
}

fn args(dir: &std::path::Path) -> TrainingArguments {
    TrainingArguments {
        output_dir: dir.to_path_buf(),
        max_steps: 5,
        per_device_train_batch_size: 3,
        learning_rate: 1e-3,
        weight_decay: 0.01,
        warmup_steps: 2.0,
        max_grad_norm: 1.0,
        logging_steps: 1.0,
        save_steps: 2.0,
        disable_tqdm: true,
        ..TrainingArguments::default()
    }
}

#[test]
fn five_steps_log_what_transformers_trainer_logged() {
    let r = reference();
    let out_dir = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::new(model(), args(out_dir.path()), examples(&r), None, 0).unwrap();
    let out = trainer.train().unwrap();
    assert_eq!(out.global_step, 5);
    let want = r["adamw"]["full"]["trainer_check"]["log_history"]
        .as_array()
        .unwrap();
    assert_eq!(out.log_history.len(), want.len());
    for (got, want) in out.log_history.iter().zip(want) {
        for key in ["loss", "grad_norm", "learning_rate"] {
            let (g, w) = (got[key].as_f64().unwrap(), want[key].as_f64().unwrap());
            assert!(
                (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                "{key}: {g} vs {w}"
            );
        }
    }
    // A loss curve and TensorBoard scalars are written beside the logs.
    let png = std::fs::read(out_dir.path().join("loss.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let runs: Vec<_> = std::fs::read_dir(out_dir.path().join("runs"))
        .unwrap()
        .collect();
    assert!(runs.iter().any(|e| e
        .as_ref()
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("tfevents")));
    // log.jsonl holds the same entries; checkpoints 2 and 4 are whole folders.
    let log = std::fs::read_to_string(out_dir.path().join("log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 5);
    for step in [2, 4] {
        let dir = out_dir.path().join(format!("checkpoint-{step}"));
        for f in [
            "model.safetensors",
            "config.json",
            "optimizer.safetensors",
            "trainer_state.json",
        ] {
            assert!(dir.join(f).is_file(), "{}/{f}", dir.display());
        }
    }

    // Resuming from checkpoint-2 replays steps 3-5 exactly.
    let mut resumed_args = args(out_dir.path());
    resumed_args.resume_from_checkpoint =
        Some(out_dir.path().join("checkpoint-2").display().to_string());
    let mut again = Trainer::new(model(), resumed_args, examples(&r), None, 0).unwrap();
    let out2 = again.train().unwrap();
    assert_eq!(out2.log_history.len(), 5);
    for (a, b) in out.log_history.iter().zip(&out2.log_history) {
        let (x, y) = (a["loss"].as_f64().unwrap(), b["loss"].as_f64().unwrap());
        assert!((x - y).abs() < 1e-7, "{x} vs {y}");
    }
}

#[test]
fn bad_arguments_and_foreign_checkpoints_are_refused() {
    let r = reference();
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(dir.path());
    a.optim = "lamb".into();
    let err = Trainer::new(model(), a, examples(&r), None, 0)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("`optim`") && err.contains("lamb"), "{err}");
    let mut a = args(dir.path());
    a.load_best_model_at_end = true;
    let err = Trainer::new(model(), a, examples(&r), None, 0)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("load_best_model_at_end"), "{err}");
    let err = Trainer::new(model(), args(dir.path()), Vec::new(), None, 0)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("train_dataset"), "{err}");
    // A checkpoint of another model (the token classifier) is refused before training.
    let other = tempfile::tempdir().unwrap();
    let src = ModelSource::resolve(
        fixtures()
            .join("encoders/tiny/bert-token-cls")
            .to_str()
            .unwrap(),
        &HubOptions::from_env(),
    )
    .unwrap();
    let opts = LoadOptions {
        trainable: true,
        ..LoadOptions::default()
    };
    let tok = ferro_models::BertForTokenClassification::from_source(&src, &opts).unwrap();
    let fake = other.path().join("checkpoint-1");
    std::fs::create_dir_all(&fake).unwrap();
    let shapes: serde_json::Map<String, Value> = tok
        .bert
        .parameters
        .named()
        .into_iter()
        .map(|(n, v)| (n, serde_json::json!(v.as_tensor().dims())))
        .collect();
    std::fs::write(
        fake.join("trainer_state.json"),
        serde_json::json!({"global_step": 1, "epoch": 1.0, "log_history": [], "best_metric": null,
            "best_model_checkpoint": null, "patience": 0, "pending_loss": 0.0, "pending_steps": 0,
            "parameter_shapes": shapes})
        .to_string(),
    )
    .unwrap();
    let mut a = args(other.path());
    a.resume_from_checkpoint = Some("latest".into());
    let mut t = Trainer::new(model(), a, examples(&r), None, 0).unwrap();
    let err = t.train().unwrap_err().to_string();
    assert!(err.contains("another model"), "{err}");
}
