//! Optimizers and schedules against PyTorch and transformers
//! (tests/fixtures/training, made by scripts/make_training_refs.py): every schedule's
//! learning rates; five AdamW steps with linear warmup and gradient clipping on the tiny
//! BERT classifier (per-step loss, gradient norm and learning rate, then every parameter);
//! three SGD-with-momentum steps; which parameters get weight decay.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use ferro_core::{HubOptions, ModelSource};
use ferro_models::{BertForSequenceClassification, LoadOptions};
use ferro_train::loss::cross_entropy;
use ferro_train::optim::{clip_grad_norm, decays, AdamW, Sgd};
use ferro_train::schedule::{warmup_steps, Schedule, SchedulerType};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn json(rel: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join(rel)).unwrap()).unwrap()
}

#[test]
fn schedules_equal_transformers() {
    let s = json("training/schedules.json");
    let base_lr = s["base_lr"].as_f64().unwrap();
    for case in s["cases"].as_array().unwrap() {
        let total = case["total"].as_u64().unwrap() as usize;
        let warmup = match case.get("warmup_ratio") {
            Some(r) => warmup_steps(r.as_f64().unwrap(), total).unwrap(),
            None => case["warmup_steps"].as_u64().unwrap() as usize,
        };
        assert_eq!(warmup as u64, case["warmup_steps"].as_u64().unwrap());
        for (name, want) in case["schedules"].as_object().unwrap() {
            let sched = Schedule {
                kind: SchedulerType::parse(name).unwrap(),
                base_lr,
                warmup,
                total,
            };
            let lrs = want["lrs"].as_array().unwrap();
            assert_eq!(lrs.len(), total);
            for (step, lr) in lrs.iter().enumerate() {
                let (got, want) = (sched.lr(step), lr.as_f64().unwrap());
                assert!(
                    (got - want).abs() < 1e-12,
                    "{name} step {step}: {got} vs {want}"
                );
            }
            let after = want["after_total"].as_f64().unwrap();
            assert!(
                (sched.lr(total) - after).abs() < 1e-12,
                "{name} after the end"
            );
        }
    }
    assert!(SchedulerType::parse("cyclic").is_err());
}

fn load_bert() -> BertForSequenceClassification {
    let dir = fixtures().join("encoders/tiny/bert-seq-cls");
    let source = ModelSource::resolve(dir.to_str().unwrap(), &HubOptions::from_env()).unwrap();
    let opts = LoadOptions {
        trainable: true,
        ..LoadOptions::default()
    };
    BertForSequenceClassification::from_source(&source, &opts).unwrap()
}

/// The fixture's batch as input tensors and labels.
fn batch(r: &Value) -> ([Tensor; 3], Vec<i64>) {
    let b = &r["batch"];
    let t = |k: &str| {
        let rows: Vec<Vec<u32>> = serde_json::from_value(b[k].clone()).unwrap();
        let (n, w) = (rows.len(), rows[0].len());
        Tensor::from_vec(rows.concat(), (n, w), &Device::Cpu).unwrap()
    };
    let labels = serde_json::from_value(b["labels"].clone()).unwrap();
    (
        [t("input_ids"), t("token_type_ids"), t("attention_mask")],
        labels,
    )
}

fn loss_of(m: &BertForSequenceClassification, x: &[Tensor; 3], labels: &[i64]) -> Tensor {
    cross_entropy(&m.forward(&x[0], &x[1], &x[2]).unwrap(), labels).unwrap()
}

fn close(got: f64, want: f64, tol: f64, what: &str) {
    assert!(
        (got - want).abs() <= tol * want.abs().max(1.0),
        "{what}: {got} vs {want}"
    );
}

#[test]
fn adamw_with_warmup_and_clipping_follows_pytorch() {
    let r = json("training/bert-seq-cls/reference.json");
    let m = load_bert();
    let params = m.bert.parameters.named();
    let (x, labels) = batch(&r);
    let full = &r["adamw"]["full"];
    // The reference: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0.01, linear
    // warmup 2 of 5 steps, max_grad_norm 1.
    let no_decay: Vec<String> = serde_json::from_value(full["no_decay"].clone()).unwrap();
    for (name, _) in &params {
        assert_eq!(decays(name), !no_decay.contains(name), "{name}");
    }
    let sched = Schedule {
        kind: SchedulerType::Linear,
        base_lr: 1e-3,
        warmup: 2,
        total: 5,
    };
    let mut opt = AdamW::new(&params, 0.01, (0.9, 0.999), 1e-8).unwrap();
    for (step, want) in full["steps"].as_array().unwrap().iter().enumerate() {
        let loss = loss_of(&m, &x, &labels);
        close(
            f64::from(loss.to_scalar::<f32>().unwrap()),
            want["loss"].as_f64().unwrap(),
            1e-5,
            &format!("loss at step {step}"),
        );
        let mut grads = loss.backward().unwrap();
        let norm = clip_grad_norm(&mut grads, &params, 1.0).unwrap();
        close(norm, want["grad_norm"].as_f64().unwrap(), 1e-5, "grad norm");
        let lr = sched.lr(step);
        close(lr, want["lr"].as_f64().unwrap(), 1e-12, "lr");
        opt.step(&grads, lr).unwrap();
    }
    let final_loss = f64::from(loss_of(&m, &x, &labels).to_scalar::<f32>().unwrap());
    close(
        final_loss,
        full["final_loss"].as_f64().unwrap(),
        1e-5,
        "final loss",
    );
    let want = candle_core::safetensors::load(
        fixtures().join("training/bert-seq-cls/full_final_params.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    for (name, var) in &params {
        // A key bias adds the same amount to every score of a query, which the softmax
        // cancels: its true gradient is 0, and Adam turns the rounding noise both sides
        // leave there into steps of about lr with arbitrary signs.
        if name.ends_with("attention.self.key.bias") {
            continue;
        }
        let diff = (var.as_tensor() - &want[name])
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-5, "`{name}` after 5 steps differs by {diff}");
    }
}

#[test]
fn sgd_with_momentum_follows_pytorch() {
    let r = json("training/bert-seq-cls/reference.json");
    let m = load_bert();
    let params = m.bert.parameters.named();
    let (x, labels) = batch(&r);
    let sgd = &r["sgd"];
    let mut opt = Sgd::new(&params, 0.9, 0.0).unwrap();
    for (step, want) in sgd["steps"].as_array().unwrap().iter().enumerate() {
        let loss = loss_of(&m, &x, &labels);
        close(
            f64::from(loss.to_scalar::<f32>().unwrap()),
            want["loss"].as_f64().unwrap(),
            1e-5,
            &format!("SGD loss at step {step}"),
        );
        let grads = loss.backward().unwrap();
        opt.step(&grads, 0.05).unwrap();
    }
    let final_loss = f64::from(loss_of(&m, &x, &labels).to_scalar::<f32>().unwrap());
    close(
        final_loss,
        sgd["final_loss"].as_f64().unwrap(),
        1e-5,
        "SGD final loss",
    );
}

#[test]
fn bad_optimizer_settings_and_labels_are_refused() {
    let m = load_bert();
    let params = m.bert.parameters.named();
    assert!(AdamW::new(&params, 0.0, (1.0, 0.999), 1e-8).is_err());
    assert!(Sgd::new(&params, -0.5, 0.0).is_err());
    let logits = Tensor::zeros((2, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = cross_entropy(&logits, &[0, 3]).unwrap_err().to_string();
    assert!(
        err.contains("label 3") && err.contains("3 classes"),
        "{err}"
    );
    let err = cross_entropy(&logits, &[-100, -100])
        .unwrap_err()
        .to_string();
    assert!(err.contains("-100"), "{err}");
    assert!(warmup_steps(-1.0, 10).is_err());
}

#[test]
fn weight_decay_skips_biases_and_norms_as_trainer_does() {
    for model in ["bert-seq-cls", "bert-token-cls", "qwen2", "llama"] {
        let r = json(&format!("training/{model}/reference.json"));
        let no_decay: Vec<String> =
            serde_json::from_value(r["adamw"]["full"]["no_decay"].clone()).unwrap();
        let grads = candle_core::safetensors::load(
            fixtures().join(format!("training/{model}/full_grads.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        for name in grads.keys() {
            assert_eq!(decays(name), !no_decay.contains(name), "{model}: {name}");
        }
    }
}
