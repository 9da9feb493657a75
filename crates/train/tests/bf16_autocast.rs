//! bf16 autocast in training (`TrainingArguments::bf16`, `ferro_nn::with_autocast`) on the
//! tiny causal checkpoints, against PyTorch's CPU autocast on the same batch
//! (tests/fixtures/training/<model>/bf16_autocast.json, made by
//! scripts/make_bf16_autocast_refs.py): autocast changes the loss, which stays within
//! bf16's rounding of PyTorch's autocast loss; every parameter's gradient norm is
//! PyTorch's under autocast within 2 %; the gradients land on the f32 master weights.
//! (PyTorch's eager attention also multiplies in bf16 under autocast; ours stays f32, as
//! do norms, softmax and the loss in both: the reason for the tolerances.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use ferro_models::{AutoModelForCausalLM, LoadOptions};
use ferro_train::data::Batch;
use ferro_train::trainer::TrainableModel;
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn check(model: &str) {
    let read = |file: &str| -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(fixtures().join(format!("training/{model}/{file}"))).unwrap(),
        )
        .unwrap()
    };
    let (r, want) = (read("reference.json"), read("bf16_autocast.json"));
    let dir = fixtures().join(format!("causal_lm/tiny/{model}"));
    let opts = LoadOptions {
        trainable: true,
        ..LoadOptions::default()
    };
    let m = AutoModelForCausalLM::from_pretrained(dir.to_str().unwrap(), &opts).unwrap();
    let ids: Vec<Vec<u32>> = serde_json::from_value(r["batch"]["input_ids"].clone()).unwrap();
    let labels: Vec<Vec<i64>> = serde_json::from_value(r["batch"]["labels"].clone()).unwrap();
    let (b, t) = (ids.len(), ids[0].len());
    let ids = Tensor::from_vec(ids.concat(), (b, t), &Device::Cpu).unwrap();
    let batch = Batch {
        input_ids: ids.clone(),
        token_type_ids: ids.zeros_like().unwrap(),
        attention_mask: ids.ones_like().unwrap(),
        labels,
    };
    let loss = |autocast| ferro_nn::with_autocast(autocast, || m.loss(&batch).unwrap());
    let f32_loss = loss(None).to_scalar::<f32>().unwrap();
    let bf16 = loss(Some(DType::BF16));
    let bf16_loss = bf16.to_scalar::<f32>().unwrap();
    let (want_f32, want_bf16) = (
        want["loss_f32"].as_f64().unwrap() as f32,
        want["loss_bf16"].as_f64().unwrap() as f32,
    );
    assert!(
        (f32_loss - want_f32).abs() < 1e-5,
        "{model}: f32 loss {f32_loss} vs {want_f32}"
    );
    // The linear layers did run in bf16, and the loss is PyTorch's autocast one within
    // bf16's rounding (its shift from f32 is 1e-3 to 4e-3 on these models).
    assert!(
        (bf16_loss - f32_loss).abs() > 1e-5,
        "{model}: autocast left the loss at {f32_loss}"
    );
    assert!(
        (bf16_loss - want_bf16).abs() < 2e-3,
        "{model}: bf16 loss {bf16_loss} vs PyTorch's {want_bf16} (f32 {want_f32})"
    );
    let grads = bf16.backward().unwrap();
    for (name, var) in m.parameters.named() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{model}: no gradient for `{name}`"));
        assert_eq!(g.dtype(), DType::F32, "{model}: `{name}`");
        let norm = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .sqrt()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let w = want["grad_norms_bf16"][&name].as_f64().unwrap() as f32;
        assert!(
            (norm - w).abs() <= 0.02 * w + 2e-3,
            "{model}: `{name}` gradient norm {norm} vs PyTorch's {w} under autocast"
        );
    }
}

#[test]
fn qwen2_bf16_autocast_matches_pytorch() {
    check("qwen2");
}

#[test]
fn llama_bf16_autocast_matches_pytorch() {
    check("llama");
}
