//! Dropout while training, as the configs ask for it: the encoders drop after the
//! embeddings, on the attention probabilities, after each sub-layer and before the heads
//! (each with its config field, DistilBERT's names included); the causal LMs on the
//! attention probabilities (`attention_dropout`). Evaluation mode is untouched; masks repeat
//! for the same (seed, step); `config_overrides` set the fields as transformers'
//! `from_pretrained(..., hidden_dropout_prob=0.0)` does, and are saved with the model.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use ferro_core::{HubOptions, ModelSource};
use ferro_models::{AutoModelForCausalLM, BertForSequenceClassification, LoadOptions};
use serde_json::{json, Map, Value};

fn fixture(path: &str) -> ModelSource {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(path);
    ModelSource::resolve(dir.to_str().unwrap(), &HubOptions::from_env()).unwrap()
}

fn overrides(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn classifier(name: &str, config_overrides: Map<String, Value>) -> BertForSequenceClassification {
    let opts = LoadOptions {
        trainable: true,
        config_overrides,
        ..LoadOptions::default()
    };
    BertForSequenceClassification::from_source(&fixture(&format!("encoders/tiny/{name}")), &opts)
        .unwrap()
}

fn batch() -> (Tensor, Tensor, Tensor) {
    let ids = Tensor::new(
        &[[2u32, 15, 27, 33, 41, 3], [2, 19, 8, 3, 0, 0]],
        &Device::Cpu,
    )
    .unwrap();
    let types = ids.zeros_like().unwrap();
    let mask = Tensor::new(&[[1u32, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], &Device::Cpu).unwrap();
    (ids, types, mask)
}

fn logits(m: &BertForSequenceClassification) -> Vec<f32> {
    let (ids, types, mask) = batch();
    m.forward(&ids, &types, &mask)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn encoders_drop_in_training_mode_only_and_repeat_per_step() {
    for name in ["bert-seq-cls", "roberta-seq-cls", "distilbert-seq-cls"] {
        let m = classifier(name, Map::new());
        let params = m.bert.parameters.clone();
        let eval = logits(&m);
        params.set_training(true);
        params.set_dropout_step(42, 0);
        let a = logits(&m);
        let b = logits(&m);
        params.set_dropout_step(42, 0);
        let again = logits(&m);
        params.set_dropout_step(42, 1);
        let next = logits(&m);
        assert!(max_diff(&a, &eval) > 1e-4, "{name}: training mode drops");
        assert!(
            max_diff(&a, &b) > 1e-4,
            "{name}: each forward draws new masks"
        );
        assert_eq!(
            a, again,
            "{name}: the same (seed, step) draws the same masks"
        );
        assert!(
            max_diff(&a, &next) > 1e-4,
            "{name}: another step, other masks"
        );
        params.set_training(false);
        assert_eq!(logits(&m), eval, "{name}: evaluation mode is deterministic");
    }
}

#[test]
fn every_dropout_follows_its_config_field() {
    // All of a family's dropout fields at 0: training computes what evaluation does
    // (nothing drops at a hard-coded rate).
    let cases = [
        (
            "bert-seq-cls",
            json!({"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
                   "classifier_dropout": 0.0}),
        ),
        (
            "roberta-seq-cls",
            json!({"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}),
        ),
        (
            "distilbert-seq-cls",
            json!({"dropout": 0.0, "attention_dropout": 0.0, "seq_classif_dropout": 0.0}),
        ),
    ];
    for (name, off) in cases {
        let m = classifier(name, overrides(off.clone()));
        let eval = logits(&m);
        m.bert.parameters.set_training(true);
        m.bert.parameters.set_dropout_step(7, 3);
        assert_eq!(logits(&m), eval, "{name}: {off}");
        // Each field alone switches its dropout back on.
        for key in off.as_object().unwrap().keys() {
            let mut one = overrides(off.clone());
            one.insert(key.clone(), json!(0.5));
            let m = classifier(name, one);
            m.bert.parameters.set_training(true);
            m.bert.parameters.set_dropout_step(7, 3);
            assert!(
                max_diff(&logits(&m), &eval) > 1e-5,
                "{name}: `{key}` drops nothing"
            );
        }
    }
}

#[test]
fn overrides_are_saved_and_bad_ones_named() {
    let m = classifier(
        "bert-seq-cls",
        overrides(json!({"hidden_dropout_prob": 0.0, "classifier_dropout": 0.25})),
    );
    let dir = tempfile::tempdir().unwrap();
    m.save_pretrained(dir.path()).unwrap();
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(saved["hidden_dropout_prob"], json!(0.0));
    assert_eq!(saved["classifier_dropout"], json!(0.25));
    assert_eq!(saved["attention_probs_dropout_prob"], json!(0.1));

    let opts = LoadOptions {
        trainable: true,
        config_overrides: overrides(json!({"attention_probs_dropout_prob": 1.5})),
        ..LoadOptions::default()
    };
    let err =
        BertForSequenceClassification::from_source(&fixture("encoders/tiny/bert-seq-cls"), &opts)
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("attention_probs_dropout_prob") && err.contains("1.5"),
        "{err}"
    );
}

#[test]
fn causal_lms_drop_attention_probabilities_when_asked() {
    let load = |config_overrides: Map<String, Value>| {
        let opts = LoadOptions {
            trainable: true,
            config_overrides,
            ..LoadOptions::default()
        };
        AutoModelForCausalLM::from_source(&fixture("causal_lm/tiny/llama"), &opts).unwrap()
    };
    let ids = Tensor::new(&[[1u32, 20, 31, 45, 7, 99]], &Device::Cpu).unwrap();
    let run = |m: &ferro_models::CausalLm| -> Vec<f32> {
        m.forward(&ids, &mut m.new_cache(), false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    // The fixture's attention_dropout is 0, as in released checkpoints: training changes
    // nothing.
    let m = load(Map::new());
    let eval = run(&m);
    m.parameters.set_training(true);
    assert_eq!(run(&m), eval);
    let m = load(overrides(json!({"attention_dropout": 0.3})));
    assert_eq!(run(&m), eval, "evaluation mode");
    m.parameters.set_training(true);
    m.parameters.set_dropout_step(1, 0);
    let a = run(&m);
    assert!(max_diff(&a, &eval) > 1e-4);
    m.parameters.set_dropout_step(1, 0);
    assert_eq!(run(&m), a);
}
