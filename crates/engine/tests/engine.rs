//! The engine under load with a scripted model (its "cache" is the tokens it has seen, its
//! next token a hash of them, so any mixed-up, lost or wrongly reused cache shows), and
//! with a real tiny model against `generate`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ferro_engine::{
    Engine, EngineConfig, EngineHandle, Event, GenerationRequest, StepModel, SubmitError,
};
use ferro_generate::{generate_text, FinishReason, GenerationConfig};
use ferro_models::{AutoModelForCausalLM, LoadOptions};
use ferro_tokenizers::{AutoTokenizer, Tokenizer};

const VOCAB: usize = 200;
const EOS: u32 = 7;
const CONTEXT: usize = 256;

/// The next token after `history`: a hash, so it depends on every token and position.
fn next_token(history: &[u32]) -> u32 {
    let h = history.iter().fold(1469598103934665603u64, |h, &t| {
        (h ^ u64::from(t)).wrapping_mul(1099511628211)
    });
    (h % VOCAB as u64) as u32
}

/// What greedy decoding gives after `prompt`, up to `max_new` tokens or EOS.
fn expected(prompt: &[u32], max_new: usize) -> Vec<u32> {
    expected_with(prompt, max_new, true)
}

fn expected_with(prompt: &[u32], max_new: usize, stop_at_eos: bool) -> Vec<u32> {
    let mut ids = prompt.to_vec();
    let mut out = Vec::new();
    while out.len() < max_new {
        let t = next_token(&ids);
        ids.push(t);
        out.push(t);
        if t == EOS && stop_at_eos {
            break;
        }
    }
    out
}

struct Scripted;

impl StepModel for Scripted {
    type Cache = Vec<u32>;

    fn new_cache(&self) -> Vec<u32> {
        Vec::new()
    }

    fn copy_prefix(&self, cache: &Vec<u32>, len: usize) -> Result<Vec<u32>, String> {
        Ok(cache[..len.min(cache.len())].to_vec())
    }

    fn step(&self, seqs: &mut [(&[u32], &mut Vec<u32>)]) -> Result<Vec<Vec<f32>>, String> {
        std::thread::sleep(Duration::from_micros(200));
        Ok(seqs
            .iter_mut()
            .map(|(tokens, cache)| {
                cache.extend_from_slice(tokens);
                let target = next_token(cache);
                (0..VOCAB as u32)
                    .map(|t| -((t as f32) - (target as f32)).abs())
                    .collect()
            })
            .collect())
    }

    fn context_length(&self) -> usize {
        CONTEXT
    }

    fn vocab_size(&self) -> usize {
        VOCAB
    }

    fn eos_token_ids(&self) -> Vec<u32> {
        vec![EOS]
    }
}

fn tiny_gguf() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/causal_lm/tiny/llama_gguf/tiny-llama-f32.gguf")
}

fn tokenizer() -> Tokenizer {
    AutoTokenizer::from_pretrained(tiny_gguf().to_str().unwrap()).unwrap()
}

fn greedy(max_new: usize) -> GenerationConfig {
    GenerationConfig {
        max_new_tokens: max_new,
        do_sample: false,
        ..Default::default()
    }
}

fn prompt(i: usize) -> Vec<u32> {
    // Shared first 20 tokens for half of them (prefix reuse), then distinct ones.
    let len = 3 + (i * 7) % 40;
    (0..len as u32)
        .map(|j| {
            if i.is_multiple_of(2) && j < 20 {
                j + 10
            } else {
                (j * 13 + i as u32 * 31) % 190 + 8
            }
        })
        .collect()
}

/// Every event of a stream: tokens per sequence and finish reasons.
fn collect(
    mut stream: ferro_engine::ResponseStream,
    n: usize,
) -> (Vec<Vec<u32>>, Vec<FinishReason>) {
    let mut tokens = vec![Vec::new(); n];
    let mut reasons = vec![None; n];
    while let Some(e) = stream.blocking_recv() {
        match e {
            Event::Token { seq, token, .. } => {
                assert!(reasons[seq].is_none(), "a token after the end");
                tokens[seq].push(token);
            }
            Event::Finished { seq, reason, .. } => {
                assert!(reasons[seq].replace(reason).is_none(), "finished twice");
            }
            Event::Failed(e) => panic!("failed: {e}"),
        }
    }
    (
        tokens,
        reasons
            .into_iter()
            .map(|r| r.expect("never finished"))
            .collect(),
    )
}

fn wait_idle(handle: &EngineHandle) {
    let m = handle.metrics();
    for _ in 0..500 {
        if m.running_sequences.load(Ordering::Relaxed) == 0
            && m.kv_blocks_in_use.load(Ordering::Relaxed) == 0
            && m.queued_requests.load(Ordering::Relaxed) == 0
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the engine did not return to idle: {:?}", m);
}

#[test]
fn concurrent_requests_each_get_their_own_greedy_tokens() {
    // A small step budget and cache force chunked prefill, waiting and preemption.
    let config = EngineConfig {
        max_running: 6,
        max_queued: 100,
        max_batched_tokens: 12,
        kv_cache_tokens: 256,
        block_size: 8,
        prefix_caching: true,
    };
    let handle = Engine::start(Scripted, tokenizer(), config).unwrap();
    // All submitted up front, so that the queue is full whatever the threads' timing: six
    // sequences run at once (the cache runs short) and shared prefixes arrive while their
    // first owner's blocks are cached.
    let threads: Vec<_> = (0..40)
        .map(|i| {
            let p = prompt(i);
            let max_new = 5 + i % 30;
            // Half never stop early, so that running sequences outgrow the cache.
            let stop_at_eos = i % 2 == 0;
            let config = GenerationConfig {
                eos_token_ids: (!stop_at_eos).then(Vec::new),
                ..greedy(max_new)
            };
            let stream = handle
                .submit(GenerationRequest {
                    id: format!("r{i}"),
                    prompt: p.clone(),
                    config,
                })
                .unwrap();
            std::thread::spawn(move || {
                let (tokens, reasons) = collect(stream, 1);
                let want = expected_with(&p, max_new, stop_at_eos);
                assert_eq!(tokens[0], want, "request {i}");
                let reason = if stop_at_eos && want.last() == Some(&EOS) {
                    FinishReason::Eos
                } else {
                    FinishReason::Length
                };
                assert_eq!(reasons[0], reason, "request {i}");
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    wait_idle(&handle);
    let m = handle.metrics();
    assert!(
        m.prefix_hit_tokens.load(Ordering::Relaxed) > 0,
        "no prefix was reused"
    );
    assert!(
        m.preemptions.load(Ordering::Relaxed) > 0,
        "the cache never ran short"
    );
    assert!(m.time_to_first_token.count() >= 40);
    handle.shutdown();
}

#[test]
fn cancelled_streams_free_their_cache_and_others_are_unaffected() {
    let handle = Engine::start(Scripted, tokenizer(), EngineConfig::default()).unwrap();
    let long = GenerationRequest {
        id: "long".into(),
        prompt: vec![100, 101, 102],
        config: GenerationConfig {
            eos_token_ids: Some(vec![]),
            ..greedy(200)
        },
    };
    let mut streams: Vec<_> = (0..8)
        .map(|_| handle.submit(long.clone()).unwrap())
        .collect();
    // Read a few tokens of each, then drop half of them mid-stream.
    for s in &mut streams {
        for _ in 0..3 {
            assert!(matches!(s.blocking_recv(), Some(Event::Token { .. })));
        }
    }
    let kept: Vec<_> = streams
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .collect();
    for (_, s) in kept {
        let (tokens, reasons) = collect(s, 1);
        assert_eq!(tokens[0].len(), 197);
        assert_eq!(reasons[0], FinishReason::Length);
    }
    wait_idle(&handle);
    handle.shutdown();
}

#[test]
fn several_choices_share_the_prompt_and_sample_apart() {
    let handle = Engine::start(Scripted, tokenizer(), EngineConfig::default()).unwrap();
    let p = prompt(3);
    let stream = handle
        .submit(GenerationRequest {
            id: "n3".into(),
            prompt: p.clone(),
            config: GenerationConfig {
                num_return_sequences: 3,
                ..greedy(10)
            },
        })
        .unwrap();
    let (tokens, _) = collect(stream, 3);
    for t in &tokens {
        assert_eq!(t, &expected(&p, 10));
    }
    let sampled = GenerationConfig {
        num_return_sequences: 2,
        do_sample: true,
        temperature: 5.0,
        seed: 42,
        eos_token_ids: Some(vec![]),
        ..greedy(20)
    };
    let run = |cfg: &GenerationConfig| {
        let s = handle
            .submit(GenerationRequest {
                id: "s".into(),
                prompt: p.clone(),
                config: cfg.clone(),
            })
            .unwrap();
        collect(s, 2).0
    };
    let a = run(&sampled);
    assert_ne!(a[0], a[1], "two choices sampled the same tokens");
    assert_eq!(a, run(&sampled), "a seed must give the same choices again");
    wait_idle(&handle);
}

#[test]
fn refusals_name_the_cause() {
    let config = EngineConfig {
        max_queued: 2,
        max_running: 1,
        ..EngineConfig::default()
    };
    let handle = Engine::start(Scripted, tokenizer(), config).unwrap();
    let request = |prompt: Vec<u32>, cfg: GenerationConfig| GenerationRequest {
        id: "x".into(),
        prompt,
        config: cfg,
    };
    let err = handle.submit(request(vec![], greedy(4))).unwrap_err();
    assert!(
        matches!(
            err,
            SubmitError::Invalid {
                param: "prompt",
                ..
            }
        ),
        "{err}"
    );
    let err = handle
        .submit(request(vec![VOCAB as u32], greedy(4)))
        .unwrap_err();
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
    let err = handle
        .submit(request(vec![1; 250], greedy(10)))
        .unwrap_err();
    assert!(
        matches!(
            err,
            SubmitError::Invalid {
                param: "max_tokens",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("at most 6"), "{err}");
    let n2 = GenerationConfig {
        num_return_sequences: 2,
        ..greedy(4)
    };
    let err = handle.submit(request(vec![1, 2], n2)).unwrap_err();
    assert!(
        matches!(err, SubmitError::Invalid { param: "n", .. }),
        "{err}"
    );
    // One runs, two wait, the next is refused; the waiting ones are served after it.
    let endless = GenerationConfig {
        eos_token_ids: Some(vec![]),
        ..greedy(100)
    };
    let mut first = handle.submit(request(vec![1, 2], endless.clone())).unwrap();
    assert!(first.blocking_recv().is_some());
    let waiting: Vec<_> = (0..2)
        .map(|_| handle.submit(request(vec![3, 4], greedy(3))).unwrap())
        .collect();
    let err = handle.submit(request(vec![5], greedy(3))).unwrap_err();
    assert_eq!(err, SubmitError::QueueFull(2));
    drop(first);
    for s in waiting {
        assert_eq!(collect(s, 1).0[0], expected(&[3, 4], 3));
    }
    handle.shutdown();
    let err = handle.submit(request(vec![1], greedy(2))).unwrap_err();
    assert_eq!(err, SubmitError::ShuttingDown);
    for _ in 0..200 {
        if handle.is_stopped() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the engine did not stop after shutdown");
}

/// The real model in the engine gives `generate`'s greedy tokens and text, alone and with
/// other sequences decoding beside it.
#[test]
fn tiny_model_in_the_engine_equals_generate() {
    let path = tiny_gguf();
    let model =
        AutoModelForCausalLM::from_pretrained(path.to_str().unwrap(), &LoadOptions::default())
            .unwrap();
    let tok = tokenizer();
    let prompts: Vec<Vec<u32>> = (0..6)
        .map(|i| {
            (0..(4 + 3 * i) as u32)
                .map(|j| (j * 7 + i as u32 * 11) % 200 + 3)
                .collect()
        })
        .collect();
    let cfg = GenerationConfig {
        eos_token_ids: Some(vec![]),
        ..greedy(24)
    };
    let want: Vec<(Vec<u32>, String)> = prompts
        .iter()
        .map(|p| {
            let out = generate_text(&model, &tok, std::slice::from_ref(p), &cfg, &mut |_| {
                ControlFlow::Continue(())
            })
            .unwrap();
            (out.new_tokens(0).to_vec(), out.texts.unwrap()[0].clone())
        })
        .collect();
    let handle = Engine::start(model, tok, EngineConfig::default()).unwrap();
    let streams: Vec<_> = prompts
        .iter()
        .map(|p| {
            handle
                .submit(GenerationRequest {
                    id: "t".into(),
                    prompt: p.clone(),
                    config: cfg.clone(),
                })
                .unwrap()
        })
        .collect();
    for (i, mut s) in streams.into_iter().enumerate() {
        let (mut tokens, mut text) = (Vec::new(), String::new());
        while let Some(e) = s.blocking_recv() {
            match e {
                Event::Token { token, text: t, .. } => {
                    tokens.push(token);
                    text.push_str(&t);
                }
                Event::Finished { text: t, .. } => text.push_str(&t),
                Event::Failed(e) => panic!("{e}"),
            }
        }
        assert_eq!(tokens, want[i].0, "prompt {i}");
        assert_eq!(text, want[i].1, "prompt {i}");
    }
    wait_idle(&handle);
}
