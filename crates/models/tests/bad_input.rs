//! Broken checkpoints give a clear error naming the file or tensor: never a panic or a
//! huge allocation.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::{Path, PathBuf};

use ferro_core::gguf::writer::{with_tensors, RawTensor};
use ferro_core::GgufValue;
use ferro_models::{AutoModelForCausalLM, LoadOptions};

fn tiny(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/causal_lm/tiny")
        .join(name)
}

/// A copy of the tiny Llama folder in a temp dir, to break.
fn copy_tiny() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "generation_config.json", "model.safetensors"] {
        std::fs::copy(tiny("llama").join(f), dir.path().join(f)).unwrap();
    }
    dir
}

fn load_err(path: &Path) -> String {
    match AutoModelForCausalLM::from_pretrained(path.to_str().unwrap(), &LoadOptions::default()) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn truncated_safetensors() {
    let dir = copy_tiny();
    let f = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("model.safetensors"), "{e}");
}

#[test]
fn safetensors_header_larger_than_the_file() {
    let dir = copy_tiny();
    let f = dir.path().join("model.safetensors");
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    std::fs::write(&f, &bytes).unwrap();
    let e = load_err(dir.path());
    assert!(
        e.contains("model.safetensors") && e.contains("header claims"),
        "{e}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let dir = copy_tiny();
    let f = dir.path().join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&f, &candle_core::Device::Cpu).unwrap();
    tensors.remove("model.layers.1.mlp.up_proj.weight").unwrap();
    candle_core::safetensors::save(&tensors, &f).unwrap();
    let e = load_err(dir.path());
    assert!(
        e.contains("model.layers.1.mlp.up_proj.weight") && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn wrong_shape_is_named() {
    let dir = copy_tiny();
    let cfg = dir.path().join("config.json");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"intermediate_size\": 128", "\"intermediate_size\": 96");
    std::fs::write(&cfg, text).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("gate_proj.weight") && e.contains("shape"), "{e}");
}

#[test]
fn unsupported_architecture_and_absurd_config() {
    let dir = copy_tiny();
    let cfg = dir.path().join("config.json");
    let original = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        original.replace("\"model_type\": \"llama\"", "\"model_type\": \"gpt_neox\""),
    )
    .unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("gpt_neox") && e.contains("not supported"), "{e}");
    std::fs::write(
        &cfg,
        original.replace(
            "\"num_hidden_layers\": 2",
            "\"num_hidden_layers\": 4000000000",
        ),
    )
    .unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("num_hidden_layers"), "{e}");
    std::fs::write(&cfg, "{\"model_type\": ").unwrap();
    let e = load_err(dir.path());
    assert!(
        e.contains("config.json") && e.contains("invalid JSON"),
        "{e}"
    );
}

/// The metadata of a 1-layer qwen2 GGUF with hidden size 32.
fn qwen2_meta() -> Vec<(&'static str, GgufValue)> {
    let u = |v: u32| GgufValue::U32(v);
    vec![
        ("general.architecture", GgufValue::String("qwen2".into())),
        ("qwen2.embedding_length", u(32)),
        ("qwen2.feed_forward_length", u(64)),
        ("qwen2.block_count", u(1)),
        ("qwen2.attention.head_count", u(2)),
        ("qwen2.attention.head_count_kv", u(1)),
        ("qwen2.context_length", u(64)),
        ("qwen2.vocab_size", u(16)),
    ]
}

fn write_gguf(dir: &Path, tensors: &[RawTensor]) -> PathBuf {
    let p = dir.join("m.gguf");
    std::fs::write(&p, with_tensors(&qwen2_meta(), tensors)).unwrap();
    p
}

#[test]
fn gguf_tensor_errors() {
    let dir = tempfile::tempdir().unwrap();
    let emb = vec![0u8; 16 * 32 * 4];
    // Absurd dimensions: the product overflows.
    let p = write_gguf(
        dir.path(),
        &[RawTensor {
            name: "token_embd.weight",
            dims: vec![1 << 40, 1 << 40],
            ggml_type: 0,
            data: &emb,
        }],
    );
    let e = load_err(&p);
    assert!(
        e.contains("token_embd.weight") && e.contains("absurd"),
        "{e}"
    );
    // A tensor claiming more bytes than the file holds.
    let p = write_gguf(
        dir.path(),
        &[RawTensor {
            name: "token_embd.weight",
            dims: vec![32, 1 << 20],
            ggml_type: 0,
            data: &emb,
        }],
    );
    let e = load_err(&p);
    assert!(
        e.contains("token_embd.weight") && e.contains("file holds"),
        "{e}"
    );
    // An unknown quantization type.
    let p = write_gguf(
        dir.path(),
        &[RawTensor {
            name: "token_embd.weight",
            dims: vec![32, 16],
            ggml_type: 99,
            data: &emb,
        }],
    );
    let e = load_err(&p);
    assert!(
        e.contains("token_embd.weight") && e.contains("ggml type 99"),
        "{e}"
    );
    // A valid embedding but nothing else: the first missing tensor is named, with its GGUF name.
    let p = write_gguf(
        dir.path(),
        &[RawTensor {
            name: "token_embd.weight",
            dims: vec![32, 16],
            ggml_type: 0,
            data: &emb,
        }],
    );
    let e = load_err(&p);
    assert!(
        e.contains("model.layers.0.input_layernorm.weight") && e.contains("blk.0.attn_norm.weight"),
        "{e}"
    );
    // Truncated inside the header.
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..40]).unwrap();
    let e = load_err(&p);
    assert!(e.contains("m.gguf"), "{e}");
}

#[test]
fn unsupported_gguf_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.gguf");
    std::fs::write(
        &p,
        with_tensors(
            &[("general.architecture", GgufValue::String("rwkv7".into()))],
            &[],
        ),
    )
    .unwrap();
    let e = load_err(&p);
    assert!(e.contains("rwkv7") && e.contains("not supported"), "{e}");
}

#[test]
fn prompt_longer_than_the_context() {
    let model = AutoModelForCausalLM::from_pretrained(
        tiny("llama").to_str().unwrap(),
        &LoadOptions::default(),
    )
    .unwrap();
    let ids: Vec<u32> = (0..200).map(|i| 3 + i % 200).collect();
    let x = candle_core::Tensor::new(ids.as_slice(), &model.device)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let e = model
        .forward(&x, &mut model.new_cache(), true)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("input_ids") && e.contains("context of 128"),
        "{e}"
    );
}
