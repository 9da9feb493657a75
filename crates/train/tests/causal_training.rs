//! Gradient parity of the causal LMs loaded for training (tiny Qwen2 with tied embeddings,
//! tiny Llama): on PyTorch's right-padded batch (tests/fixtures/training/<model>, made by
//! scripts/make_training_refs.py), the shifted loss and every parameter's gradient equal
//! PyTorch's within 1e-4; the tied embedding's gradient is the sum of both uses.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use ferro_models::{AutoModelForCausalLM, LoadOptions};
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

fn check(model: &str) {
    let r: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join(format!("training/{model}/reference.json")))
            .unwrap(),
    )
    .unwrap();
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
