//! Each logits processor against transformers' class of the same name on the same random
//! scores and ids, and whole processor lists as `generate()` builds them from a
//! GenerationConfig (tests/fixtures/generation/processors.json, made by
//! scripts/make_logits_processor_refs.py with transformers 5.24).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use ferro_generate::processors::{
    LogitsProcessor, MinNewTokens, MinP, NoRepeatNGram, RepetitionPenalty, SequenceBias,
    Temperature, TopK, TopP, TypicalP,
};
use ferro_generate::{GenerationConfig, LogitsProcessorList, Sequence};
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/generation/processors.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Scores with -inf written as null.
fn scores(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().map_or(f32::NEG_INFINITY, |f| f as f32))
                .collect()
        })
        .collect()
}

fn ids(v: &Value) -> Vec<Vec<u32>> {
    serde_json::from_value(v.clone()).unwrap()
}

fn ids_or_one(v: &Value) -> Vec<u32> {
    match v {
        Value::Null => Vec::new(),
        Value::Array(_) => ids_list(v),
        _ => vec![v.as_u64().unwrap() as u32],
    }
}

fn ids_list(v: &Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

fn f(v: &Value) -> f32 {
    v.as_f64().unwrap() as f32
}

fn u(v: &Value) -> usize {
    v.as_u64().unwrap() as usize
}

fn sequence_bias(v: &Value) -> Vec<(Vec<u32>, f32)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|pair| (ids_list(&pair[0]), f(&pair[1])))
        .collect()
}

/// Our processor for a case, with the prompt length it assumes; `None` for transformers
/// processors we do not offer (their knobs are not in our GenerationConfig).
fn build(kind: &str, p: &Value) -> Option<(Box<dyn LogitsProcessor>, usize)> {
    let keep = || p.get("min_tokens_to_keep").map_or(1, u);
    Some(match kind {
        "temperature" => (Box::new(Temperature::new(f(&p["temperature"])).unwrap()), 0),
        "top_k" => (Box::new(TopK::new(u(&p["top_k"]), keep()).unwrap()), 0),
        "top_p" => (Box::new(TopP::new(f(&p["top_p"]), keep()).unwrap()), 0),
        "min_p" => (Box::new(MinP::new(f(&p["min_p"]), keep()).unwrap()), 0),
        "typical_p" => (Box::new(TypicalP::new(f(&p["mass"]), keep()).unwrap()), 0),
        "repetition_penalty" if p.get("prompt_ignore_length").is_none() => (
            Box::new(RepetitionPenalty::new(f(&p["penalty"])).unwrap()),
            0,
        ),
        "no_repeat_ngram_size" => (
            Box::new(NoRepeatNGram::new(u(&p["ngram_size"])).unwrap()),
            0,
        ),
        "bad_words_ids" => {
            let words: Vec<Vec<u32>> = serde_json::from_value(p["bad_words_ids"].clone()).unwrap();
            let eos = ids_or_one(&p["eos_token_id"]);
            (Box::new(SequenceBias::bad_words(&words, &eos).unwrap()), 0)
        }
        "sequence_bias" => (
            Box::new(SequenceBias::new(sequence_bias(&p["sequence_bias"])).unwrap()),
            0,
        ),
        "min_new_tokens" => (
            Box::new(MinNewTokens::new(
                u(&p["min_new_tokens"]),
                ids_or_one(&p["eos_token_id"]),
            )),
            u(&p["prompt_length_to_skip"]),
        ),
        _ => return None,
    })
}

/// Processors transformers has that we do not offer (no such knob in the list).
const NOT_OFFERED: &[&str] = &[
    "top_h",
    "epsilon",
    "eta",
    "min_length",
    "exponential_decay_length_penalty",
    "suppress_tokens",
    "begin_suppress_tokens",
    "forced_bos",
    "forced_eos",
    "repetition_penalty", // only its prompt_ignore_length cases end up here
];

fn assert_same(name: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_finite() {
            (g - w).abs() <= 1e-5 * w.abs().max(1.0)
        } else {
            g == w
        };
        assert!(ok, "{name}: token {i}: got {g}, transformers {w}");
    }
}

#[test]
fn each_processor_equals_transformers() {
    let r = fixture();
    let mut checked = 0;
    for case in r["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let kind = case["processor"].as_str().unwrap();
        let Some((proc_, prompt_len)) = build(kind, &case["params"]) else {
            assert!(
                NOT_OFFERED.contains(&kind),
                "{name}: unknown processor kind {kind}"
            );
            continue;
        };
        let input_ids = ids(&case["input_ids"]);
        let expected = scores(&case["expected"]);
        for (row, (ids, mut s)) in input_ids.iter().zip(scores(&case["scores"])).enumerate() {
            proc_.process(Sequence { ids, prompt_len }, &mut s);
            let label = format!("{name} row {row}");
            if name.contains("ties_straddle_torch_order") {
                // transformers' top-p sorts with torch's unstable sort: which of the tied
                // tokens survive is arbitrary there, only how many is defined.
                let kept = |v: &[f32]| v.iter().filter(|x| x.is_finite()).count();
                assert_eq!(kept(&s), kept(&expected[row]), "{label}: tokens kept");
            } else {
                assert_same(&label, &s, &expected[row]);
            }
        }
        checked += 1;
    }
    assert_eq!(checked, 33, "cases checked");
}

/// Whole lists as generate() builds them: same processors, same order, same scores.
#[test]
fn processor_lists_equal_transformers_generate() {
    let r = fixture();
    let mut checked = 0;
    for p in r["pipelines"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let names: Vec<&str> = p["processors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        let unsupported = [
            "ExponentialDecayLengthPenalty",
            "SuppressTokensLogitsProcessor",
        ];
        if names.iter().any(|n| unsupported.contains(n)) {
            continue;
        }
        let mut cfg = GenerationConfig::default();
        cfg.update(&p["generation_config"]).unwrap();
        let eos = cfg.eos_token_ids.clone().unwrap_or_default();
        let list = LogitsProcessorList::from_config(&cfg, &eos).unwrap();
        // transformers also adds MinLength(prompt + min_new_tokens) next to MinNewTokens;
        // the two suppress eos over the same steps.
        let want: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| *n != "MinLengthLogitsProcessor")
            .collect();
        assert_eq!(list.names(), want, "{name}: processors and order");
        let prompt_len = u(&p["prompt_length"]);
        let mask = ids(&p["attention_mask"]);
        let expected = scores(&p["expected"]);
        for (row, (ids, mut s)) in ids(&p["input_ids"])
            .iter()
            .zip(scores(&p["scores"]))
            .enumerate()
        {
            // Left padding is not part of the sequence.
            let pad = mask[row].iter().take_while(|&&m| m == 0).count();
            list.process(
                Sequence {
                    ids: &ids[pad..],
                    prompt_len: prompt_len - pad,
                },
                &mut s,
            );
            assert_same(&format!("{name} row {row}"), &s, &expected[row]);
        }
        checked += 1;
    }
    assert_eq!(checked, 4);
}
