//! `AutoModelForCausalLM::from_config`: new weights as transformers' `_init_weights` draws
//! them (normal linear and embedding weights with the config's initializer_range, zero
//! biases and padding row, RMSNorm weights one, Gemma 3's zero), every one a trainable
//! parameter (a tied embedding once), the same for the same seed, a starting loss near
//! ln(vocab), and saved checkpoints that load back with the same logits.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use ferro_models::{AutoModelForCausalLM, CausalLm, LoadOptions};
use serde_json::{json, Value};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// A small Qwen2 config (QKV biases, tied embeddings), with `edit` applied.
fn qwen2_config(edit: impl FnOnce(&mut Value)) -> Value {
    let mut v = json!({
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "vocab_size": 512,
        "hidden_size": 64,
        "intermediate_size": 160,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
        "initializer_range": 0.05,
        "tie_word_embeddings": true,
        "pad_token_id": 3,
        "eos_token_id": 1
    });
    edit(&mut v);
    v
}

fn write_config(dir: &Path, config: &Value) -> PathBuf {
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_string_pretty(config).unwrap()).unwrap();
    path
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn mean_std(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = v
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, var.sqrt())
}

fn build(config: &Path, seed: u64) -> CausalLm {
    AutoModelForCausalLM::from_config(config, &LoadOptions::default(), seed).unwrap()
}

#[test]
fn qwen2_weights_follow_init_weights() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &qwen2_config(|_| {}));
    let m = build(&path, 7);
    let params = m.parameters.named();
    // Tied: the head is the embedding, one parameter; per layer q/k/v (weight and bias),
    // o, gate/up/down and two norms; then the final norm.
    assert_eq!(params.len(), 1 + 2 * 12 + 1, "{:?}", names(&m));
    assert!(m.parameters.get("lm_head.weight").is_none());
    let std = 0.05;
    for (name, var) in &params {
        let v = values(var.as_tensor());
        if name.ends_with("norm.weight") {
            assert!(v.iter().all(|&x| x == 1.0), "{name} should be ones");
        } else if name.ends_with(".bias") {
            assert!(v.iter().all(|&x| x == 0.0), "{name} should be zeros");
        } else {
            let (mean, s) = mean_std(&v);
            let n = v.len() as f64;
            // The mean of n draws is within 5 standard errors; the std within 6 %.
            assert!(mean.abs() < 5.0 * std / n.sqrt(), "{name}: mean {mean}");
            assert!((s / std - 1.0).abs() < 0.06, "{name}: std {s}");
        }
    }
    // The padding row of the embedding starts at zero (nn.Embedding's padding_idx).
    let embed = m.parameters.get("model.embed_tokens.weight").unwrap();
    let rows = embed.as_tensor().to_vec2::<f32>().unwrap();
    assert!(rows[3].iter().all(|&x| x == 0.0));
    assert!(rows[2].iter().any(|&x| x != 0.0));
}

fn names(m: &CausalLm) -> Vec<String> {
    m.parameters.named().into_iter().map(|(n, _)| n).collect()
}

#[test]
fn llama_has_its_own_head_and_default_range() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &qwen2_config(|v| {
            v["model_type"] = json!("llama");
            v["architectures"] = json!(["LlamaForCausalLM"]);
            v["tie_word_embeddings"] = json!(false);
            v.as_object_mut().unwrap().remove("initializer_range");
            v.as_object_mut().unwrap().remove("pad_token_id");
        }),
    );
    let m = build(&path, 7);
    // No biases in Llama's attention: 9 tensors per layer, plus the separate head.
    assert_eq!(m.parameters.len(), 1 + 2 * 9 + 1 + 1, "{:?}", names(&m));
    let head = values(m.parameters.get("lm_head.weight").unwrap().as_tensor());
    let embed = values(
        m.parameters
            .get("model.embed_tokens.weight")
            .unwrap()
            .as_tensor(),
    );
    assert_ne!(head, embed, "an untied head is drawn on its own");
    // transformers' default initializer_range is 0.02; no padding row without pad_token_id.
    let (_, s) = mean_std(&embed);
    assert!((s / 0.02 - 1.0).abs() < 0.06, "std {s}");
    assert!(embed[..64].iter().all(|&x| x != 0.0));
}

#[test]
fn gemma3_norms_start_at_zero() {
    // Gemma 3 scales by (1 + w): transformers' Gemma3 `_init_weights` zeroes the norms.
    let m = build(&fixtures().join("causal_lm/tiny/gemma3/config.json"), 1);
    let norms: Vec<_> = m
        .parameters
        .named()
        .into_iter()
        .filter(|(n, _)| n.ends_with("norm.weight"))
        .collect();
    // Six in each of the 4 layers (around attention and the MLP, q and k), and the final one.
    assert_eq!(norms.len(), 4 * 6 + 1);
    for (name, var) in norms {
        assert!(values(var.as_tensor()).iter().all(|&x| x == 0.0), "{name}");
    }
}

#[test]
fn a_seed_gives_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &qwen2_config(|_| {}));
    let (a, b, c) = (build(&path, 42), build(&path, 42), build(&path, 43));
    for (name, var) in a.parameters.named() {
        let va = values(var.as_tensor());
        assert_eq!(
            va,
            values(b.parameters.get(&name).unwrap().as_tensor()),
            "{name}"
        );
        if !(name.ends_with("norm.weight") || name.ends_with(".bias")) {
            assert_ne!(
                va,
                values(c.parameters.get(&name).unwrap().as_tensor()),
                "{name}"
            );
        }
    }
    // Each tensor draws from its own seed: q and k of a layer differ.
    let q = values(
        a.parameters
            .get("model.layers.0.self_attn.q_proj.weight")
            .unwrap()
            .as_tensor(),
    );
    let k = values(
        a.parameters
            .get("model.layers.0.self_attn.k_proj.weight")
            .unwrap()
            .as_tensor(),
    );
    assert_ne!(q[..128], k[..128]);
}

/// Mean cross-entropy of next-token predictions over `ids`.
fn next_token_loss(m: &CausalLm, ids: &[u32]) -> f32 {
    let t = Tensor::from_vec(ids.to_vec(), (1, ids.len()), &Device::Cpu).unwrap();
    let logits = m
        .forward(&t, &mut m.new_cache(), false)
        .unwrap()
        .squeeze(0)
        .unwrap();
    let n = ids.len() - 1;
    let logits = logits.narrow(0, 0, n).unwrap();
    let targets = Tensor::from_vec(ids[1..].to_vec(), n, &Device::Cpu).unwrap();
    candle_nn::loss::cross_entropy(&logits, &targets)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn starts_near_uniform_and_saves_a_loadable_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &qwen2_config(|_| {}));
    let m = build(&path, 5);
    let ids: Vec<u32> = (0..100u32).map(|i| (i * 37 + 11) % 512).collect();
    let loss = next_token_loss(&m, &ids);
    // Small weights give nearly uniform predictions: ln(512) = 6.238, plus about
    // s²/2 = 0.08 for logits spread by s = 0.05 · √64 (normalized states times the tied
    // embedding).
    let excess = loss - 512f32.ln();
    assert!(excess > 0.0 && excess < 0.15, "initial loss {loss}");
    let out = dir.path().join("saved");
    m.save_pretrained(&out).unwrap();
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(saved["model_type"], "qwen2");
    let back =
        AutoModelForCausalLM::from_pretrained(out.to_str().unwrap(), &LoadOptions::default())
            .unwrap();
    let t = Tensor::from_vec(ids.clone(), (1, ids.len()), &Device::Cpu).unwrap();
    let a = m.forward(&t, &mut m.new_cache(), false).unwrap();
    let b = back.forward(&t, &mut back.new_cache(), false).unwrap();
    let diff = values(&(a - b).unwrap())
        .iter()
        .fold(0f32, |d, x| d.max(x.abs()));
    // The same weights; inference and training layers may order float sums differently.
    assert!(diff < 1e-5, "logits differ by {diff}");
}

#[test]
fn bad_configs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = |config: Value| {
        let path = write_config(dir.path(), &config);
        AutoModelForCausalLM::from_config(&path, &LoadOptions::default(), 0)
            .unwrap_err()
            .to_string()
    };
    let e = err(qwen2_config(|v| v["model_type"] = json!("gpt_neox")));
    assert!(
        e.contains("`gpt_neox`") && e.contains("not supported"),
        "{e}"
    );
    for field in [
        "model_type",
        "hidden_size",
        "vocab_size",
        "num_hidden_layers",
    ] {
        let e = err(qwen2_config(|v| {
            v.as_object_mut().unwrap().remove(field);
        }));
        assert!(e.contains(&format!("missing `{field}`")), "{field}: {e}");
    }
    let e = err(qwen2_config(|v| v["initializer_range"] = json!(-1.0)));
    assert!(e.contains("initializer_range"), "{e}");
    let e = err(qwen2_config(|v| v["pad_token_id"] = json!(512)));
    assert!(e.contains("pad_token_id"), "{e}");
    let e =
        AutoModelForCausalLM::from_config(&dir.path().join("absent"), &LoadOptions::default(), 0)
            .unwrap_err()
            .to_string();
    assert!(e.contains("absent") && e.contains("config.json"), "{e}");
}
