//! Gradient parity of the causal LMs loaded for training (tiny Qwen2 with tied embeddings,
//! tiny Llama): on PyTorch's right-padded batch (tests/fixtures/training/<model>, made by
//! scripts/make_training_refs.py), the shifted loss and every parameter's gradient equal
//! PyTorch's within 1e-4; the tied embedding's gradient is the sum of both uses. Under bf16
//! autocast, the loss and gradients against PyTorch's CPU autocast.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use ferro_models::{AutoModelForCausalLM, CausalLm, LoadOptions};
use ferro_train::data::Batch;
use ferro_train::loss::causal_lm_loss;
use ferro_train::trainer::TrainableModel;
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// `training/<model>/<file>` of the fixtures, parsed.
fn reference(model: &str, file: &str) -> Value {
    let path = fixtures().join(format!("training/{model}/{file}"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The tiny checkpoint loaded for training, and PyTorch's batch (`input_ids`, labels).
fn load(model: &str) -> (CausalLm, Tensor, Vec<Vec<i64>>) {
    let r = reference(model, "reference.json");
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
    (m, ids, labels)
}

fn check(model: &str) {
    let r = reference(model, "reference.json");
    let (m, ids, labels) = load(model);
    // Two ways to the loss: every position's logits then the scored ones (what
    // `forward` returns), and the output head on the scored positions only (what the
    // Trainer's steps use, `TrainableModel::loss`). Both must be PyTorch's.
    for scored_only in [false, true] {
        // Right padding: real tokens only ever see earlier (real) tokens under the causal
        // mask.
        let loss = if scored_only {
            let batch = Batch {
                input_ids: ids.clone(),
                token_type_ids: ids.zeros_like().unwrap(),
                attention_mask: ids.ones_like().unwrap(),
                labels: labels.clone(),
            };
            TrainableModel::loss(&m, &batch).unwrap()
        } else {
            let logits = m.forward(&ids, &mut m.new_cache(), false).unwrap();
            causal_lm_loss(&logits, &labels).unwrap()
        };
        let want = r["full"]["loss"].as_f64().unwrap() as f32;
        let got = loss.to_scalar::<f32>().unwrap();
        assert!(
            (got - want).abs() < 1e-5,
            "{model} (scored only: {scored_only}): loss {got} vs {want}"
        );
        let grads = loss.backward().unwrap();
        let want = candle_core::safetensors::load(
            fixtures().join(format!("training/{model}/full_grads.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        let params = m.parameters.named();
        assert_eq!(params.len(), want.len(), "{model}: parameter count");
        for (name, var) in &params {
            let w = want
                .get(name)
                .unwrap_or_else(|| panic!("{model}: PyTorch has no `{name}`"));
            let g = grads
                .get(var.as_tensor())
                .cloned()
                .unwrap_or_else(|| var.as_tensor().zeros_like().unwrap());
            let diff = max_abs(&(g - w).unwrap());
            assert!(
                diff < 1e-4 * max_abs(w).max(1.0),
                "{model} (scored only: {scored_only}): `{name}` differs by {diff}"
            );
        }
    }
}

#[test]
fn qwen2_gradients_equal_pytorch_with_tied_embeddings() {
    check("qwen2");
}

#[test]
fn llama_gradients_equal_pytorch() {
    check("llama");
}

/// bf16 autocast (`TrainingArguments::bf16`, `ferro_nn::with_autocast`) against
/// PyTorch's CPU autocast on the same batch (training/<model>/bf16_autocast.json, made by
/// scripts/make_bf16_autocast_refs.py): autocast changes the loss, which stays within
/// bf16's rounding of PyTorch's autocast loss; every parameter's gradient norm is
/// PyTorch's under autocast within 2 %; the gradients land on the f32 master weights.
/// (PyTorch's eager attention also multiplies in bf16 under autocast; ours stays f32, as
/// do norms, softmax and the loss in both: the reason for the tolerances.)
fn check_bf16_autocast(model: &str) {
    let want = reference(model, "bf16_autocast.json");
    let (m, ids, labels) = load(model);
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
    check_bf16_autocast("qwen2");
}

#[test]
fn llama_bf16_autocast_matches_pytorch() {
    check_bf16_autocast("llama");
}
