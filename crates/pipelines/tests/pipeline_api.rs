//! `pipeline(task, model)` driven exactly as transformers' pipelines were when the goldens
//! were recorded: each case's inputs and keyword arguments, as JSON, give JSON equal to
//! transformers' output (same shape, keys, labels and words; numbers within 1e-4).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

mod common;

use ferro_pipelines::{pipeline, Task};
use serde_json::{json, Map, Value};

/// `got` equals `want` as JSON, numbers within 1e-4 (relative above 1).
fn assert_json_close(got: &Value, want: &Value, at: &str) {
    match (got, want) {
        (Value::Number(g), Value::Number(w)) => {
            let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
            assert!((g - w).abs() <= 1e-4 * w.abs().max(1.0), "{at}: {g} vs {w}");
        }
        (Value::Array(g), Value::Array(w)) => {
            assert_eq!(g.len(), w.len(), "{at}: lengths of {got} and {want}");
            for (i, (g, w)) in g.iter().zip(w).enumerate() {
                assert_json_close(g, w, &format!("{at}[{i}]"));
            }
        }
        (Value::Object(g), Value::Object(w)) => {
            let mut gk: Vec<_> = g.keys().collect();
            let mut wk: Vec<_> = w.keys().collect();
            gk.sort();
            wk.sort();
            assert_eq!(gk, wk, "{at}: keys");
            for (k, w) in w {
                assert_json_close(&g[k], w, &format!("{at}.{k}"));
            }
        }
        _ => assert_eq!(got, want, "{at}"),
    }
}

#[test]
fn every_recorded_case_through_pipeline_equals_transformers() {
    let mut checked = 0;
    for task in [
        "text-classification",
        "token-classification",
        "question-answering",
        "fill-mask",
        "zero-shot-classification",
    ] {
        for case in common::cases(task) {
            let id = &case["id"];
            let kwargs: Map<String, Value> = case["kwargs"].as_object().unwrap().clone();
            let model = case["model"].as_str().unwrap();
            let pipe = pipeline(task, &common::model(model)).unwrap();
            // A list of texts is several inputs, with one output each.
            let (inputs, many) = match &case["inputs"] {
                Value::Array(a) if task != "question-answering" => (a.clone(), true),
                one => (vec![one.clone()], false),
            };
            let got = pipe.run(&inputs, &kwargs);
            if case.get("error").is_some() {
                assert!(
                    got.is_err(),
                    "case {id}: transformers raised, we gave {got:?}"
                );
            } else {
                let got = got.unwrap_or_else(|e| panic!("case {id}: {e}"));
                let got = match many {
                    // transformers gives one text's best label as `[{label, score}]`, but
                    // each of a list's as the bare `{label, score}`; `run` answers each
                    // input as if it came alone.
                    true if task == "text-classification" && !kwargs.contains_key("top_k") => {
                        Value::Array(got.into_iter().map(|g| g[0].clone()).collect())
                    }
                    true => Value::Array(got),
                    false => got[0].clone(),
                };
                assert_json_close(&got, &case["output"], &format!("{task} case {id}"));
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 47 + 29 + 19 + 5 + 8);
}

#[test]
fn task_names_arguments_and_inputs_are_checked() {
    assert_eq!(
        Task::from_name("sentiment-analysis").unwrap(),
        Task::TextClassification
    );
    assert_eq!(Task::from_name("ner").unwrap(), Task::TokenClassification);
    let err = pipeline("summarization", &common::model("bert-seq-cls"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("unknown task `summarization`"), "{err}");
    // A task the checkpoint has no head for.
    let err = pipeline("question-answering", &common::model("bert-seq-cls"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("qa_outputs"), "{err}");

    let pipe = pipeline("text-classification", &common::model("bert-seq-cls")).unwrap();
    let kw = |v: Value| v.as_object().unwrap().clone();
    let err = pipe
        .run(
            &[json!("hi")],
            &kw(json!({"aggregation_strategy": "simple"})),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("`aggregation_strategy` is not an argument of text-classification"));
    let err = pipe
        .run(&[json!("hi")], &kw(json!({"top_k": "two"})))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`top_k`"), "{err}");
    let err = pipe
        .run(&[json!({"question": "hi"})], &Map::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("`text`"), "{err}");
    // JSONL-style objects carry each task's fields.
    let out = pipe
        .run(&[json!({"text": "The movie was great."})], &Map::new())
        .unwrap();
    assert_eq!(out[0].as_array().unwrap().len(), 1);
    let qa = pipeline("question-answering", &common::model("bert-qa")).unwrap();
    let err = qa
        .run(&[json!("Where?")], &Map::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("`question` and `context`"), "{err}");
    let zs = pipeline("zero-shot-classification", &common::model("bert-nli")).unwrap();
    let out = zs
        .run(
            &[json!({"sequence": "The team won.", "candidate_labels": ["sports", "food"]})],
            &Map::new(),
        )
        .unwrap();
    assert_eq!(out[0]["labels"].as_array().unwrap().len(), 2);
}
