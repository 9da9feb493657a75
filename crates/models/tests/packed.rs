//! Packed steps (a serving engine's batch): several sequences, each continuing its own
//! cache with one or many tokens, in one forward call give each sequence the logits it
//! gets alone; a copied cache prefix continues like the original.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::PathBuf;

use candle_core::Tensor;
use ferro_models::{AutoModelForCausalLM, CausalLm, LoadOptions};
use ferro_nn::Cache;

fn load(name: &str) -> CausalLm {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/causal_lm/tiny")
        .join(name);
    AutoModelForCausalLM::from_pretrained(path.to_str().unwrap(), &LoadOptions::default()).unwrap()
}

/// Last logits of `tokens` fed after what `cache` holds, one sequence alone.
fn alone(model: &CausalLm, cache: &mut Cache, tokens: &[u32]) -> Vec<f32> {
    let ids = Tensor::new(tokens, &model.device)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let logits = model.forward(&ids, cache, true).unwrap();
    logits.flatten_all().unwrap().to_vec1().unwrap()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-4, "{what}: logits differ by up to {worst}");
}

#[test]
fn packed_sequences_equal_each_alone() {
    for name in ["llama", "qwen2", "mistral", "gemma3"] {
        let model = load(name);
        let prompts: [&[u32]; 3] = [&[5, 17, 30, 2, 9], &[44, 3, 8], &[1, 2, 3, 4, 5, 6, 7]];
        let next: [u32; 3] = [11, 12, 13];
        // Alone: each prompt, then one token.
        let mut want = Vec::new();
        for (p, &t) in prompts.iter().zip(&next) {
            let mut cache = model.new_cache();
            let first = alone(&model, &mut cache, p);
            let second = alone(&model, &mut cache, &[t]);
            want.push((first, second));
        }
        // Packed: the three prompts in one call, then a step mixing decoding (0 and 1) and
        // a second chunk of a prompt (2 restarts from a copy of its first 4 slots).
        let mut caches: Vec<Cache> = (0..3).map(|_| model.new_cache()).collect();
        let logits = {
            let mut seqs: Vec<(&[u32], &mut Cache)> =
                prompts.iter().copied().zip(caches.iter_mut()).collect();
            model.forward_packed(&mut seqs).unwrap()
        };
        assert_eq!(logits.dims(), &[3, model.config.vocab_size]);
        let rows: Vec<Vec<f32>> = logits.to_vec2().unwrap();
        for (i, row) in rows.iter().enumerate() {
            assert_close(row, &want[i].0, &format!("{name}: prompt {i} packed"));
        }
        let mut restarted = caches[2].copy_prefix(4).unwrap();
        assert_eq!(restarted.len(), 4);
        let (c0, rest) = caches.split_at_mut(1);
        let rest_of_prompt = [&prompts[2][4..], &[next[2]][..]].concat();
        let mut seqs: Vec<(&[u32], &mut Cache)> = vec![
            (&next[0..1], &mut c0[0]),
            (&next[1..2], &mut rest[0]),
            (&rest_of_prompt, &mut restarted),
        ];
        let rows: Vec<Vec<f32>> = model.forward_packed(&mut seqs).unwrap().to_vec2().unwrap();
        for (i, row) in rows.iter().enumerate() {
            assert_close(row, &want[i].1, &format!("{name}: step 2, sequence {i}"));
        }
        // The copy shares nothing: the original still continues as before.
        assert_eq!(caches[2].len(), 7);
        let again = alone(&model, &mut caches[2], &next[2..3]);
        assert_close(
            &again,
            &want[2].1,
            &format!("{name}: original after the copy"),
        );
    }
}

/// A decode step (one token per sequence) gives each sequence exactly the bits it gets
/// alone, over caches of different lengths: what makes a server's greedy output equal
/// `ferro run`'s whatever else is in the batch. Quantized weights (`rows_alone` holds for
/// their kernels; an f32 GEMM's bits may depend on the row count).
#[test]
fn packed_decode_step_has_the_bits_of_each_alone() {
    for name in ["tiny-llama-q8_0.gguf", "tiny-llama-q4_0.gguf"] {
        let model = load(&format!("llama_gguf/{name}"));
        let prompts: [&[u32]; 4] = [
            &[5, 17, 30, 2, 9],
            &[44, 3, 8],
            &[1, 2, 3, 4, 5, 6, 7],
            &[8],
        ];
        let mut alone_caches = Vec::new();
        for p in prompts {
            let mut cache = model.new_cache();
            alone(&model, &mut cache, p);
            alone_caches.push(cache);
        }
        let mut packed_caches: Vec<Cache> = alone_caches.clone();
        for step in 0..3u32 {
            let tokens: Vec<[u32; 1]> = (0..4).map(|i| [20 + 3 * step + i]).collect();
            let want: Vec<Vec<f32>> = alone_caches
                .iter_mut()
                .zip(&tokens)
                .map(|(c, t)| alone(&model, c, t))
                .collect();
            let mut seqs: Vec<(&[u32], &mut Cache)> = tokens
                .iter()
                .map(|t| &t[..])
                .zip(packed_caches.iter_mut())
                .collect();
            let got: Vec<Vec<f32>> = model.forward_packed(&mut seqs).unwrap().to_vec2().unwrap();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    g == w,
                    "{name}: step {step}, sequence {i}: not the bits it gets alone"
                );
            }
        }
    }
}

#[test]
fn packed_misuse_is_refused() {
    let model = load("qwen2");
    let mut cache = model.new_cache();
    let mut seqs: Vec<(&[u32], &mut Cache)> = vec![(&[], &mut cache)];
    let err = model.forward_packed(&mut seqs).unwrap_err().to_string();
    assert!(err.contains("sequence 0 has no tokens"), "{err}");
    let err = model.forward_packed(&mut []).unwrap_err().to_string();
    assert!(err.contains("no sequence"), "{err}");
    let long = vec![1u32; model.max_positions() + 1];
    let mut cache = model.new_cache();
    let mut seqs: Vec<(&[u32], &mut Cache)> = vec![(&long, &mut cache)];
    let err = model.forward_packed(&mut seqs).unwrap_err().to_string();
    assert!(err.contains("exceed the model's context"), "{err}");
}
