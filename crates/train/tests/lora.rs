//! LoRA in PEFT's format against peft 0.21.2 (tests/fixtures/training/<model>, made by
//! scripts/make_training_refs.py): each tiny model (BERT sequence and token classifiers,
//! Qwen2 with tied embeddings, Llama) loaded with PEFT's saved starting adapter gives PEFT's
//! loss on the reference batch and every trainable gradient (the adapters' A and B, the
//! classifier copy of `modules_to_save`) under PEFT's names; the adapter saved back has
//! PEFT's keys and shapes and reloads identically; `merge_and_unload` keeps the logits; a
//! new adapter (B = 0) keeps the base model's logits; targets that match nothing are a
//! clear error. QLoRA: the GGUF files of the tiny Llama (f32: PEFT's loss again; q8_0:
//! gradients through the frozen quantized kernels equal those through its dequantized
//! weights, within the kernels' 8-bit activations).
//!
//! `FERRO_LORA_EXPORT=<dir>` makes `export_adapters_for_peft` write adapters trained a few
//! steps here, with our logits, for scripts/check_lora_adapter_in_peft.py.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::{Path, PathBuf};

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor};
use ferro_core::{HubOptions, ModelSource};
use ferro_models::{
    AutoModelForCausalLM, BertForSequenceClassification, BertForTokenClassification, CausalLm,
    LoadOptions,
};
use ferro_nn::lora::{peft_saved_key, LoraConfig, LoraSpec, TargetModules};
use ferro_nn::{save_adapter, Parameters};
use ferro_train::loss::{causal_lm_loss, cross_entropy};
use serde_json::Value;

const MODELS: [&str; 4] = ["bert-seq-cls", "bert-token-cls", "qwen2", "llama"];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn training(model: &str) -> PathBuf {
    fixtures().join("training").join(model)
}

fn reference(model: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(training(model).join("reference.json")).unwrap())
        .unwrap()
}

fn base_dir(model: &str) -> PathBuf {
    if model.starts_with("bert") {
        fixtures().join("encoders/tiny").join(model)
    } else {
        fixtures().join("causal_lm/tiny").join(model)
    }
}

/// A folder under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("ferro-lora-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    max_abs(&(a - b).unwrap())
}

/// One of the four reference models.
enum Model {
    SeqCls(BertForSequenceClassification),
    TokenCls(BertForTokenClassification),
    Lm(CausalLm),
}

impl Model {
    fn load(model: &str, dir: &Path, opts: &LoadOptions) -> ferro_models::Result<Self> {
        let source = ModelSource::resolve(dir.to_str().unwrap(), &HubOptions::from_env())?;
        Ok(match model {
            "bert-seq-cls" => {
                Model::SeqCls(BertForSequenceClassification::from_source(&source, opts)?)
            }
            "bert-token-cls" => {
                Model::TokenCls(BertForTokenClassification::from_source(&source, opts)?)
            }
            _ => Model::Lm(AutoModelForCausalLM::from_source(&source, opts)?),
        })
    }

    fn with_lora(model: &str, spec: LoraSpec) -> ferro_models::Result<Self> {
        let opts = LoadOptions {
            lora: Some(spec),
            ..LoadOptions::default()
        };
        Self::load(model, &base_dir(model), &opts)
    }

    fn parameters(&self) -> Parameters {
        match self {
            Model::SeqCls(m) => m.bert.parameters.clone(),
            Model::TokenCls(m) => m.bert.parameters.clone(),
            Model::Lm(m) => m.parameters.clone(),
        }
    }

    fn logits(&self, batch: &Value) -> Tensor {
        let t = |k: &str| {
            let rows: Vec<Vec<u32>> = serde_json::from_value(batch[k].clone()).unwrap();
            let (n, w) = (rows.len(), rows[0].len());
            Tensor::from_vec(rows.concat(), (n, w), &Device::Cpu).unwrap()
        };
        let ids = t("input_ids");
        match self {
            Model::SeqCls(m) => m
                .forward(&ids, &t("token_type_ids"), &t("attention_mask"))
                .unwrap(),
            Model::TokenCls(m) => m
                .forward(&ids, &t("token_type_ids"), &t("attention_mask"))
                .unwrap(),
            // Right padding: real tokens only see earlier real tokens.
            Model::Lm(m) => m.forward(&ids, &mut m.new_cache(), false).unwrap(),
        }
    }

    /// The loss transformers' head computes from the batch's labels.
    fn loss(&self, logits: &Tensor, batch: &Value) -> Tensor {
        match self {
            Model::SeqCls(_) => {
                let labels: Vec<i64> = serde_json::from_value(batch["labels"].clone()).unwrap();
                cross_entropy(logits, &labels).unwrap()
            }
            Model::TokenCls(_) => {
                let labels: Vec<Vec<i64>> =
                    serde_json::from_value(batch["labels"].clone()).unwrap();
                let classes = logits.dim(2).unwrap();
                let flat = logits.reshape(((), classes)).unwrap();
                cross_entropy(&flat, &labels.concat()).unwrap()
            }
            Model::Lm(_) => {
                let labels: Vec<Vec<i64>> =
                    serde_json::from_value(batch["labels"].clone()).unwrap();
                causal_lm_loss(logits, &labels).unwrap()
            }
        }
    }

    fn merge_and_unload(self) -> ferro_models::Result<Self> {
        Ok(match self {
            Model::SeqCls(m) => Model::SeqCls(m.merge_and_unload()?),
            Model::TokenCls(m) => Model::TokenCls(m.merge_and_unload()?),
            Model::Lm(m) => Model::Lm(m.merge_and_unload()?),
        })
    }
}

/// The starting adapter PEFT saved for `model`.
fn reference_adapter(model: &str) -> LoraSpec {
    LoraSpec::from_pretrained(training(model).join("lora_adapter")).unwrap()
}

/// Each trainable parameter's gradient equals PEFT's (`lora_grads.safetensors`, PEFT's
/// in-memory names) within 1e-4 of max(1, |ref|), and its saved key is the one PEFT's
/// name map gives.
fn assert_grads(model: &str, params: &Parameters, grads: &GradStore, r: &Value) {
    let want = candle_core::safetensors::load(
        training(model).join("lora_grads.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let name_map = r["lora"]["name_map"].as_object().unwrap();
    let named = params.named();
    assert_eq!(named.len(), want.len(), "{model}: trainable tensor count");
    let mut worst = 0f32;
    assert_eq!(named.len(), name_map.len(), "{model}: name map size");
    for (name, var) in &named {
        let w = want
            .get(name)
            .unwrap_or_else(|| panic!("{model}: PEFT has no trainable `{name}`"));
        assert_eq!(
            peft_saved_key(name).as_deref(),
            name_map[name].as_str(),
            "{model}: saved key of `{name}`"
        );
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{model}: no gradient reached `{name}`"));
        let diff = max_diff(g, w);
        assert!(
            diff < 1e-4 * max_abs(w).max(1.0),
            "{model}: gradient of `{name}` differs by {diff}"
        );
        worst = worst.max(diff);
    }
    eprintln!(
        "{model}: {} gradients within {worst} of PEFT's",
        named.len()
    );
}

#[test]
fn loss_and_gradients_equal_peft() {
    for model in MODELS {
        let r = reference(model);
        let m = Model::with_lora(model, reference_adapter(model)).unwrap();
        let logits = m.logits(&r["batch"]);
        let loss = m.loss(&logits, &r["batch"]);
        let (got, want) = (
            loss.to_scalar::<f32>().unwrap(),
            r["lora"]["loss"].as_f64().unwrap() as f32,
        );
        assert!((got - want).abs() < 1e-5, "{model}: loss {got} vs {want}");
        eprintln!("{model}: loss {got}, PEFT {want}");
        let grads = loss.backward().unwrap();
        assert_grads(model, &m.parameters(), &grads, &r);
        // Base weights are frozen: only adapter tensors are parameters.
        assert!(m
            .parameters()
            .named()
            .iter()
            .all(|(n, _)| n.starts_with("base_model.model.")));
    }
}

#[test]
fn saved_adapter_has_peft_keys_and_reloads_identically() {
    for model in MODELS {
        let dir = TempDir::new(&format!("save-{model}"));
        let spec = reference_adapter(model);
        let m = Model::with_lora(model, spec.clone()).unwrap();
        save_adapter(&dir.0, &spec.config, &m.parameters()).unwrap();
        let theirs = candle_core::safetensors::load(
            training(model).join("lora_adapter/adapter_model.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let ours =
            candle_core::safetensors::load(dir.0.join("adapter_model.safetensors"), &Device::Cpu)
                .unwrap();
        let mut keys: Vec<&String> = ours.keys().collect();
        let mut want: Vec<&String> = theirs.keys().collect();
        keys.sort();
        want.sort();
        assert_eq!(keys, want, "{model}: adapter keys");
        for (k, t) in &ours {
            assert_eq!(t.dims(), theirs[k].dims(), "{model}: shape of `{k}`");
            assert_eq!(max_diff(t, &theirs[k]), 0.0, "{model}: `{k}` changed");
        }
        // The config reads back the same, as PEFT saves it.
        let back = LoraConfig::from_pretrained(&dir.0).unwrap();
        assert!(back.inference_mode);
        assert_eq!(back.r, spec.config.r);
        assert_eq!(back.lora_alpha, spec.config.lora_alpha);
        assert_eq!(back.target_modules, spec.config.target_modules);
        assert_eq!(back.modules_to_save, spec.config.modules_to_save);
        assert_eq!(back.extra, spec.config.extra);
        // Loading the saved folder gives the same parameters.
        let again = Model::with_lora(model, LoraSpec::from_pretrained(&dir.0).unwrap()).unwrap();
        let (a, b) = (m.parameters().named(), again.parameters().named());
        assert_eq!(a.len(), b.len());
        for ((na, va), (nb, vb)) in a.iter().zip(&b) {
            assert_eq!(na, nb);
            assert_eq!(max_diff(va.as_tensor(), vb.as_tensor()), 0.0, "{na}");
        }
    }
}

#[test]
fn merge_and_unload_keeps_the_logits() {
    for model in MODELS {
        let r = reference(model);
        let m = Model::with_lora(model, reference_adapter(model)).unwrap();
        let before = m.logits(&r["batch"]);
        let merged = m.merge_and_unload().unwrap();
        let after = merged.logits(&r["batch"]);
        let diff = max_diff(&before, &after);
        assert!(diff < 1e-4, "{model}: merged logits differ by {diff}");
        // What stays trainable: the classifier copy, under its own name.
        let names: Vec<String> = merged
            .parameters()
            .named()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let want: Vec<&str> = if model.starts_with("bert") {
            vec!["classifier.weight", "classifier.bias"]
        } else {
            vec![]
        };
        assert_eq!(names, want, "{model}: parameters after merging");
        // The merged model is no longer the base model.
        let base = Model::load(model, &base_dir(model), &LoadOptions::default()).unwrap();
        assert!(
            max_diff(&base.logits(&r["batch"]), &after) > 1e-3,
            "{model}"
        );
    }
}

#[test]
fn new_adapter_starts_as_the_base_model() {
    for model in MODELS {
        let r = reference(model);
        let mut config = reference_adapter(model).config;
        config.task_type = r["lora"]["config"]["task_type"].as_str().map(String::from);
        let m = Model::with_lora(model, LoraSpec::new(config.clone(), 7)).unwrap();
        let base = Model::load(model, &base_dir(model), &LoadOptions::default()).unwrap();
        let diff = max_diff(&m.logits(&r["batch"]), &base.logits(&r["batch"]));
        assert!(
            diff < 1e-5,
            "{model}: a new adapter moves the logits by {diff}"
        );
        let params = m.parameters().named();
        assert_eq!(
            params.len(),
            r["lora"]["name_map"].as_object().unwrap().len()
        );
        for (name, var) in &params {
            let t = var.as_tensor();
            if name.contains(".lora_A.") {
                // PEFT's kaiming_uniform_(a=sqrt(5)): uniform in ±1/sqrt(in).
                let bound = 1.0 / (t.dim(1).unwrap() as f32).sqrt();
                let top = max_abs(t);
                assert!(
                    top <= bound && top > 0.5 * bound,
                    "{name}: {top} vs {bound}"
                );
            } else if name.contains(".lora_B.") {
                assert_eq!(max_abs(t), 0.0, "{name}");
            }
        }
        // The same seed draws the same adapter; another seed another one.
        let same = Model::with_lora(model, LoraSpec::new(config.clone(), 7)).unwrap();
        let other = Model::with_lora(model, LoraSpec::new(config, 8)).unwrap();
        let a = |m: &Model| {
            m.parameters()
                .named()
                .into_iter()
                .find(|(n, _)| n.contains(".lora_A."))
                .unwrap()
                .1
                .as_tensor()
                .clone()
        };
        assert_eq!(max_diff(&a(&m), &a(&same)), 0.0);
        assert!(max_diff(&a(&m), &a(&other)) > 0.0);
    }
}

#[test]
fn targets_matching_nothing_are_an_error() {
    let config = LoraConfig::new(4, 8.0, &["q_projection"]);
    let Err(e) = Model::with_lora("llama", LoraSpec::new(config, 0)) else {
        panic!("no error");
    };
    let e = e.to_string();
    assert!(e.contains("target_modules"), "{e}");
    assert!(e.contains("q_projection"), "{e}");
    assert!(e.contains("model.layers.0.self_attn.q_proj"), "{e}");
    // LoRA on an embedding is not implemented: said, not silently skipped.
    let config = LoraConfig::new(4, 8.0, &["q_proj", "embed_tokens"]);
    let Err(e) = Model::with_lora("qwen2", LoraSpec::new(config, 0)) else {
        panic!("no error");
    };
    assert!(e.to_string().contains("model.embed_tokens"), "{e}");
    // An adapter made for another model.
    let Err(e) = Model::with_lora("llama", reference_adapter("bert-seq-cls")) else {
        panic!("no error");
    };
    assert!(e.to_string().contains("target_modules"), "{e}");
    // What this implementation does not compute is refused by name.
    let mut config = LoraConfig::new(4, 8.0, &["q_proj"]);
    config.bias = "lora_only".into();
    let Err(e) = Model::with_lora("llama", LoraSpec::new(config, 0)) else {
        panic!("no error");
    };
    assert!(e.to_string().contains("bias"), "{e}");
    // With `trainable` too, LoRA decides: only the adapters train.
    let opts = LoadOptions {
        trainable: true,
        lora: Some(reference_adapter("llama")),
        ..LoadOptions::default()
    };
    let m = Model::load("llama", &base_dir("llama"), &opts).unwrap();
    assert_eq!(m.parameters().len(), 8);
}

#[test]
fn all_linear_and_default_targets() {
    let config = LoraConfig {
        target_modules: Some(TargetModules::Pattern("all-linear".into())),
        ..LoraConfig::default()
    };
    let m = Model::with_lora("qwen2", LoraSpec::new(config, 1)).unwrap();
    // 7 projections per layer, 2 layers, A and B each; not the (tied) lm_head.
    let names: Vec<String> = m.parameters().named().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.len(), 2 * 7 * 2, "{names:?}");
    assert!(names.iter().all(|n| !n.contains("lm_head")));
    // No target_modules: PEFT's default for the family (q_proj, v_proj).
    let m = Model::with_lora("llama", LoraSpec::new(LoraConfig::default(), 1)).unwrap();
    assert_eq!(m.parameters().len(), 2 * 2 * 2);
}

fn gguf(file: &str) -> PathBuf {
    fixtures().join("causal_lm/tiny/llama_gguf").join(file)
}

fn load_gguf(file: &str, dequantize: bool) -> CausalLm {
    let opts = LoadOptions {
        lora: Some(reference_adapter("llama")),
        dequantize,
        ..LoadOptions::default()
    };
    AutoModelForCausalLM::from_pretrained(gguf(file).to_str().unwrap(), &opts).unwrap()
}

fn lm_loss(m: &CausalLm, r: &Value) -> Tensor {
    let model = Model::Lm(m.clone());
    let logits = model.logits(&r["batch"]);
    model.loss(&logits, &r["batch"])
}

#[test]
fn qlora_on_gguf() {
    let r = reference("llama");
    // The f32 GGUF holds the safetensors weights (q/k rows permuted by llama.cpp's
    // converter, put back when read): PEFT's loss and gradients.
    let m = load_gguf("tiny-llama-f32.gguf", false);
    let loss = lm_loss(&m, &r);
    let want = r["lora"]["loss"].as_f64().unwrap() as f32;
    let got = loss.to_scalar::<f32>().unwrap();
    assert!((got - want).abs() < 1e-5, "f32 GGUF: loss {got} vs {want}");
    assert_grads("llama", &m.parameters, &loss.backward().unwrap(), &r);

    // Q8_0: the base stays quantized and frozen, the adapters learn through it. Its
    // gradients equal those through the same weights dequantized, up to the 8-bit
    // activations of the quantized kernels.
    let q = load_gguf("tiny-llama-q8_0.gguf", false);
    let dense = load_gguf("tiny-llama-q8_0.gguf", true);
    let (lq, ld) = (lm_loss(&q, &r), lm_loss(&dense, &r));
    let (vq, vd) = (
        lq.to_scalar::<f32>().unwrap(),
        ld.to_scalar::<f32>().unwrap(),
    );
    assert!((vq - vd).abs() < 1e-2, "q8_0 loss {vq}, dequantized {vd}");
    assert!(
        (vq - want).abs() < 0.1,
        "q8_0 loss {vq}, PEFT on f32 {want}"
    );
    let (gq, gd) = (lq.backward().unwrap(), ld.backward().unwrap());
    let (pq, pd) = (q.parameters.named(), dense.parameters.named());
    assert_eq!(pq.len(), 8);
    let mut worst = 0f32;
    for ((name, vq), (_, vd)) in pq.iter().zip(&pd) {
        let a = gq
            .get(vq.as_tensor())
            .unwrap_or_else(|| panic!("no gradient reached `{name}` through the q8_0 layers"));
        let b = gd.get(vd.as_tensor()).unwrap();
        let rel = max_diff(a, b) / max_abs(b);
        assert!(
            rel < 0.05,
            "`{name}`: q8_0 vs dequantized gradients differ by {rel}"
        );
        worst = worst.max(rel);
    }
    eprintln!(
        "q8_0: loss {vq} (dequantized {vd}, PEFT f32 {want}); gradients within {worst} (relative)"
    );
    // Merging into a quantized base is refused, naming the way out.
    let e = q.merge_and_unload().unwrap_err().to_string();
    assert!(e.contains("dequantize"), "{e}");
    // Dequantized, it merges.
    let d = dense.merge_and_unload().unwrap();
    assert!(d.parameters.is_empty());
}

#[test]
fn dropout_only_while_training() {
    let mut spec = reference_adapter("llama");
    spec.config.lora_dropout = 0.5;
    let r = reference("llama");
    let m = Model::with_lora("llama", spec).unwrap();
    let plain = Model::with_lora("llama", reference_adapter("llama")).unwrap();
    let eval = m.logits(&r["batch"]);
    assert_eq!(max_diff(&eval, &plain.logits(&r["batch"])), 0.0);
    m.parameters().set_training(true);
    let (a, b) = (m.logits(&r["batch"]), m.logits(&r["batch"]));
    assert!(max_diff(&a, &eval) > 1e-4);
    assert!(max_diff(&a, &b) > 1e-4, "a new mask each forward");
    m.parameters().set_training(false);
    assert_eq!(max_diff(&m.logits(&r["batch"]), &eval), 0.0);
}

/// With `FERRO_LORA_EXPORT=<dir>`: for each model, a new adapter from a config built here
/// (not PEFT's file), trained 3 SGD steps on the reference batch, saved to
/// `<dir>/<model>/adapter`, with our logits (`logits.json`) and the base model's for
/// scripts/check_lora_adapter_in_peft.py to compare with PeftModel.from_pretrained.
#[test]
fn export_adapters_for_peft() {
    let Some(out) = std::env::var_os("FERRO_LORA_EXPORT") else {
        return;
    };
    for model in MODELS {
        let r = reference(model);
        let lm = !model.starts_with("bert");
        let targets: &[&str] = if lm {
            &["q_proj", "v_proj", "down_proj"]
        } else {
            &["query", "value", "output.dense"]
        };
        let mut config = LoraConfig::new(4, 16.0, targets);
        config.task_type = Some(r["lora"]["config"]["task_type"].as_str().unwrap().into());
        let base = std::fs::canonicalize(base_dir(model)).unwrap();
        config.base_model_name_or_path = Some(base.display().to_string());
        let m = Model::with_lora(model, LoraSpec::new(config.clone(), 11)).unwrap();
        let params = m.parameters();
        for _ in 0..3 {
            let logits = m.logits(&r["batch"]);
            let grads = m.loss(&logits, &r["batch"]).backward().unwrap();
            for (_, var) in params.named() {
                if let Some(g) = grads.get(var.as_tensor()) {
                    var.set(&(var.as_tensor() - (g * 0.5).unwrap()).unwrap())
                        .unwrap();
                }
            }
        }
        let dir = Path::new(&out).join(model);
        save_adapter(&dir.join("adapter"), &config, &params).unwrap();
        let base = Model::load(model, &base_dir(model), &LoadOptions::default()).unwrap();
        let ours = m.logits(&r["batch"]);
        let record = serde_json::json!({
            "model": model,
            "base": base_dir(model),
            "batch": r["batch"],
            "logits": ours.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            "shape": ours.dims(),
            "base_logits_max_diff": max_diff(&ours, &base.logits(&r["batch"])),
        });
        std::fs::write(dir.join("logits.json"), record.to_string()).unwrap();
    }
}
