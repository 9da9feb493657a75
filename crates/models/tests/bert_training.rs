//! Gradient parity of the BERT heads loaded for training: on the batch PyTorch used
//! (tests/fixtures/training/<model>/reference.json, made by scripts/make_training_refs.py
//! with transformers 5.24, dropout 0), the loss and the gradient of every parameter after
//! one backward pass equal PyTorch's within 1e-4.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use ferro_core::{HubOptions, ModelSource};
use ferro_models::{BertForSequenceClassification, BertForTokenClassification, LoadOptions};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn reference(model: &str) -> Value {
    let p = root().join("training").join(model).join("reference.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn trainable(name: &str) -> (ModelSource, LoadOptions) {
    let dir = root().join("encoders/tiny").join(name);
    let source = ModelSource::resolve(dir.to_str().unwrap(), &HubOptions::from_env()).unwrap();
    let opts = LoadOptions {
        trainable: true,
        ..LoadOptions::default()
    };
    (source, opts)
}

fn ints(v: &Value) -> Vec<Vec<i64>> {
    serde_json::from_value(v.clone()).unwrap()
}

fn tensor(rows: &[Vec<i64>]) -> Tensor {
    let (b, t) = (rows.len(), rows[0].len());
    let flat: Vec<u32> = rows.concat().iter().map(|&x| x as u32).collect();
    Tensor::from_vec(flat, (b, t), &Device::Cpu).unwrap()
}

/// Every parameter's gradient equals PyTorch's (a parameter the loss does not reach has
/// none, as PyTorch's zero tensor).
fn assert_grads(
    model: &str,
    params: &ferro_nn::Parameters,
    grads: &candle_core::backprop::GradStore,
) {
    let file = root()
        .join("training")
        .join(model)
        .join("full_grads.safetensors");
    let want = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    let named = params.named();
    assert_eq!(named.len(), want.len(), "{model}: parameter count");
    for (name, var) in &named {
        let w = want
            .get(name)
            .unwrap_or_else(|| panic!("{model}: PyTorch has no `{name}`"));
        let g = match grads.get(var.as_tensor()) {
            Some(g) => g.clone(),
            None => var.as_tensor().zeros_like().unwrap(),
        };
        let diff = (g - w)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let scale = w
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .max(1.0);
        assert!(diff < 1e-4 * scale, "{model}: `{name}` differs by {diff}");
    }
}

#[test]
fn sequence_classification_gradients_equal_pytorch() {
    let r = reference("bert-seq-cls");
    let (source, opts) = trainable("bert-seq-cls");
    let m = BertForSequenceClassification::from_source(&source, &opts).unwrap();
    let b = &r["batch"];
    let logits = m
        .forward(
            &tensor(&ints(&b["input_ids"])),
            &tensor(&ints(&b["token_type_ids"])),
            &tensor(&ints(&b["attention_mask"])),
        )
        .unwrap();
    let labels: Vec<u32> = serde_json::from_value(b["labels"].clone()).unwrap();
    let labels = Tensor::new(labels.as_slice(), &Device::Cpu).unwrap();
    let loss = candle_nn::loss::cross_entropy(&logits, &labels).unwrap();
    let want = r["full"]["loss"].as_f64().unwrap() as f32;
    assert!((loss.to_scalar::<f32>().unwrap() - want).abs() < 1e-5);
    let grads = loss.backward().unwrap();
    assert_grads("bert-seq-cls", &m.bert.parameters, &grads);
}

#[test]
fn token_classification_gradients_equal_pytorch() {
    let r = reference("bert-token-cls");
    let (source, opts) = trainable("bert-token-cls");
    let m = BertForTokenClassification::from_source(&source, &opts).unwrap();
    let b = &r["batch"];
    let logits = m
        .forward(
            &tensor(&ints(&b["input_ids"])),
            &tensor(&ints(&b["token_type_ids"])),
            &tensor(&ints(&b["attention_mask"])),
        )
        .unwrap();
    // The mean over the labelled positions of the whole batch (-100: not scored).
    let labels = ints(&b["labels"]).concat();
    let keep: Vec<u32> = (0..labels.len() as u32)
        .filter(|&i| labels[i as usize] != -100)
        .collect();
    let targets: Vec<u32> = keep.iter().map(|&i| labels[i as usize] as u32).collect();
    let classes = logits.dim(2).unwrap();
    let flat = logits.reshape(((), classes)).unwrap();
    let kept = flat
        .index_select(&Tensor::new(keep.as_slice(), &Device::Cpu).unwrap(), 0)
        .unwrap();
    let loss = candle_nn::loss::cross_entropy(
        &kept,
        &Tensor::new(targets.as_slice(), &Device::Cpu).unwrap(),
    )
    .unwrap();
    let want = r["full"]["loss"].as_f64().unwrap() as f32;
    assert!((loss.to_scalar::<f32>().unwrap() - want).abs() < 1e-5);
    let grads = loss.backward().unwrap();
    assert_grads("bert-token-cls", &m.bert.parameters, &grads);
    // Loaded for inference, nothing is trainable and no gradient is tracked.
    let (source, _) = trainable("bert-token-cls");
    let frozen = BertForTokenClassification::from_source(&source, &LoadOptions::default()).unwrap();
    assert!(frozen.bert.parameters.is_empty());
}
