//! The Qwen2.5-Coder GGUF, converted by transformers to a safetensors checkpoint
//! (scripts/convert_qwen_gguf_to_safetensors.py: `save_pretrained` of the dequantized
//! weights), loads through the safetensors path and gives the same logits and greedy tokens
//! as the dequantized GGUF path. The conversion needs torch, which CI does not install, so
//! this test is ignored by default; run it with
//!     FERRO_QWEN_SAFETENSORS=/path/to/converted cargo test --release -p ferro-generate --test safetensors_vs_gguf -- --ignored

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::PathBuf;

use candle_core::Tensor;
use ferro_core::PackagedModel;
use ferro_generate::{Generate, GenerationConfig};
use ferro_models::{AutoModelForCausalLM, LoadOptions};
use serde_json::Value;

#[test]
#[ignore = "needs the checkpoint transformers converts from the GGUF (torch): set FERRO_QWEN_SAFETENSORS"]
fn safetensors_checkpoint_equals_the_dequantized_gguf() {
    let dir = std::env::var("FERRO_QWEN_SAFETENSORS")
        .expect("FERRO_QWEN_SAFETENSORS must name the folder scripts/convert_qwen_gguf_to_safetensors.py wrote");
    let gguf = PackagedModel::Qwen25Coder05BInstruct
        .require()
        .unwrap_or_else(|e| panic!("{e}"));
    let from_st = AutoModelForCausalLM::from_pretrained(&dir, &LoadOptions::default()).unwrap();
    let from_gguf = AutoModelForCausalLM::from_pretrained(
        gguf.to_str().unwrap(),
        &LoadOptions {
            dequantize: true,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    assert!(
        !from_st.config.tie_word_embeddings,
        "this checkpoint has its own output head"
    );

    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/causal_lm/qwen2.5-coder-0.5b-instruct.json");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    for case in r["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let ids: Vec<u32> = serde_json::from_value(case["input_ids"].clone()).unwrap();
        let x = Tensor::new(ids.as_slice(), &from_st.device)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let a: Vec<f32> = from_st
            .forward(&x, &mut from_st.new_cache(), true)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let b: Vec<f32> = from_gguf
            .forward(&x, &mut from_gguf.new_cache(), true)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            diff < 1e-4,
            "{name}: safetensors and GGUF logits differ by {diff}"
        );
        let cfg = GenerationConfig {
            eos_token_ids: Some(Vec::new()),
            ..GenerationConfig::greedy(32)
        };
        let ta = from_st.generate(&ids, &cfg).unwrap();
        let tb = from_gguf.generate(&ids, &cfg).unwrap();
        assert_eq!(ta.new_tokens(0), tb.new_tokens(0), "{name}: greedy tokens");
        eprintln!("{name}: max |logit diff| {diff:.2e}, 32 greedy tokens identical");
    }
}
