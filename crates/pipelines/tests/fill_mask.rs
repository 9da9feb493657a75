//! The fill-mask pipeline on the tiny BERT masked LM against transformers 5.24's outputs
//! (tests/fixtures/encoders/tiny/goldens.json): the same tokens, strings and sequences in
//! the same order, scores within 1e-4; one mask, two masks, `targets`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

mod common;

use ferro_pipelines::FillMaskPipeline;
use serde_json::Value;

#[test]
fn outputs_equal_transformers_pipeline() {
    let pipe = FillMaskPipeline::from_pretrained(&common::model("bert-mlm")).unwrap();
    let cases = &common::cases("fill-mask");
    for case in cases {
        let kw = &case["kwargs"];
        let top_k = kw.get("top_k").and_then(Value::as_u64).unwrap_or(5) as usize;
        let targets: Option<Vec<String>> = kw.get("targets").map(|t| {
            t.as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect()
        });
        let got = pipe
            .call(case["inputs"].as_str().unwrap(), top_k, targets.as_deref())
            .unwrap();
        // One mask: a list of candidates; several: a list per mask.
        let want: Vec<&Value> = match &case["output"] {
            Value::Array(a) if a.first().is_some_and(Value::is_array) => a.iter().collect(),
            out => vec![out],
        };
        assert_eq!(got.len(), want.len(), "case {}", case["id"]);
        for (g, w) in got.iter().zip(want) {
            let w = w.as_array().unwrap();
            assert_eq!(g.len(), w.len(), "case {}", case["id"]);
            for (g, w) in g.iter().zip(w) {
                assert_eq!(
                    g.token,
                    w["token"].as_u64().unwrap() as u32,
                    "case {}",
                    case["id"]
                );
                assert_eq!(
                    g.token_str,
                    w["token_str"].as_str().unwrap(),
                    "case {}",
                    case["id"]
                );
                assert_eq!(
                    g.sequence,
                    w["sequence"].as_str().unwrap(),
                    "case {}",
                    case["id"]
                );
                let ws = w["score"].as_f64().unwrap() as f32;
                assert!(
                    (g.score - ws).abs() < 1e-4,
                    "case {}: {} vs {ws}",
                    case["id"],
                    g.score
                );
            }
        }
    }
    let err = pipe.call("no mask here", 5, None).unwrap_err().to_string();
    assert!(err.contains("no mask token"), "{err}");
}
