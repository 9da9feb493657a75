//! all-MiniLM-L6-v2 against sentence-transformers 6.2.0 (tests/fixtures/encoders, made by
//! scripts/make_encoder_refs.py): the same token ids, embeddings within cosine 0.99999 of
//! its `encode` (batched here, one at a time there), token states (the feature-extraction
//! pipeline) within 1e-4 of transformers' `last_hidden_state`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use ferro_core::PackagedModel;
use ferro_models::{LoadOptions, MatmulPrecision};
use ferro_pipelines::{FeatureExtractionPipeline, SentenceTransformer};
use serde_json::Value;

fn reference() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/encoders/all-MiniLM-L6-v2.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn model() -> SentenceTransformer {
    model_at(SentenceTransformer::default_load_options().matmul_precision)
}

fn model_at(precision: MatmulPrecision) -> SentenceTransformer {
    let dir = PackagedModel::AllMiniLmL6V2
        .require()
        .unwrap_or_else(|e| panic!("{e}"));
    let opts = LoadOptions {
        matmul_precision: precision,
        ..LoadOptions::default()
    };
    SentenceTransformer::from_pretrained_with(dir.to_str().unwrap(), &opts).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn embeddings_equal_sentence_transformers() {
    // By default 16-bit products where the CPU has AVX-512 VNNI; f32 products on request.
    assert_eq!(
        SentenceTransformer::default_load_options().matmul_precision,
        MatmulPrecision::High
    );
    for precision in [MatmulPrecision::High, MatmulPrecision::Highest] {
        let model = model_at(precision);
        let expected = if ferro_nn::int16_matmul::supported() {
            precision
        } else {
            MatmulPrecision::Highest
        };
        assert_eq!(model.matmul_precision(), expected);
        eprintln!("matmul precision {precision:?} (runs as {expected:?})");
        embeddings_of(&model);
    }
}

fn embeddings_of(model: &SentenceTransformer) {
    let refs = reference();
    assert_eq!(model.max_seq_length(), 256);
    let sentences: Vec<&Value> = refs["sentences"].as_array().unwrap().iter().collect();
    assert_eq!(sentences.len(), 50);
    let texts: Vec<&str> = sentences
        .iter()
        .map(|s| s["text"].as_str().unwrap())
        .collect();
    for s in &sentences {
        let ids: Vec<u32> = s["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            model.tokenize(s["text"].as_str().unwrap()).unwrap(),
            ids,
            "{}",
            s["text"]
        );
    }
    // Batches of 32 and 7, sorted by length, padded: each within cosine 0.99999.
    for batch in [32, 7] {
        let got = model.encode(&texts, batch).unwrap();
        let mut worst = 1.0f64;
        for (s, g) in sentences.iter().zip(&got) {
            let want = floats(&s["embedding"]);
            let c = cosine(g, &want);
            worst = worst.min(c);
            assert!(c >= 0.99999, "{}: cosine {c}", s["text"]);
            let norm: f32 = g.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "not normalized: {norm}");
        }
        eprintln!("batch {batch}: worst cosine {worst}");
    }
}

#[test]
fn token_states_equal_transformers() {
    let refs = reference();
    let dir = PackagedModel::AllMiniLmL6V2
        .require()
        .unwrap_or_else(|e| panic!("{e}"));
    let model = FeatureExtractionPipeline::from_pretrained(dir.to_str().unwrap()).unwrap();
    for t in refs["token_level"].as_array().unwrap() {
        let got = model
            .call(t["sentence"].as_str().unwrap(), false)
            .unwrap()
            .remove(0);
        let want: Vec<Vec<f32>> = t["last_hidden_state"]
            .as_array()
            .unwrap()
            .iter()
            .map(floats)
            .collect();
        assert_eq!(got.len(), want.len());
        let worst = got
            .iter()
            .flatten()
            .zip(want.iter().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "{}: states differ by {worst}", t["sentence"]);
    }
}

#[test]
fn bad_input_is_refused_or_handled() {
    let model = model();
    // An empty string is [CLS] [SEP], as sentence-transformers embeds it.
    let v = model.encode(&[""], 4).unwrap();
    assert_eq!(v[0].len(), 384);
    // Longer than max_seq_length: truncated to 256 tokens, keeping [SEP].
    let long = "word ".repeat(600);
    let ids = model.tokenize(&long).unwrap();
    assert_eq!(ids.len(), 256);
    assert_eq!(ids[255], 102);
    let err = model.encode(&["x"], 0).unwrap_err().to_string();
    assert!(err.contains("batch_size"), "{err}");
    let err = SentenceTransformer::from_pretrained("/nonexistent/model")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("/nonexistent/model"), "{err}");
}

/// Semantic search over the 50 sentences ranks the same passages as sentence-transformers'
/// `util.semantic_search`, scores within 1e-4 (tests/fixtures/encoders/semantic_search.json,
/// made by scripts/make_semantic_search_refs.py), with f32 products (16-bit ones move
/// scores by up to ~1e-3).
#[test]
fn semantic_search_equals_sentence_transformers() {
    use ferro_pipelines::SemanticSearch;
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/encoders");
    let corpus: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("sentences.json")).unwrap())
            .unwrap();
    let want: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures.join("semantic_search.json")).unwrap(),
    )
    .unwrap();
    let top_k = want["top_k"].as_u64().unwrap() as usize;
    let search =
        SemanticSearch::new(model_at(MatmulPrecision::Highest), corpus.clone(), 32).unwrap();
    for q in want["queries"].as_array().unwrap() {
        let hits = search.search(q["query"].as_str().unwrap(), top_k).unwrap();
        let expected = q["hits"].as_array().unwrap();
        assert_eq!(hits.len(), expected.len());
        for (h, w) in hits.iter().zip(expected) {
            assert_eq!(
                h.corpus_id as u64,
                w["corpus_id"].as_u64().unwrap(),
                "{}",
                q["query"]
            );
            assert_eq!(h.text, corpus[h.corpus_id]);
            assert!((f64::from(h.score) - w["score"].as_f64().unwrap()).abs() < 1e-4);
        }
    }
    let err = SemanticSearch::new(model(), Vec::new(), 32)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("corpus"), "{err}");
    assert!(search
        .search("x", 0)
        .unwrap_err()
        .to_string()
        .contains("top_k"));
}
