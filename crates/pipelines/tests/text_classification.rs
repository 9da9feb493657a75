//! The text-classification pipeline on the tiny BERT classifiers against transformers 5.24's
//! pipeline outputs (tests/fixtures/encoders/tiny/goldens.json): the same labels in the
//! same order, scores within 1e-4, for the default call, `top_k`, `function_to_apply`,
//! `truncation`, text pairs, RoBERTa and DistilBERT checkpoints, and the error on a text
//! longer than the model without truncation.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

mod common;

use ferro_pipelines::{FunctionToApply, TextClassificationPipeline, TopK};
use serde_json::Value;

#[test]
fn outputs_equal_transformers_pipeline() {
    let (mut checked, mut pairs, mut others) = (0, 0, 0);
    for case in &common::cases("text-classification") {
        let model = case["model"].as_str().unwrap();
        let pipe = TextClassificationPipeline::from_pretrained(&common::model(model)).unwrap();
        let kw = &case["kwargs"];
        let top_k = match kw.get("top_k") {
            None => TopK::Best,
            Some(Value::Null) => TopK::All,
            Some(k) => TopK::K(k.as_u64().unwrap() as usize),
        };
        let function = kw
            .get("function_to_apply")
            .map_or(FunctionToApply::Default, |f| {
                FunctionToApply::parse(f.as_str().unwrap()).unwrap()
            });
        let truncation = kw
            .get("truncation")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let texts: Vec<(&str, Option<&str>)> = match &case["inputs"] {
            Value::String(s) => vec![(s.as_str(), None)],
            Value::Array(a) => a.iter().map(|s| (s.as_str().unwrap(), None)).collect(),
            Value::Object(o) => vec![(o["text"].as_str().unwrap(), o["text_pair"].as_str())],
            other => panic!("inputs {other}"),
        };
        if texts[0].1.is_some() {
            pairs += 1;
        }
        if !model.starts_with("bert-") {
            others += 1;
        }
        let results: Vec<_> = texts
            .iter()
            .map(|(t, p)| pipe.call_pair(t, *p, top_k, function, truncation))
            .collect();
        if case.get("error").is_some() {
            let err = results[0].as_ref().unwrap_err().to_string();
            assert!(err.contains("truncation"), "case {}: {err}", case["id"]);
            checked += 1;
            continue;
        }
        // One text: a list of label/score records; several texts: one record (or list) each.
        let want: Vec<&Value> = match (&case["inputs"], &case["output"]) {
            (Value::Array(_), Value::Array(per_text)) => per_text.iter().collect(),
            (_, out) => vec![out],
        };
        for (got, want) in results.iter().zip(want) {
            let got = got.as_ref().unwrap();
            let want: Vec<&Value> = match want {
                Value::Array(a) => a.iter().collect(),
                one => vec![one],
            };
            assert_eq!(got.len(), want.len(), "case {}", case["id"]);
            for (g, w) in got.iter().zip(want) {
                assert_eq!(g.label, w["label"].as_str().unwrap(), "case {}", case["id"]);
                let ws = w["score"].as_f64().unwrap() as f32;
                assert!(
                    (g.score - ws).abs() < 1e-4 * ws.abs().max(1.0),
                    "case {}: {} vs {ws}",
                    case["id"],
                    g.score
                );
            }
        }
        checked += 1;
    }
    assert_eq!(checked, 47);
    assert!(
        pairs >= 1 && others >= 12,
        "{pairs} pairs, {others} RoBERTa/DistilBERT"
    );
}

#[test]
fn bad_input_is_refused() {
    let pipe = TextClassificationPipeline::from_pretrained(&common::model("bert-seq-cls")).unwrap();
    // An empty text is [CLS] [SEP] and still gets a label, as in transformers.
    assert_eq!(
        pipe.call("", TopK::All, FunctionToApply::Default, false)
            .unwrap()
            .len(),
        3
    );
    let err = FunctionToApply::parse("tanh").unwrap_err().to_string();
    assert!(err.contains("function_to_apply"), "{err}");
    // A model without a classification head.
    let err = TextClassificationPipeline::from_pretrained(&common::model("bert-mlm"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("classifier"), "{err}");
}
