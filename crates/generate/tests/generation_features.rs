//! Generation features on the tiny checkpoints (offline, fast): batched greedy generation of
//! prompts of different lengths equals one-by-one generation token for token; sampling is
//! reproducible and draws from exactly the distribution the processors leave; stop strings
//! split across tokens stop generation and are left out of the text; max_time stops.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Duration;

use ferro_generate::sampling::sample;
use ferro_generate::{
    generate_text, FinishReason, Generate, GenerationConfig, LogitsProcessorList, Sequence,
};
use ferro_models::{AutoModelForCausalLM, CausalLm, LoadOptions};
use ferro_tokenizers::{AutoTokenizer, Tokenizer};
use rand::SeedableRng;

fn tiny(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/causal_lm/tiny")
        .join(name)
}

fn load(name: &str) -> CausalLm {
    AutoModelForCausalLM::from_pretrained(tiny(name).to_str().unwrap(), &LoadOptions::default())
        .unwrap()
}

/// Eight prompts of lengths 3 to 19, from a fixed pseudo-random sequence.
fn prompts() -> Vec<Vec<u32>> {
    let mut x = 12345u32;
    let mut next = || {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        3 + (x >> 16) % 250
    };
    [5, 19, 3, 11, 8, 16, 4, 13]
        .iter()
        .map(|&n| (0..n).map(|_| next()).collect())
        .collect()
}

#[test]
fn batched_greedy_equals_one_by_one() {
    for name in [
        "llama",
        "llama3",
        "qwen2",
        "qwen2_yarn",
        "mistral",
        "gemma3",
    ] {
        let model = load(name);
        let prompts = prompts();
        // First without an end token, then with the most frequent generated token as the
        // end token, so that sequences finish at different steps and leave the batch.
        let mut cfg = GenerationConfig {
            eos_token_ids: Some(Vec::new()),
            ..GenerationConfig::greedy(12)
        };
        for round in 0..2 {
            let singles: Vec<Vec<u32>> = prompts
                .iter()
                .map(|p| model.generate(p, &cfg).unwrap().new_tokens(0).to_vec())
                .collect();
            let batch = model.generate_batch(&prompts, &cfg).unwrap();
            for (i, single) in singles.iter().enumerate() {
                assert_eq!(
                    batch.new_tokens(i),
                    single.as_slice(),
                    "{name} round {round}: prompt {i}"
                );
            }
            if round == 0 {
                let mut counts = std::collections::HashMap::new();
                for t in singles.iter().flat_map(|s| &s[1..]) {
                    *counts.entry(*t).or_insert(0) += 1;
                }
                let eos = counts.into_iter().max_by_key(|&(t, c)| (c, t)).unwrap().0;
                cfg.eos_token_ids = Some(vec![eos]);
            } else {
                let lens: Vec<usize> = (0..8).map(|i| batch.new_tokens(i).len()).collect();
                assert!(
                    lens.iter().any(|&l| l < 12),
                    "{name}: no sequence ended early: {lens:?}"
                );
                let eos = cfg.eos_token_ids.as_ref().unwrap()[0];
                for i in 0..8 {
                    let ended = batch.new_tokens(i).last() == Some(&eos);
                    let want = if ended {
                        FinishReason::Eos
                    } else {
                        FinishReason::Length
                    };
                    assert_eq!(batch.finish_reasons[i], want, "{name}: prompt {i}");
                }
            }
        }
    }
}

#[test]
fn sampling_is_reproducible_with_a_seed() {
    let model = load("qwen2");
    let prompts = prompts();
    let cfg = GenerationConfig {
        do_sample: true,
        temperature: 1.5,
        top_k: 0,
        seed: 42,
        eos_token_ids: Some(Vec::new()),
        num_return_sequences: 3,
        ..GenerationConfig::greedy(16)
    };
    let a = model.generate_batch(&prompts[..2], &cfg).unwrap();
    let b = model.generate_batch(&prompts[..2], &cfg).unwrap();
    assert_eq!(a.sequences, b.sequences);
    assert_eq!(a.sequences.len(), 6);
    // The three samples of a prompt differ, and another seed gives other text.
    assert_ne!(a.new_tokens(0), a.new_tokens(1));
    let c = model
        .generate_batch(
            &prompts[..2],
            &GenerationConfig {
                seed: 7,
                ..cfg.clone()
            },
        )
        .unwrap();
    assert_ne!(a.sequences, c.sequences);
}

/// Over 10,000 draws, each token's frequency is within 4.5 standard deviations of the
/// probability left by top-k / top-p / min-p (and removed tokens are never drawn).
#[test]
fn sampled_frequencies_follow_the_processed_distribution() {
    let logits: Vec<f32> = vec![2.0, 1.5, 1.2, 0.9, 0.5, 0.1, -0.3, -1.0, -2.0, 3.0];
    let configs = [
        GenerationConfig {
            do_sample: true,
            top_k: 4,
            ..Default::default()
        },
        GenerationConfig {
            do_sample: true,
            top_k: 0,
            top_p: 0.7,
            ..Default::default()
        },
        GenerationConfig {
            do_sample: true,
            top_k: 0,
            min_p: 0.2,
            temperature: 0.8,
            ..Default::default()
        },
        GenerationConfig {
            do_sample: true,
            top_k: 0,
            temperature: 2.0,
            ..Default::default()
        },
    ];
    for cfg in configs {
        let list = LogitsProcessorList::from_config(&cfg, &[]).unwrap();
        let mut scores = logits.clone();
        list.process(
            Sequence {
                ids: &[0],
                prompt_len: 1,
            },
            &mut scores,
        );
        let p = ferro_generate::processors::softmax(&scores);
        let kept = p.iter().filter(|&&x| x > 0.0).count();
        assert!(
            kept < logits.len() || cfg.temperature == 2.0,
            "{cfg:?} removed nothing"
        );
        let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.top_k as u64 + 1);
        let n = 10_000;
        let mut counts = vec![0usize; logits.len()];
        for _ in 0..n {
            counts[sample(&scores, &mut rng) as usize] += 1;
        }
        for (i, (&c, &pi)) in counts.iter().zip(&p).enumerate() {
            let freq = c as f64 / n as f64;
            let pi = f64::from(pi);
            if pi == 0.0 {
                assert_eq!(c, 0, "{cfg:?}: removed token {i} was drawn");
            } else {
                let sd = (pi * (1.0 - pi) / n as f64).sqrt();
                assert!(
                    (freq - pi).abs() <= 4.5 * sd,
                    "{cfg:?}: token {i}: frequency {freq}, probability {pi}"
                );
            }
        }
    }
}

/// The tiny Llama GGUF carries a 256-token vocabulary: text for the stop-string tests.
fn tiny_with_tokenizer() -> (CausalLm, Tokenizer) {
    let dir = tiny("llama_gguf");
    let file = dir.join("tiny-llama-f32.gguf");
    let model =
        AutoModelForCausalLM::from_pretrained(file.to_str().unwrap(), &LoadOptions::default())
            .unwrap();
    (
        model,
        AutoTokenizer::from_pretrained(file.to_str().unwrap()).unwrap(),
    )
}

#[test]
fn stop_strings_across_tokens_stop_and_are_left_out() {
    let (model, tok) = tiny_with_tokenizer();
    let prompt: Vec<u32> = prompts()[1].clone();
    let base = GenerationConfig {
        eos_token_ids: Some(Vec::new()),
        ..GenerationConfig::greedy(30)
    };
    let full = generate_text(
        &model,
        &tok,
        std::slice::from_ref(&prompt),
        &base,
        &mut |_| ControlFlow::Continue(()),
    )
    .unwrap();
    let tokens = full.new_tokens(0).to_vec();
    // A stop string made of the end of token 5's text and the start of token 6's.
    let piece = |i: usize| tok.decode(&tokens[..i], true).unwrap();
    let (before, after) = (piece(6), piece(7));
    assert!(
        after.len() > before.len() + 1 && before.chars().count() >= 2,
        "{before:?} {after:?}"
    );
    let cut = before.char_indices().last().unwrap().0;
    let stop = format!(
        "{}{}",
        &before[cut..],
        after[before.len()..].chars().next().unwrap()
    );
    let text = &full.texts.as_ref().unwrap()[0];
    let at = text.find(&stop).unwrap();

    let cfg = GenerationConfig {
        stop_strings: vec!["never appears \u{1F600}".into(), stop.clone()],
        ..base.clone()
    };
    let mut streamed = String::new();
    let out = generate_text(&model, &tok, &[prompt], &cfg, &mut |e| {
        streamed.push_str(e.text);
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(
        out.finish_reasons[0],
        FinishReason::StopString(stop.clone())
    );
    assert_eq!(
        out.texts.as_ref().unwrap()[0],
        text[..at],
        "stop string {stop:?}"
    );
    assert_eq!(streamed, text[..at], "streamed text");
    assert!(
        out.new_tokens(0).len() < tokens.len(),
        "generation went on after the stop string"
    );
    // The token-only API refuses stop strings rather than ignoring them.
    assert!(model
        .generate(&tokens, &cfg)
        .unwrap_err()
        .to_string()
        .contains("stop_strings"));
}

#[test]
fn max_time_stops_generation() {
    let model = load("llama");
    let cfg = GenerationConfig {
        eos_token_ids: Some(Vec::new()),
        max_time: Some(Duration::ZERO),
        ..GenerationConfig::greedy(50)
    };
    let out = model.generate(&prompts()[0], &cfg).unwrap();
    assert_eq!(out.finish_reasons[0], FinishReason::Time);
    assert_eq!(out.new_tokens(0).len(), 1, "one step, then the time is up");
}

#[test]
fn logprobs_come_with_alternatives() {
    let model = load("qwen2");
    let cfg = GenerationConfig {
        eos_token_ids: Some(Vec::new()),
        top_logprobs: Some(3),
        ..GenerationConfig::greedy(5)
    };
    let out = model.generate(&prompts()[0], &cfg).unwrap();
    let lps = &out.logprobs.as_ref().unwrap()[0];
    assert_eq!(lps.len(), 5);
    for (lp, &t) in lps.iter().zip(out.new_tokens(0)) {
        assert_eq!(lp.token, t);
        assert_eq!(lp.top.len(), 3);
        // Greedy: the chosen token is the most likely one.
        assert_eq!(lp.top[0], (t, lp.logprob));
        assert!(lp.logprob <= 0.0 && lp.top[1].1 <= lp.top[0].1);
    }
}

/// TextIteratorStreamer: the deltas arrive on this thread while another generates, add up
/// to the full text, and cancelling stops the generation early.
#[test]
fn streamer_yields_the_text_and_can_be_cancelled() {
    use ferro_generate::TextIteratorStreamer;
    use std::sync::Arc;
    let (model, tok) = tiny_with_tokenizer();
    let (model, tok) = (Arc::new(model), Arc::new(tok));
    let prompt = prompts()[3].clone();
    let cfg = GenerationConfig {
        eos_token_ids: Some(Vec::new()),
        ..GenerationConfig::greedy(40)
    };
    let whole = generate_text(
        &model,
        &tok,
        std::slice::from_ref(&prompt),
        &cfg,
        &mut |_| ControlFlow::Continue(()),
    )
    .unwrap();
    let mut streamer =
        TextIteratorStreamer::spawn(model.clone(), tok.clone(), prompt.clone(), cfg.clone());
    let deltas: Vec<String> = streamer.by_ref().collect();
    assert!(deltas.len() > 5, "{deltas:?}");
    assert_eq!(deltas.concat(), whole.texts.as_ref().unwrap()[0]);
    let out = streamer.finish().unwrap();
    assert_eq!(out.sequences, whole.sequences);

    let mut streamer = TextIteratorStreamer::spawn(model, tok, prompt, cfg);
    let first = streamer.next();
    assert!(first.is_some());
    streamer.cancel();
    let out = streamer.finish().unwrap();
    assert_eq!(out.finish_reasons[0], FinishReason::Cancelled);
    assert!(out.new_tokens(0).len() < 40, "{}", out.new_tokens(0).len());
}

/// A checkpoint's generation_config.json gives the defaults (as `model.generation_config`).
#[test]
fn generation_config_json_gives_the_defaults() {
    let model = load("gemma3");
    let cfg = GenerationConfig::from_model(&model).unwrap();
    assert_eq!(cfg.eos_token_ids, Some(vec![2]));
    assert_eq!(cfg.pad_token_id, Some(0));
    assert!(!cfg.do_sample);
    let file = GenerationConfig::from_file(&tiny("gemma3").join("generation_config.json")).unwrap();
    assert_eq!(file, cfg);
    let err = GenerationConfig::from_file(&tiny("llama").join("config.json.missing")).unwrap_err();
    assert!(err.to_string().contains("config.json.missing"), "{err}");
}
