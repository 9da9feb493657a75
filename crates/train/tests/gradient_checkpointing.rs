//! Gradient checkpointing of the causal LMs (`CausalLm::gradient_checkpointing_enable`,
//! `ferro_nn::checkpoint`): on the reference batch of tests/fixtures/training/<model>
//! (tiny Qwen2 with tied embeddings, tiny Llama; made by scripts/make_training_refs.py),
//! the loss and every gradient with checkpointing equal those without (1e-6) and
//! PyTorch's / PEFT's (1e-4), for full fine-tuning, LoRA and QLoRA (a q8_0 GGUF), and for
//! Gemma 3; the graph really drops the layers' activations; Trainer steps log the same
//! losses with and without (with LoRA dropout too: the rerun draws the same masks);
//! encoders are refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use ferro_core::{HubOptions, ModelSource};
use ferro_models::{AutoModelForCausalLM, BertForSequenceClassification, CausalLm, LoadOptions};
use ferro_nn::lora::LoraSpec;
use ferro_train::loss::causal_lm_loss;
use ferro_train::{Example, LoraModel, Trainer, TrainingArguments};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn reference(model: &str) -> Value {
    let p = fixtures().join(format!("training/{model}/reference.json"));
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
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

fn load(path: &str, opts: &LoadOptions) -> CausalLm {
    AutoModelForCausalLM::from_pretrained(path, opts).unwrap()
}

fn tiny(model: &str) -> String {
    fixtures()
        .join(format!("causal_lm/tiny/{model}"))
        .display()
        .to_string()
}

fn trainable() -> LoadOptions {
    LoadOptions {
        trainable: true,
        ..LoadOptions::default()
    }
}

fn with_adapter(model: &str) -> LoadOptions {
    let dir = fixtures().join(format!("training/{model}/lora_adapter"));
    LoadOptions {
        lora: Some(LoraSpec::from_pretrained(dir).unwrap()),
        ..LoadOptions::default()
    }
}

/// The reference batch's shifted loss (PyTorch's right-padded batch).
fn loss(m: &CausalLm, batch: &Value) -> Tensor {
    let ids: Vec<Vec<u32>> = serde_json::from_value(batch["input_ids"].clone()).unwrap();
    let labels: Vec<Vec<i64>> = serde_json::from_value(batch["labels"].clone()).unwrap();
    let (b, t) = (ids.len(), ids[0].len());
    let ids = Tensor::from_vec(ids.concat(), (b, t), &Device::Cpu).unwrap();
    let logits = m.forward(&ids, &mut m.new_cache(), false).unwrap();
    causal_lm_loss(&logits, &labels).unwrap()
}

/// Loss and gradients of `m` in training mode without and with checkpointing (the same
/// `Var`s), after checking that the checkpointed graph is the smaller one (the layers'
/// activations are gone from it) and that it needs `checkpoint::backward`.
fn both_ways(m: &CausalLm, batch: &Value) -> ((f32, GradStore), (f32, GradStore)) {
    assert!(!m.is_gradient_checkpointing());
    m.parameters.set_training(true);
    let plain = loss(m, batch);
    let mut ck = m.clone();
    ck.gradient_checkpointing_enable();
    assert!(ck.is_gradient_checkpointing());
    let checkpointed = loss(&ck, batch);
    m.parameters.set_training(false);
    let (n_plain, n_ck) = (
        plain.sorted_nodes().len(),
        checkpointed.sorted_nodes().len(),
    );
    assert!(
        n_ck * 2 < n_plain,
        "checkpointed graph has {n_ck} nodes, {n_plain} without"
    );
    let e = checkpointed.backward().unwrap_err().to_string();
    assert!(e.contains("checkpoint::backward"), "{e}");
    (
        (
            plain.to_scalar::<f32>().unwrap(),
            ferro_nn::checkpoint::backward(&plain).unwrap(),
        ),
        (
            checkpointed.to_scalar::<f32>().unwrap(),
            ferro_nn::checkpoint::backward(&checkpointed).unwrap(),
        ),
    )
}

/// Every parameter's gradient with checkpointing within 1e-6 of the one without, and
/// within 1e-4 (of max(1, |ref|)) of `want[name]` when a reference is given.
fn assert_same_grads(
    what: &str,
    params: &[(String, Var)],
    plain: &GradStore,
    ck: &GradStore,
    want: Option<&HashMap<String, Tensor>>,
) {
    assert!(!params.is_empty());
    let mut worst = 0f32;
    for (name, var) in params {
        let g = ck
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{what}: no gradient reached `{name}`"));
        let p = plain.get(var.as_tensor()).unwrap();
        let diff = max_abs(&(g - p).unwrap());
        assert!(
            diff <= 1e-6,
            "{what}: `{name}` differs by {diff} from no checkpointing"
        );
        worst = worst.max(diff);
        if let Some(want) = want {
            let w = want
                .get(name)
                .unwrap_or_else(|| panic!("{what}: no reference for `{name}`"));
            let diff = max_abs(&(g - w).unwrap());
            assert!(
                diff < 1e-4 * max_abs(w).max(1.0),
                "{what}: `{name}` differs by {diff} from the reference"
            );
        }
    }
    eprintln!(
        "{what}: {} gradients within {worst} of no checkpointing",
        params.len()
    );
}

fn grads_file(model: &str, file: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(
        fixtures().join(format!("training/{model}/{file}")),
        &Device::Cpu,
    )
    .unwrap()
}

#[test]
fn full_fine_tuning_gradients_are_unchanged() {
    for model in ["qwen2", "llama"] {
        let r = reference(model);
        let m = load(&tiny(model), &trainable());
        let ((lp, gp), (lc, gc)) = both_ways(&m, &r["batch"]);
        let want = r["full"]["loss"].as_f64().unwrap() as f32;
        assert!((lc - lp).abs() <= 1e-6, "{model}: loss {lc} vs {lp}");
        assert!(
            (lc - want).abs() < 1e-5,
            "{model}: loss {lc}, PyTorch {want}"
        );
        let want = grads_file(model, "full_grads.safetensors");
        assert_same_grads(model, &m.parameters.named(), &gp, &gc, Some(&want));
    }
}

#[test]
fn lora_gradients_are_unchanged() {
    for model in ["qwen2", "llama"] {
        let r = reference(model);
        let m = load(&tiny(model), &with_adapter(model));
        let ((lp, gp), (lc, gc)) = both_ways(&m, &r["batch"]);
        let want = r["lora"]["loss"].as_f64().unwrap() as f32;
        assert!((lc - lp).abs() <= 1e-6, "{model}: loss {lc} vs {lp}");
        assert!((lc - want).abs() < 1e-5, "{model}: loss {lc}, PEFT {want}");
        let want = grads_file(model, "lora_grads.safetensors");
        let what = format!("{model} LoRA");
        assert_same_grads(&what, &m.parameters.named(), &gp, &gc, Some(&want));
    }
}

/// QLoRA: the base stays quantized (q8_0) and frozen; the adapters learn through the
/// recomputed quantized layers exactly as through the kept ones.
#[test]
fn qlora_gradients_are_unchanged() {
    let r = reference("llama");
    let gguf = fixtures().join("causal_lm/tiny/llama_gguf/tiny-llama-q8_0.gguf");
    let m = load(gguf.to_str().unwrap(), &with_adapter("llama"));
    let ((lp, gp), (lc, gc)) = both_ways(&m, &r["batch"]);
    assert!((lc - lp).abs() <= 1e-6, "q8_0: loss {lc} vs {lp}");
    assert_same_grads("llama q8_0 QLoRA", &m.parameters.named(), &gp, &gc, None);
}

/// Gemma 3 (its sliding-window and global layers, q/k norms): the reference batch's
/// token ids fit its vocabulary.
#[test]
fn gemma3_gradients_are_unchanged() {
    let r = reference("qwen2");
    let m = load(&tiny("gemma3"), &trainable());
    let ((lp, gp), (lc, gc)) = both_ways(&m, &r["batch"]);
    assert!((lc - lp).abs() <= 1e-6, "gemma3: loss {lc} vs {lp}");
    assert_same_grads("gemma3", &m.parameters.named(), &gp, &gc, None);
}

/// Out of training mode (generation) a checkpointed model reads and fills its cache as
/// before, with the same logits; in training mode its forward leaves the cache empty.
#[test]
fn inference_is_unchanged() {
    let r = reference("qwen2");
    let m = load(&tiny("qwen2"), &trainable());
    let mut ck = m.clone();
    ck.gradient_checkpointing_enable();
    let ids: Vec<Vec<u32>> = serde_json::from_value(r["batch"]["input_ids"].clone()).unwrap();
    let ids = Tensor::new(ids[0].as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let (mut c1, mut c2) = (m.new_cache(), ck.new_cache());
    let a = m.forward(&ids, &mut c1, false).unwrap();
    let b = ck.forward(&ids, &mut c2, false).unwrap();
    assert_eq!(max_abs(&(a - b).unwrap()), 0.0);
    assert_eq!(c2.len(), ids.dim(1).unwrap());
    ck.parameters.set_training(true);
    let mut c3 = ck.new_cache();
    ck.forward(&ids, &mut c3, false).unwrap();
    assert!(c3.is_empty());
    ck.parameters.set_training(false);
}

/// The reference batch as unpadded causal-LM examples (labels = the ids).
fn examples(r: &Value) -> Vec<Example> {
    let ids: Vec<Vec<u32>> = serde_json::from_value(r["batch"]["input_ids"].clone()).unwrap();
    let lengths: Vec<usize> = serde_json::from_value(r["batch"]["lengths"].clone()).unwrap();
    ids.iter()
        .zip(lengths)
        .map(|(row, n)| Example {
            input_ids: row[..n].to_vec(),
            token_type_ids: vec![0; n],
            labels: row[..n].iter().map(|&t| i64::from(t)).collect(),
        })
        .collect()
}

fn args(dir: &std::path::Path, checkpointing: bool) -> TrainingArguments {
    TrainingArguments {
        output_dir: dir.to_path_buf(),
        max_steps: 4,
        per_device_train_batch_size: 2,
        gradient_accumulation_steps: 2,
        learning_rate: 1e-3,
        weight_decay: 0.01,
        max_grad_norm: 1.0,
        logging_steps: 1.0,
        save_strategy: ferro_train::IntervalStrategy::No,
        disable_tqdm: true,
        gradient_checkpointing: checkpointing,
        ..TrainingArguments::default()
    }
}

/// The logged losses and gradient norms of a run.
fn logged(log: &[Value]) -> Vec<(f64, f64)> {
    log.iter()
        .filter_map(|e| Some((e["loss"].as_f64()?, e["grad_norm"].as_f64()?)))
        .collect()
}

/// Four AdamW steps (two micro-batches each, clipping at 1) log the same losses and
/// gradient norms with and without checkpointing, for full fine-tuning and LoRA with
/// dropout.
#[test]
fn trainer_steps_are_unchanged() {
    let r = reference("qwen2");
    for lora in [false, true] {
        let mut runs = Vec::new();
        for checkpointing in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let a = args(dir.path(), checkpointing);
            let out = if lora {
                // With LoRA dropout: the recomputed layers draw the masks the first run drew.
                let mut opts = with_adapter("qwen2");
                let spec = opts.lora.as_mut().unwrap();
                spec.config.lora_dropout = 0.1;
                let config = spec.config.clone();
                let model = LoraModel {
                    model: load(&tiny("qwen2"), &opts),
                    config,
                };
                let mut t = Trainer::new(model, a, examples(&r), None, 0).unwrap();
                assert_eq!(t.model.model.is_gradient_checkpointing(), checkpointing);
                t.train().unwrap()
            } else {
                let model = load(&tiny("qwen2"), &trainable());
                let mut t = Trainer::new(model, a, examples(&r), None, 0).unwrap();
                assert_eq!(t.model.is_gradient_checkpointing(), checkpointing);
                t.train().unwrap()
            };
            runs.push(logged(&out.log_history));
        }
        let (plain, ck) = (&runs[0], &runs[1]);
        assert_eq!(plain.len(), 4);
        assert_eq!(plain.len(), ck.len());
        for ((l1, n1), (l2, n2)) in plain.iter().zip(ck) {
            assert!((l1 - l2).abs() <= 1e-6, "lora {lora}: loss {l2} vs {l1}");
            assert!(
                (n1 - n2).abs() <= 1e-6,
                "lora {lora}: grad norm {n2} vs {n1}"
            );
        }
        // The model learns: the losses are not all the same.
        assert!((plain[0].0 - plain[3].0).abs() > 1e-4, "{plain:?}");
        eprintln!("lora {lora}: (loss, grad_norm) {ck:?}");
    }
}

#[test]
fn encoders_are_refused() {
    let r = reference("qwen2");
    let dir = tempfile::tempdir().unwrap();
    // An encoder does not recompute its layers.
    let bert = fixtures().join("encoders/tiny/bert-seq-cls");
    let source = ModelSource::resolve(bert.to_str().unwrap(), &HubOptions::from_env()).unwrap();
    let model = BertForSequenceClassification::from_source(&source, &trainable()).unwrap();
    let e = Trainer::new(model, args(dir.path(), true), examples(&r), None, 0)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("gradient_checkpointing") && e.contains("BertForSequenceClassification"),
        "{e}"
    );
}
