//! The feature-extraction pipeline on tiny BERT checkpoints against transformers 5.24's
//! outputs (tests/fixtures/encoders/tiny/goldens.json): shape, the first token's vector
//! and every token's norm within 1e-4; truncation.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

mod common;

use ferro_pipelines::FeatureExtractionPipeline;
use serde_json::Value;

#[test]
fn outputs_equal_transformers_pipeline() {
    let mut checked = 0;
    for case in &common::cases("feature-extraction") {
        let pipe = FeatureExtractionPipeline::from_pretrained(&common::model(
            case["model"].as_str().unwrap(),
        ))
        .unwrap();
        let truncation = case["kwargs"]
            .get("truncation")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let Value::String(text) = &case["inputs"] else {
            continue;
        };
        let result = pipe.call(text, truncation);
        if case.get("error").is_some() {
            assert!(result.is_err(), "case {}", case["id"]);
            checked += 1;
            continue;
        }
        let got = result.unwrap();
        let want = &case["output"];
        let shape: Vec<usize> = want["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(
            [got.len(), got[0].len(), got[0][0].len()],
            shape[..],
            "case {}",
            case["id"]
        );
        for (a, b) in got[0][0].iter().zip(common::floats(&want["first_token"])) {
            assert!(
                (a - b).abs() < 1e-4 * b.abs().max(1.0),
                "case {}: {a} vs {b}",
                case["id"]
            );
        }
        for (tok, norm) in got[0].iter().zip(common::floats(&want["token_norms"])) {
            let n = tok.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!(
                (n - norm).abs() < 1e-4 * norm.max(1.0),
                "case {}: norm {n} vs {norm}",
                case["id"]
            );
        }
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} cases checked");
}
