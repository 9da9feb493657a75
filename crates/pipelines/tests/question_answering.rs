//! The question-answering pipeline on the tiny BERT QA checkpoint against transformers
//! 4.57.6's pipeline (the last release that has it; tests/fixtures/encoders/tiny/
//! goldens.json): the same answers, spans and order, scores within 1e-4, for top_k,
//! handle_impossible_answer, align_to_words, max_answer_len and a context longer than the
//! model's window (doc_stride windows whose equal answers add up).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

mod common;

use ferro_pipelines::{QaOptions, QuestionAnsweringPipeline};
use serde_json::Value;

#[test]
fn outputs_equal_transformers_pipeline() {
    let pipe = QuestionAnsweringPipeline::from_pretrained(&common::model("bert-qa")).unwrap();
    let cases = common::cases("question-answering");
    let mut windowed = 0;
    for case in &cases {
        let kw = &case["kwargs"];
        let usize_of = |k: &str| kw.get(k).map(|v| v.as_u64().unwrap() as usize);
        let bool_of = |k: &str, d: bool| kw.get(k).map_or(d, |v| v.as_bool().unwrap());
        let defaults = QaOptions::default();
        let opts = QaOptions {
            top_k: usize_of("top_k").unwrap_or(defaults.top_k),
            doc_stride: usize_of("doc_stride"),
            max_seq_len: usize_of("max_seq_len"),
            max_answer_len: usize_of("max_answer_len").unwrap_or(defaults.max_answer_len),
            handle_impossible_answer: bool_of("handle_impossible_answer", false),
            align_to_words: bool_of("align_to_words", true),
        };
        let (q, ctx) = (
            case["inputs"]["question"].as_str().unwrap(),
            case["inputs"]["context"].as_str().unwrap(),
        );
        if ctx.len() > 200 {
            windowed += 1;
        }
        let got = pipe.call(q, ctx, &opts).unwrap();
        let want: Vec<&Value> = match &case["output"] {
            Value::Array(a) => a.iter().collect(),
            one => vec![one],
        };
        assert_eq!(got.len(), want.len(), "case {}: {got:?}", case["id"]);
        for (g, w) in got.iter().zip(want) {
            let id = &case["id"];
            assert_eq!(
                g.answer,
                w["answer"].as_str().unwrap(),
                "case {id}: {got:?}"
            );
            assert_eq!(g.start as u64, w["start"].as_u64().unwrap(), "case {id}");
            assert_eq!(g.end as u64, w["end"].as_u64().unwrap(), "case {id}");
            let ws = w["score"].as_f64().unwrap() as f32;
            assert!(
                (g.score - ws).abs() < 1e-4,
                "case {id}: {} vs {ws}",
                g.score
            );
        }
    }
    assert_eq!(cases.len(), 19);
    assert!(windowed >= 5, "only {windowed} long-context cases");
}

#[test]
fn bad_input_is_refused() {
    let pipe = QuestionAnsweringPipeline::from_pretrained(&common::model("bert-qa")).unwrap();
    let opts = QaOptions::default();
    let err = |q: &str, c: &str, o: &QaOptions| pipe.call(q, c, o).unwrap_err().to_string();
    assert!(err("", "Paris", &opts).contains("question"));
    assert!(err("Where?", "", &opts).contains("context"));
    let top0 = QaOptions { top_k: 0, ..opts };
    assert!(err("Where?", "Paris", &top0).contains("top_k"));
    let stride = QaOptions {
        doc_stride: Some(40),
        max_seq_len: Some(32),
        ..opts
    };
    assert!(err("Where?", "Paris", &stride).contains("doc_stride"));
    // A question that leaves no room for the context in a window.
    let long_q = "where does john live ".repeat(10);
    let small = QaOptions {
        max_seq_len: Some(16),
        doc_stride: Some(4),
        ..opts
    };
    let e = err(&long_q, "John lives in London.", &small);
    assert!(e.contains("max_seq_len"), "{e}");
    // Windows beyond the model's positions.
    let big = QaOptions {
        max_seq_len: Some(100),
        ..opts
    };
    assert!(err("Where?", "Paris", &big).contains("max_seq_len"));
    // A checkpoint without a QA head.
    let e = QuestionAnsweringPipeline::from_pretrained(&common::model("bert-mlm"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("qa_outputs"), "{e}");
}

/// The windows a long context is cut into (ids, type ids, sequence ids, offsets) equal
/// transformers' tokenizer call, for two window sizes.
#[test]
fn windows_equal_transformers_tokenizer() {
    use ferro_tokenizers::{AutoTokenizer, PairStrategy, PairTruncation};
    let goldens: Value =
        serde_json::from_str(&std::fs::read_to_string(common::dir().join("goldens.json")).unwrap())
            .unwrap();
    let tok = AutoTokenizer::from_pretrained(&common::model("bert-qa")).unwrap();
    for set in goldens["heads"]["bert-qa"]["windows"].as_array().unwrap() {
        let truncation = PairTruncation {
            max_length: set["max_seq_len"].as_u64().unwrap() as usize,
            strategy: PairStrategy::OnlySecond,
            stride: set["doc_stride"].as_u64().unwrap() as usize,
        };
        let context = goldens["inputs"][set["context_input"].as_u64().unwrap() as usize]
            .as_str()
            .unwrap();
        let mut enc = tok
            .encode_pair(set["question"].as_str().unwrap(), context, Some(truncation))
            .unwrap();
        let overflowing = enc.take_overflowing();
        let got: Vec<_> = std::iter::once(enc).chain(overflowing).collect();
        let want = set["windows"].as_array().unwrap();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            let ids: Vec<u32> = serde_json::from_value(w["input_ids"].clone()).unwrap();
            let types: Vec<u32> = serde_json::from_value(w["token_type_ids"].clone()).unwrap();
            let seqs: Vec<Option<usize>> =
                serde_json::from_value(w["sequence_ids"].clone()).unwrap();
            let offsets: Vec<(usize, usize)> =
                serde_json::from_value(w["offsets"].clone()).unwrap();
            assert_eq!(g.get_ids(), ids);
            assert_eq!(g.get_type_ids(), types);
            assert_eq!(g.get_sequence_ids(), seqs);
            assert_eq!(g.get_offsets(), offsets);
        }
    }
}
