//! Speculative decoding on the tiny checkpoints (offline, fast): prompt lookup and an
//! assistant model give exactly the tokens of plain greedy decoding, with drafts both
//! confirmed and rejected along the way; a forward pass over several tokens gives the
//! same logits, bit for bit, as one token at a time on the quantized kernels (what keeps a
//! GGUF model's output identical even at near-ties); misuse is refused with the parameter
//! named.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::ops::ControlFlow;
use std::path::PathBuf;

use candle_core::Tensor;
use ferro_generate::{
    generate_text, generate_text_assisted, Generate, GenerateOutput, GenerationConfig,
};
use ferro_models::{AutoModelForCausalLM, CausalLm, LoadOptions};
use ferro_tokenizers::{AutoTokenizer, Tokenizer};

fn tiny(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/causal_lm/tiny")
        .join(name)
}

fn load(path: PathBuf) -> CausalLm {
    AutoModelForCausalLM::from_pretrained(path.to_str().unwrap(), &LoadOptions::default()).unwrap()
}

/// Prompts that repeat themselves (so that lookups find n-grams) and one that does not.
fn prompts() -> Vec<Vec<u32>> {
    let phrase: Vec<u32> = vec![17, 4, 99, 23, 61, 8, 140, 5, 77];
    let mut twice = phrase.clone();
    twice.extend_from_slice(&[200, 201]);
    twice.extend_from_slice(&phrase[..4]);
    vec![
        twice,
        (0..40).map(|i| (i * 37 % 251) as u32).collect(),
        vec![3, 9, 27, 81],
    ]
}

fn tokenizer() -> Tokenizer {
    AutoTokenizer::from_pretrained(
        tiny("llama_gguf")
            .join("tiny-llama-f32.gguf")
            .to_str()
            .unwrap(),
    )
    .unwrap()
}

fn quiet(_: ferro_generate::TokenEvent<'_>) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

fn greedy() -> GenerationConfig {
    GenerationConfig {
        eos_token_ids: Some(Vec::new()),
        ..GenerationConfig::greedy(40)
    }
}

#[test]
fn prompt_lookup_gives_the_greedy_tokens() {
    let tok = tokenizer();
    let (mut drafted, mut accepted) = (0, 0);
    for name in ["llama", "qwen2", "gemma3"] {
        let model = load(tiny(name));
        for (i, prompt) in prompts().into_iter().enumerate() {
            let plain = model.generate(&prompt, &greedy()).unwrap();
            for (tokens, ngram) in [(3, 2), (10, 3), (14, 1)] {
                let cfg = GenerationConfig {
                    prompt_lookup_num_tokens: Some(tokens),
                    max_matching_ngram_size: ngram,
                    ..greedy()
                };
                let spec = generate_text(
                    &model,
                    &tok,
                    std::slice::from_ref(&prompt),
                    &cfg,
                    &mut quiet,
                )
                .unwrap();
                assert_eq!(
                    spec.new_tokens(0),
                    plain.new_tokens(0),
                    "{name}, prompt {i}, {tokens} tokens / {ngram}-grams"
                );
                let stats = spec.speculation.unwrap();
                assert!(stats.accepted <= stats.drafted);
                // Every pass yields one token plus its confirmed drafts.
                assert_eq!(stats.verify_passes + stats.accepted, 40 - 1, "{name}");
                drafted += stats.drafted;
                accepted += stats.accepted;
            }
        }
    }
    // Both paths ran: drafts confirmed and drafts rejected.
    assert!(
        accepted > 0 && accepted < drafted,
        "{accepted} of {drafted}"
    );
}

#[test]
fn an_assistant_model_gives_the_greedy_tokens() {
    let tok = tokenizer();
    let model = load(tiny("qwen2"));
    for (assistant, name) in [
        (load(tiny("qwen2")), "itself"),
        (load(tiny("llama")), "llama"),
    ] {
        for (i, prompt) in prompts().into_iter().enumerate() {
            let plain = model.generate(&prompt, &greedy()).unwrap();
            let out: GenerateOutput = generate_text_assisted(
                &model,
                &assistant,
                &tok,
                std::slice::from_ref(&prompt),
                &greedy(),
                &mut quiet,
            )
            .unwrap();
            assert_eq!(
                out.new_tokens(0),
                plain.new_tokens(0),
                "assistant {name}, prompt {i}"
            );
            let stats = out.speculation.unwrap();
            if name == "itself" {
                // A model drafting for itself is right but for near-ties (these dense
                // weights go through GEMM kernels whose last bits depend on the row count).
                assert!(
                    stats.accepted * 10 >= stats.drafted * 9,
                    "prompt {i}: {stats:?}"
                );
                assert!(stats.verify_passes < 40 / 3, "{stats:?}");
            } else {
                assert!(stats.accepted < stats.drafted, "prompt {i}: {stats:?}");
            }
        }
    }
}

#[test]
fn sampling_with_drafts_is_reproducible() {
    let tok = tokenizer();
    let model = load(tiny("llama"));
    let cfg = GenerationConfig {
        do_sample: true,
        seed: 7,
        prompt_lookup_num_tokens: Some(5),
        ..greedy()
    };
    let run = || generate_text(&model, &tok, &[prompts()[0].clone()], &cfg, &mut quiet).unwrap();
    let (a, b) = (run(), run());
    assert_eq!(a.sequences, b.sequences);
    assert_eq!(a.new_tokens(0).len(), 40);
}

/// Logits of tokens fed together equal those of the same tokens fed one by one: exactly on
/// the quantized kernels (each input row is summed the same way whatever the row count),
/// to the last bits with f32 weights (the GEMM kernel depends on the row count).
#[test]
fn several_tokens_at_once_equal_one_at_a_time() {
    for file in [
        "tiny-llama-q8_0.gguf",
        "tiny-llama-q4_0.gguf",
        "tiny-llama-f32.gguf",
    ] {
        let model = load(tiny("llama_gguf").join(file));
        let ids: Vec<u32> = (0..12).map(|i| (i * 29 % 256) as u32).collect();
        let (prompt, rest) = ids.split_at(5);
        let tensor = |t: &[u32]| Tensor::new(t, &model.device).unwrap().unsqueeze(0).unwrap();
        let mut together = model.new_cache();
        model.forward(&tensor(prompt), &mut together, true).unwrap();
        let all: Vec<Vec<f32>> = model
            .forward(&tensor(rest), &mut together, false)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2()
            .unwrap();
        let mut one = model.new_cache();
        model.forward(&tensor(prompt), &mut one, true).unwrap();
        for (i, &t) in rest.iter().enumerate() {
            let step: Vec<f32> = model
                .forward(&tensor(&[t]), &mut one, true)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            if file.contains("f32") {
                for (a, b) in step.iter().zip(&all[i]) {
                    assert!(
                        (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                        "{file}: token {i}"
                    );
                }
            } else {
                assert_eq!(step, all[i], "{file}: token {i}");
            }
        }
        // Taking back slots: the cache continues as if they had never been fed.
        together.truncate(7);
        let mut fresh = model.new_cache();
        model.forward(&tensor(&ids[..7]), &mut fresh, true).unwrap();
        let a = model.forward(&tensor(&[9]), &mut together, true).unwrap();
        let b = model.forward(&tensor(&[9]), &mut fresh, true).unwrap();
        let (a, b): (Vec<f32>, Vec<f32>) = (
            a.flatten_all().unwrap().to_vec1().unwrap(),
            b.flatten_all().unwrap().to_vec1().unwrap(),
        );
        for (x, y) in a.iter().zip(&b) {
            assert!(
                (x - y).abs() <= 1e-5 * x.abs().max(1.0),
                "{file}: after truncate"
            );
        }
    }
}

#[test]
fn misuse_names_the_parameter() {
    let tok = tokenizer();
    let model = load(tiny("llama"));
    let cfg = GenerationConfig {
        prompt_lookup_num_tokens: Some(4),
        ..greedy()
    };
    let e = model
        .generate_batch(&prompts(), &cfg)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("prompt_lookup_num_tokens") && e.contains("one sequence"),
        "{e}"
    );
    let e = GenerationConfig {
        num_beams: 2,
        ..cfg.clone()
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(e.contains("prompt_lookup_num_tokens"), "{e}");
    let e = generate_text_assisted(&model, &model, &tok, &prompts()[..1], &cfg, &mut quiet)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not both"), "{e}");
}
