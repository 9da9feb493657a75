//! The token-classification pipeline on the tiny BERT tagger against transformers 5.24's
//! outputs (tests/fixtures/encoders/tiny/goldens.json): aggregation none, simple, first,
//! average and max, `ignore_labels`, character offsets, sub-words and unknown words.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

mod common;

use ferro_pipelines::{Aggregation, TokenClassificationPipeline};
use serde_json::Value;

#[test]
fn outputs_equal_transformers_pipeline() {
    let pipe =
        TokenClassificationPipeline::from_pretrained(&common::model("bert-token-cls")).unwrap();
    let mut checked = 0;
    for case in &common::cases("token-classification") {
        let kw = &case["kwargs"];
        if case["model"] != "bert-token-cls" || case.get("output").is_none() {
            continue;
        }
        let stride = kw.get("stride").map(|s| s.as_u64().unwrap() as usize);
        let aggregation = kw
            .get("aggregation_strategy")
            .map_or(Aggregation::None, |a| {
                Aggregation::parse(a.as_str().unwrap()).unwrap()
            });
        let ignore: Vec<String> = match kw.get("ignore_labels") {
            Some(v) => v
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect(),
            None => vec!["O".to_string()],
        };
        let Value::String(text) = &case["inputs"] else {
            continue;
        };
        let got = pipe
            .call_windows(text, aggregation, &ignore, stride)
            .unwrap();
        let want = case["output"].as_array().unwrap();
        let got_json: Vec<Value> = got
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .collect();
        assert_eq!(
            got.len(),
            want.len(),
            "case {}: {got_json:?}\nwant {want:?}",
            case["id"]
        );
        for (g, w) in got_json.iter().zip(want) {
            for key in ["entity", "entity_group", "index", "word", "start", "end"] {
                assert_eq!(
                    g.get(key),
                    w.get(key),
                    "case {} {key}: {g} vs {w}",
                    case["id"]
                );
            }
            let (gs, ws) = (g["score"].as_f64().unwrap(), w["score"].as_f64().unwrap());
            assert!((gs - ws).abs() < 1e-4, "case {}: {gs} vs {ws}", case["id"]);
        }
        checked += 1;
    }
    assert_eq!(
        checked, 29,
        "every case, the two over stride windows included"
    );
    let err = Aggregation::parse("mean").unwrap_err().to_string();
    assert!(err.contains("aggregation_strategy"), "{err}");
    // Windows need aggregation (as in transformers), and a stride that fits in a window.
    let text = "John Smith lives in London and works for Google. ".repeat(6);
    let ignore = vec!["O".to_string()];
    let err = pipe
        .call_windows(&text, Aggregation::None, &ignore, Some(16))
        .unwrap_err()
        .to_string();
    assert!(err.contains("stride"), "{err}");
    let err = pipe
        .call_windows(&text, Aggregation::Simple, &ignore, Some(64))
        .unwrap_err()
        .to_string();
    assert!(err.contains("stride"), "{err}");
    // Without windows the text is cut to the model's 64 tokens; with them it is read whole.
    let cut = pipe.call(&text, Aggregation::Simple, &ignore).unwrap();
    let whole = pipe
        .call_windows(&text, Aggregation::Simple, &ignore, Some(16))
        .unwrap();
    let last_end = |v: &[ferro_pipelines::Entity]| v.iter().map(|e| e.end).max().unwrap_or(0);
    assert!(last_end(&whole) > last_end(&cut), "{cut:?} vs {whole:?}");
}
