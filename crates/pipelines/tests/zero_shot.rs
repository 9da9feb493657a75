//! The zero-shot-classification pipeline on the tiny BERT NLI model against transformers
//! 5.24's outputs (tests/fixtures/encoders/tiny/goldens.json): labels in the same order,
//! scores within 1e-4, single- and multi-label.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

mod common;

use ferro_pipelines::{split_labels, ZeroShotClassificationPipeline};
use serde_json::Value;

#[test]
fn outputs_equal_transformers_pipeline() {
    let pipe = ZeroShotClassificationPipeline::from_pretrained(&common::model("bert-nli")).unwrap();
    let mut checked = 0;
    for case in &common::cases("zero-shot-classification") {
        let kw = &case["kwargs"];
        let labels: Vec<String> = match &kw["candidate_labels"] {
            Value::Array(a) => a.iter().map(|s| s.as_str().unwrap().to_string()).collect(),
            Value::String(s) => split_labels(s),
            other => panic!("labels {other}"),
        };
        let template = kw
            .get("hypothesis_template")
            .and_then(Value::as_str)
            .unwrap_or("This example is {}.");
        let multi = kw
            .get("multi_label")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let Value::String(text) = &case["inputs"] else {
            continue;
        };
        let got = pipe.call(text, &labels, template, multi).unwrap();
        let want = &case["output"];
        let want_labels: Vec<&str> = want["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        assert_eq!(got.labels, want_labels, "case {}", case["id"]);
        for (g, w) in got.scores.iter().zip(want["scores"].as_array().unwrap()) {
            let w = w.as_f64().unwrap() as f32;
            assert!((g - w).abs() < 1e-4, "case {}: {g} vs {w}", case["id"]);
        }
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} cases checked");
    let err = pipe
        .call("x", &[], "This example is {}.", false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("candidate_labels"), "{err}");
    let err = ZeroShotClassificationPipeline::from_pretrained(&common::model("bert-seq-cls"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("entailment"), "{err}");
}
