//! The feature-extraction pipeline on tiny BERT checkpoints against transformers 5.24's
//! outputs (tests/fixtures/encoders/tiny/goldens.json): shape, the first token's vector
//! and every token's norm within 1e-4; truncation.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::PathBuf;

use ferro_pipelines::FeatureExtractionPipeline;
use serde_json::Value;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/encoders/tiny")
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn outputs_equal_transformers_pipeline() {
    let goldens: Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("goldens.json")).unwrap())
            .unwrap();
    let mut checked = 0;
    for case in goldens["pipelines"]["feature-extraction"]
        .as_array()
        .unwrap()
    {
        let pipe = FeatureExtractionPipeline::from_pretrained(
            dir()
                .join(case["model"].as_str().unwrap())
                .to_str()
                .unwrap(),
        )
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
        for (a, b) in got[0][0].iter().zip(floats(&want["first_token"])) {
            assert!(
                (a - b).abs() < 1e-4 * b.abs().max(1.0),
                "case {}: {a} vs {b}",
                case["id"]
            );
        }
        for (tok, norm) in got[0].iter().zip(floats(&want["token_norms"])) {
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
