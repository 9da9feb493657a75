//! Beam search on the tiny Qwen2 checkpoint against transformers 5.24's `generate(num_beams=4)`
//! (tests/fixtures/generation/beam_search_qwen2.json, made by scripts/make_beam_search_refs.py):
//! the same returned sequences, in the same order, with the same scores — with and without
//! an end-of-sequence token, each early_stopping mode, length penalties, and a left-padded
//! batch of two prompts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use ferro_generate::{Generate, GenerationConfig};
use ferro_models::{AutoModelForCausalLM, LoadOptions};
use serde_json::Value;

fn fixture(rel: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(rel)
}

#[test]
fn beam_search_equals_transformers() {
    let r: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("generation/beam_search_qwen2.json")).unwrap(),
    )
    .unwrap();
    let dir = fixture("causal_lm/tiny/qwen2");
    let model =
        AutoModelForCausalLM::from_pretrained(dir.to_str().unwrap(), &LoadOptions::default())
            .unwrap();
    let cases = r["cases"].as_array().unwrap();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let kwargs = &case["generate_kwargs"];
        let mut cfg = GenerationConfig::default();
        cfg.update(kwargs).unwrap();
        if kwargs["eos_token_id"].is_null() {
            cfg.eos_token_ids = Some(Vec::new());
        }
        // The prompts without their left padding.
        let ids: Vec<Vec<u32>> = serde_json::from_value(case["input_ids"].clone()).unwrap();
        let mask: Vec<Vec<u32>> = serde_json::from_value(case["attention_mask"].clone()).unwrap();
        let prompts: Vec<Vec<u32>> = ids
            .iter()
            .zip(&mask)
            .map(|(row, m)| {
                row.iter()
                    .zip(m)
                    .filter(|(_, &m)| m == 1)
                    .map(|(&t, _)| t)
                    .collect()
            })
            .collect();
        let out = model.generate_batch(&prompts, &cfg).unwrap();
        let want: Vec<Vec<u32>> = serde_json::from_value(case["new_tokens"].clone()).unwrap();
        let got: Vec<&[u32]> = (0..out.sequences.len())
            .map(|i| out.new_tokens(i))
            .collect();
        assert_eq!(got, want, "{name}: sequences");
        let want_scores: Vec<f32> =
            serde_json::from_value(case["sequences_scores"].clone()).unwrap();
        let scores = out.sequences_scores.as_ref().unwrap();
        for (g, w) in scores.iter().zip(&want_scores) {
            assert!(
                (g - w).abs() < 1e-4,
                "{name}: scores {scores:?} vs transformers {want_scores:?}"
            );
        }
    }
    assert_eq!(cases.len(), 12);
}
