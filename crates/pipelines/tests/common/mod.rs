//! The tiny encoder checkpoints and transformers' pipeline outputs on them
//! (tests/fixtures/encoders/tiny, made by scripts/make_tiny_encoders.py).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // each test uses a part

use std::path::PathBuf;

use serde_json::Value;

/// The folder of the tiny checkpoints.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/encoders/tiny")
}

/// A tiny checkpoint's path, as the pipelines take it.
pub fn model(name: &str) -> String {
    dir().join(name).to_str().unwrap().to_string()
}

/// transformers' recorded cases for `task`.
pub fn cases(task: &str) -> Vec<Value> {
    let goldens: Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("goldens.json")).unwrap())
            .unwrap();
    goldens["pipelines"][task].as_array().unwrap().clone()
}

/// A JSON array of numbers as f32.
pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}
