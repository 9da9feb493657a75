//! Tiny random Llama / Llama-3-rope / Qwen2 / Mistral checkpoints saved by transformers
//! (scripts/make_tiny_checkpoints.py): logits within 1e-4 of transformers' (f32), greedy
//! continuations identical, and the model invariants (cached decoding equals a full forward;
//! a batch equals its items).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::PathBuf;

use candle_core::Tensor;
use ferro_generate::{Generate, GenerationConfig};
use ferro_models::{AutoModelForCausalLM, CausalLm, LoadOptions};
use serde_json::Value;

fn folder(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/causal_lm/tiny")
        .join(name)
}

fn load(name: &str) -> (CausalLm, Value) {
    let dir = folder(name);
    let model =
        AutoModelForCausalLM::from_pretrained(dir.to_str().unwrap(), &LoadOptions::default())
            .unwrap();
    let r = serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
        .unwrap();
    (model, r)
}

fn forward_all(model: &CausalLm, ids: &[u32]) -> Vec<Vec<f32>> {
    let mut cache = model.new_cache();
    let x = Tensor::new(ids, &model.device)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    model
        .forward(&x, &mut cache, false)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2()
        .unwrap()
}

/// Greedy generation (no end token) gives transformers' `want` continuation.
fn assert_greedy(
    model: &CausalLm,
    prompt: &[u32],
    want: &[u32],
    label: &str,
) -> ferro_generate::GenerateOutput {
    let cfg = GenerationConfig {
        eos_token_ids: Some(Vec::new()),
        ..GenerationConfig::greedy(want.len())
    };
    let out = model.generate(prompt, &cfg).unwrap();
    assert_eq!(out.new_tokens(0), want, "{label}: greedy continuation");
    out
}

fn check(name: &str) {
    let (model, r) = load(name);
    let prompt: Vec<u32> = serde_json::from_value(r["prompt_ids"].clone()).unwrap();
    let want: Vec<Vec<f64>> = serde_json::from_value(r["logits"].clone()).unwrap();
    let got = forward_all(&model, &prompt);
    let mut worst = 0f64;
    for (g, w) in got.iter().zip(&want) {
        for (a, b) in g.iter().zip(w) {
            worst = worst.max((f64::from(*a) - b).abs());
        }
    }
    assert!(
        worst < 1e-4,
        "{name}: logits differ from transformers by up to {worst}"
    );

    let want_new: Vec<u32> = serde_json::from_value(r["greedy_new_tokens"].clone()).unwrap();
    let out = assert_greedy(&model, &prompt, &want_new, name);

    // Cached, token-by-token decoding equals one forward over the whole sequence.
    let full: Vec<u32> = out.sequences[0].clone();
    let last_full = forward_all(&model, &full).pop().unwrap();
    let mut cache = model.new_cache();
    let mut last_step = Vec::new();
    for chunk in [&full[..7], &full[7..19]]
        .into_iter()
        .chain(full[19..].chunks(1))
    {
        let x = Tensor::new(chunk, &model.device)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        last_step = model
            .forward(&x, &mut cache, true)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
    }
    let diff = last_full
        .iter()
        .zip(&last_step)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        diff < 1e-4,
        "{name}: cached decoding differs from a full forward by {diff}"
    );
    let want_last: Vec<f64> = serde_json::from_value(r["full_logits_last"].clone()).unwrap();
    let diff = last_full
        .iter()
        .zip(&want_last)
        .map(|(a, b)| (f64::from(*a) - b).abs())
        .fold(0f64, f64::max);
    assert!(
        diff < 1e-4,
        "{name}: last logits over prompt + continuation differ from transformers by {diff}"
    );

    // A batch of two equals its items run alone.
    let other: Vec<u32> = prompt.iter().rev().copied().collect();
    let mut cache = model.new_cache();
    let both = Tensor::new(vec![prompt.clone(), other.clone()], &model.device).unwrap();
    let batch: Vec<Vec<Vec<f32>>> = model
        .forward(&both, &mut cache, false)
        .unwrap()
        .to_vec3()
        .unwrap();
    for (row, ids) in batch.iter().zip([&prompt, &other]) {
        let alone = forward_all(&model, ids);
        let diff = row
            .iter()
            .flatten()
            .zip(alone.iter().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            diff < 1e-5,
            "{name}: batched logits differ from single by {diff}"
        );
    }
}

#[test]
fn tiny_llama() {
    check("llama");
}

#[test]
fn tiny_llama3_rope_scaling() {
    check("llama3");
}

#[test]
fn tiny_qwen2_tied_embeddings_and_qkv_bias() {
    check("qwen2");
}

#[test]
fn tiny_qwen2_yarn_rope_and_untied_head() {
    check("qwen2_yarn");
}

#[test]
fn tiny_mistral_sliding_window() {
    check("mistral");
}

#[test]
fn tiny_gemma3_sliding_and_global_layers() {
    check("gemma3");
}

/// bf16 weights and activations (norms, softmax and logits in f32) against transformers'
/// f32 logits. bf16 keeps 8 bits of mantissa: each rounding is off by up to 2^-9 (0.2 %)
/// relative. A token's logit passes through some 15 roundings per layer (projections,
/// residual adds, rope, MLP) over 2–4 layers, so errors of ~1–2 % of the logits' scale
/// are expected (seen: 0.8 % Llama, 1.6 % Qwen2, 2.5 % Gemma 3 with its extra norms).
/// We allow 3 % of the model's largest |logit| on every logit, and require the same top-1
/// token wherever the f32 top-2 gap is larger than twice that bound.
#[test]
fn tiny_checkpoints_in_bf16_and_f16() {
    // f16 keeps 3 more mantissa bits than bf16 (2^-11 vs 2^-8 relative rounding), so the same
    // argument bounds it 8x tighter; 0.5 % leaves a little room over that.
    let cases = [
        ("llama", candle_core::DType::BF16, 0.03),
        ("llama3", candle_core::DType::BF16, 0.03),
        ("qwen2", candle_core::DType::BF16, 0.03),
        ("mistral", candle_core::DType::BF16, 0.03),
        ("gemma3", candle_core::DType::BF16, 0.03),
        ("llama", candle_core::DType::F16, 0.005),
        ("qwen2", candle_core::DType::F16, 0.005),
        ("gemma3", candle_core::DType::F16, 0.005),
    ];
    for (name, dtype, fraction) in cases {
        let dir = folder(name);
        let opts = LoadOptions {
            dtype,
            ..LoadOptions::default()
        };
        let model = AutoModelForCausalLM::from_pretrained(dir.to_str().unwrap(), &opts).unwrap();
        let r: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
                .unwrap();
        let prompt: Vec<u32> = serde_json::from_value(r["prompt_ids"].clone()).unwrap();
        let want: Vec<Vec<f64>> = serde_json::from_value(r["logits"].clone()).unwrap();
        let got = forward_all(&model, &prompt);
        let scale = want.iter().flatten().fold(0f64, |m, x| m.max(x.abs()));
        let bound = fraction * scale;
        let mut worst = 0f64;
        for (g, w) in got.iter().zip(&want) {
            for (a, b) in g.iter().zip(w) {
                worst = worst.max((f64::from(*a) - b).abs());
            }
            let mut sorted = w.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            if sorted[0] - sorted[1] > 2.0 * bound {
                let argmax_w = w
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .unwrap()
                    .0;
                let argmax_g = g
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .unwrap()
                    .0;
                assert_eq!(
                    argmax_g, argmax_w,
                    "{name}: {dtype:?} changes a clear top-1"
                );
            }
        }
        assert!(
            worst < bound,
            "{name}: {dtype:?} logits differ from transformers' f32 by up to {worst} (bound {bound:.3})"
        );
        eprintln!(
            "{name}: {dtype:?} max |logit diff| = {worst:.4} ({:.2} % of the scale)",
            100.0 * worst / scale
        );
    }
}

/// Llama GGUF files written as llama.cpp's converter writes them (q/k rows permuted for its
/// interleaved rotary layout; scripts/make_tiny_llama_gguf.py): loaded back in the
/// checkpoint's order, they give transformers' logits for the same file (which transformers
/// dequantizes) and the same greedy tokens, dequantized or run on the quantized kernels.
#[test]
fn tiny_llama_gguf_files_are_unpermuted() {
    let dir = folder("llama_gguf");
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let prompt: Vec<u32> = serde_json::from_value(r["prompt_ids"].clone()).unwrap();
    for file in r["files"].as_array().unwrap() {
        let name = file["file"].as_str().unwrap();
        let want: Vec<Vec<f64>> = serde_json::from_value(file["logits"].clone()).unwrap();
        let want_new: Vec<u32> = serde_json::from_value(file["greedy_new_tokens"].clone()).unwrap();
        for dequantize in [true, false] {
            let opts = LoadOptions {
                gguf_file: Some(name.into()),
                dequantize,
                ..LoadOptions::default()
            };
            let model =
                AutoModelForCausalLM::from_pretrained(dir.to_str().unwrap(), &opts).unwrap();
            let got = forward_all(&model, &prompt);
            let worst = got
                .iter()
                .flatten()
                .zip(want.iter().flatten())
                .map(|(a, b)| (f64::from(*a) - b).abs())
                .fold(0f64, f64::max);
            // Quantized kernels also quantize the activations (to 8 bits, as llama.cpp).
            let bound = if dequantize { 1e-4 } else { 0.1 };
            eprintln!("{name} dequantize={dequantize}: max |logit diff| {worst}");
            assert!(
                worst < bound,
                "{name} (dequantize {dequantize}): logits differ by {worst}"
            );
            assert_greedy(
                &model,
                &prompt,
                &want_new,
                &format!("{name} (dequantize {dequantize})"),
            );
        }
    }
}
