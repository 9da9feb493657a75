//! The BERT-family task heads (BERT, RoBERTa, DistilBERT) on tiny random checkpoints (tests/fixtures/encoders/tiny, made by
//! scripts/make_tiny_encoders.py with transformers 5.24): logits within 1e-4 of
//! transformers' on the committed inputs, one at a time and as a padded batch.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use ferro_core::{HubOptions, ModelSource};
use ferro_models::{
    BertForMaskedLM, BertForQuestionAnswering, BertForSequenceClassification,
    BertForTokenClassification, LoadOptions,
};
use serde_json::Value;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/encoders/tiny")
}

fn goldens() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("goldens.json")).unwrap()).unwrap()
}

fn source(name: &str) -> ModelSource {
    ModelSource::resolve(dir().join(name).to_str().unwrap(), &HubOptions::from_env()).unwrap()
}

fn ids(v: &Value, key: &str) -> Tensor {
    let rows: Vec<Vec<u32>> = match &v[key] {
        Value::Array(a) if a.first().is_some_and(Value::is_array) => a
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as u32)
                    .collect()
            })
            .collect(),
        Value::Array(a) => vec![a.iter().map(|x| x.as_u64().unwrap() as u32).collect()],
        _ => panic!("no {key}"),
    };
    let (b, t) = (rows.len(), rows[0].len());
    Tensor::from_vec(rows.concat(), (b, t), &Device::Cpu).unwrap()
}

fn flat(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(a) => a.iter().flat_map(flat).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap() as f32],
        _ => panic!("not numbers: {v}"),
    }
}

fn assert_close(got: &Tensor, want: &Value, what: &str) {
    let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
    let want = flat(want);
    assert_eq!(got.len(), want.len(), "{what}: sizes");
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
        .fold(0f32, f32::max);
    assert!(worst < 1e-4, "{what}: logits differ by up to {worst}");
}

fn inputs(g: &Value, model: &str) -> Vec<Value> {
    let h = &g["heads"][model];
    let mut all: Vec<Value> = h["inputs"].as_array().unwrap().clone();
    if !h["batch"].is_null() {
        all.push(h["batch"].clone());
    }
    all
}

#[test]
fn sequence_classification_logits_equal_transformers() {
    let g = goldens();
    let opts = LoadOptions::default();
    let models = [
        "bert-seq-cls",
        "bert-seq-cls-multi",
        "bert-nli",
        "roberta-seq-cls",
        "distilbert-seq-cls",
    ];
    for name in models {
        let m = BertForSequenceClassification::from_source(&source(name), &opts).unwrap();
        for case in inputs(&g, name) {
            let input_ids = ids(&case, "input_ids");
            // RoBERTa's and DistilBERT's tokenizers give no token types.
            let types = if case["token_type_ids"].is_null() {
                input_ids.zeros_like().unwrap()
            } else {
                ids(&case, "token_type_ids")
            };
            let y = m
                .forward(&input_ids, &types, &ids(&case, "attention_mask"))
                .unwrap();
            assert_close(&y, &case["logits"], &format!("{name}: {}", case["text"]));
        }
    }
    let m = BertForSequenceClassification::from_source(&source("bert-seq-cls"), &opts).unwrap();
    assert_eq!(
        m.bert.config.labels().unwrap(),
        ["negative", "neutral", "positive"]
    );
    // RoBERTa's positions start at padding_idx + 1: 66 positions take 64 tokens.
    let m = BertForSequenceClassification::from_source(&source("roberta-seq-cls"), &opts).unwrap();
    assert_eq!(m.bert.config.max_tokens(), 64);
}

#[test]
fn token_qa_and_masked_lm_logits_equal_transformers() {
    let g = goldens();
    let opts = LoadOptions::default();
    let tok = BertForTokenClassification::from_source(&source("bert-token-cls"), &opts).unwrap();
    for case in inputs(&g, "bert-token-cls") {
        let y = tok
            .forward(
                &ids(&case, "input_ids"),
                &ids(&case, "token_type_ids"),
                &ids(&case, "attention_mask"),
            )
            .unwrap();
        assert_close(&y, &case["logits"], &format!("token-cls: {}", case["text"]));
    }
    let qa = BertForQuestionAnswering::from_source(&source("bert-qa"), &opts).unwrap();
    for case in inputs(&g, "bert-qa") {
        let (s, e) = qa
            .forward(
                &ids(&case, "input_ids"),
                &ids(&case, "token_type_ids"),
                &ids(&case, "attention_mask"),
            )
            .unwrap();
        assert_close(
            &s,
            &case["start_logits"],
            &format!("qa start: {}", case["text"]),
        );
        assert_close(
            &e,
            &case["end_logits"],
            &format!("qa end: {}", case["text"]),
        );
    }
    let mlm = BertForMaskedLM::from_source(&source("bert-mlm"), &opts).unwrap();
    // The fixture keeps the vocabulary-wide logits of its first inputs only.
    for case in inputs(&g, "bert-mlm")
        .into_iter()
        .filter(|c| !c["logits"].is_null())
    {
        let y = mlm
            .forward(
                &ids(&case, "input_ids"),
                &ids(&case, "token_type_ids"),
                &ids(&case, "attention_mask"),
            )
            .unwrap();
        assert_close(&y, &case["logits"], &format!("mlm: {}", case["text"]));
    }
}

#[test]
fn a_head_the_checkpoint_lacks_is_a_clear_error() {
    let opts = LoadOptions::default();
    // A masked-LM checkpoint has no classifier; a classifier has no qa_outputs.
    let err = BertForSequenceClassification::from_source(&source("bert-mlm"), &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("classifier.weight"), "{err}");
    let err = BertForQuestionAnswering::from_source(&source("bert-seq-cls"), &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("qa_outputs"), "{err}");
}

/// The states of a padded batch computed without its padding (`forward_unpadded`: every
/// per-token layer on the tokens only) are `forward`'s at the tokens, zeros at the padding;
/// with 16-bit products (`MatmulPrecision::High`) they stay close to f32's.
#[test]
fn unpadded_states_equal_padded_ones() {
    let g = goldens();
    for name in ["bert-seq-cls", "roberta-seq-cls", "distilbert-seq-cls"] {
        // The model's single inputs, right-padded into one batch with its pad token.
        let rows: Vec<Vec<u32>> = g["heads"][name]["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|case| {
                ids(case, "input_ids")
                    .squeeze(0)
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            })
            .collect();
        let pad = if name.starts_with("roberta") { 1 } else { 0 };
        let t = rows.iter().map(Vec::len).max().unwrap();
        let b = rows.len();
        assert!(
            b > 1 && rows.iter().any(|r| r.len() < t),
            "{name}: inputs of one length"
        );
        let padded_ids: Vec<u32> = rows
            .iter()
            .flat_map(|r| r.iter().copied().chain(std::iter::repeat(pad)).take(t))
            .collect();
        let mask_rows: Vec<u32> = rows
            .iter()
            .flat_map(|r| (0..t).map(|j| u32::from(j < r.len())))
            .collect();
        let input_ids = Tensor::from_vec(padded_ids, (b, t), &Device::Cpu).unwrap();
        let types = input_ids.zeros_like().unwrap();
        let mask = Tensor::from_vec(mask_rows, (b, t), &Device::Cpu).unwrap();
        let keep: Vec<f32> = mask
            .flatten_all()
            .unwrap()
            .to_dtype(candle_core::DType::F32)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(keep.contains(&0.0), "{name}: the batch has no padding");
        let states = |precision| {
            let opts = LoadOptions {
                matmul_precision: precision,
                ..LoadOptions::default()
            };
            let m = BertForSequenceClassification::from_source(&source(name), &opts).unwrap();
            let padded = m.bert.forward(&input_ids, &types, &mask).unwrap();
            let unpadded = m.bert.forward_unpadded(&input_ids, &types, &mask).unwrap();
            assert_eq!(padded.dims(), unpadded.dims());
            let h = padded.dim(2).unwrap();
            let rows =
                |t: &Tensor| -> Vec<Vec<f32>> { t.flatten_to(1).unwrap().to_vec2().unwrap() };
            let (p, u) = (rows(&padded), rows(&unpadded));
            for (i, &k) in keep.iter().enumerate() {
                if k == 0.0 {
                    assert_eq!(u[i], vec![0.0; h], "{name}: padding position {i}");
                } else {
                    let worst = p[i]
                        .iter()
                        .zip(&u[i])
                        .map(|(a, b)| (a - b).abs())
                        .fold(0f32, f32::max);
                    assert!(
                        worst < 1e-5,
                        "{name} {precision:?}: token {i} differs by {worst}"
                    );
                }
            }
            u
        };
        let f32_states = states(ferro_models::MatmulPrecision::Highest);
        let int16_states = states(ferro_models::MatmulPrecision::High);
        let worst = f32_states
            .iter()
            .flatten()
            .zip(int16_states.iter().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // LayerNorm outputs of size ~1: 14-bit operands keep them within ~1e-3.
        assert!(
            worst < 2e-3,
            "{name}: 16-bit products differ from f32 by {worst}"
        );
        eprintln!("{name}: 16-bit products within {worst} of f32");
    }
}
