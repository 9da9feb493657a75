//! `ferro bench`: prompt processing and decode speed, time to first token, load time and
//! peak memory of a model, as a table or one JSON object (for bench/compare.py).

use std::time::Instant;

use anyhow::{bail, Result};
use ferroformers::generate::GenerationConfig;
use ferroformers::models::CausalLm;
use ferroformers::tokenizers::ChatMessage;
use serde_json::json;

use crate::generation_args::{generate_events, ChatModelArgs, SpeculationArgs};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    load: ChatModelArgs,
    /// Prompt length in tokens.
    #[arg(long, default_value_t = 512)]
    prompt_tokens: usize,
    /// Tokens generated after the prompt (greedy, end-of-sequence ignored).
    #[arg(long, default_value_t = 128)]
    gen_tokens: usize,
    /// Threads of the kernels [default: one per core].
    #[arg(long)]
    threads: Option<usize>,
    /// Sequences decoded at once (decode speed is then the sum over them).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// A real task instead of the synthetic prompt: this file's text is the user message
    /// (through the chat template; --prompt-tokens is ignored) and generation stops at the
    /// model's end of turn or after --gen-tokens.
    #[arg(long)]
    prompt_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    speculation: SpeculationArgs,
}

/// Text the prompt is cut from: ordinary prose and code, as prompts are.
const FILLER: &str = "The quick brown fox jumps over the lazy dog. fn main() { let v: Vec<u32> = (0..10).map(|x| x * x).collect(); println!(\"{v:?}\"); } ";

pub fn run(args: Args) -> Result<()> {
    if let Some(t) = args.threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        ferroformers::nn::quant::set_num_threads(t)
            .map_err(|e| anyhow::anyhow!("--threads {t}: {e}"))?;
    }
    if args.prompt_tokens == 0 || args.gen_tokens == 0 || args.batch == 0 {
        bail!("--prompt-tokens, --gen-tokens and --batch must be at least 1");
    }
    let started = Instant::now();
    let (tokenizer, model) = args.load.load()?;
    let draft = args.speculation.load_draft(&args.load)?;
    let load_s = started.elapsed().as_secs_f64();
    let prompt: Vec<u32> = match &args.prompt_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("--prompt-file {}: {e}", path.display()))?;
            tokenizer
                .apply_chat_template(&[ChatMessage::user(text)], &args.load.template_options()?)?
        }
        None => {
            let mut prompt = Vec::with_capacity(args.prompt_tokens);
            while prompt.len() < args.prompt_tokens {
                prompt.extend(tokenizer.encode(FILLER, false)?.ids);
            }
            prompt.truncate(args.prompt_tokens);
            prompt
        }
    };
    let context = model.max_positions();
    if prompt.len() + args.gen_tokens > context {
        bail!(
            "a prompt of {} tokens + --gen-tokens {} exceed the model's context of {context}",
            prompt.len(),
            args.gen_tokens
        );
    }

    let prefill_s = prefill_time(&model, &prompt)?;
    // Decode: the whole generation minus the time to its first token (the prefill, measured
    // again inside, so the same prompts are processed the same way).
    let prompts = vec![prompt.clone(); args.batch];
    let mut cfg = GenerationConfig {
        // The synthetic prompt runs its full length; a real task ends where it ends.
        eos_token_ids: args.prompt_file.is_none().then(Vec::new),
        ..GenerationConfig::greedy(args.gen_tokens)
    };
    args.speculation.apply(&mut cfg)?;
    let mut first = None;
    let gen_started = Instant::now();
    let mut on_event = |_: ferroformers::generate::TokenEvent<'_>| {
        first.get_or_insert_with(|| gen_started.elapsed().as_secs_f64());
        std::ops::ControlFlow::Continue(())
    };
    let out = generate_events(
        &model,
        draft.as_ref(),
        &tokenizer,
        &prompts,
        &cfg,
        &mut on_event,
    )?;
    let total_s = gen_started.elapsed().as_secs_f64();
    let ttft_s = first.unwrap_or(total_s);
    let generated: usize = (0..out.sequences.len())
        .map(|i| out.new_tokens(i).len())
        .sum();
    // The first token of each sequence comes with the prefill.
    let decoded = generated.saturating_sub(args.batch);
    let decode_s = (total_s - ttft_s).max(f64::MIN_POSITIVE);
    let report = json!({
        "model": args.load.model.spec()?,
        "prompt_tokens": prompt.len(),
        "gen_tokens": args.gen_tokens,
        "batch": args.batch,
        "threads": ferroformers::nn::quant::num_threads(),
        "load_s": load_s,
        "prompt_s": prefill_s,
        "prompt_tokens_per_s": prompt.len() as f64 / prefill_s,
        "batch_prompt_tokens_per_s": (prompt.len() * args.batch) as f64 / ttft_s,
        "ttft_s": ttft_s,
        "decode_s": decode_s,
        "decode_tokens_per_s": decoded as f64 / decode_s,
        "generated_tokens": generated,
        "peak_rss_bytes": peak_rss_bytes(),
        "speculation": out.speculation.map(|s| json!({
            "drafted_tokens": s.drafted,
            "accepted_tokens": s.accepted,
            "verify_passes": s.verify_passes,
        })),
    });
    if args.json {
        println!("{report}");
    } else {
        let f = |k: &str| report[k].as_f64().unwrap_or(f64::NAN);
        println!("model      {}", report["model"].as_str().unwrap_or(""));
        println!("threads    {}   batch {}", report["threads"], args.batch);
        println!("load       {:.2} s", f("load_s"));
        println!(
            "prompt     {} tokens in {:.2} s = {:.1} tokens/s",
            prompt.len(),
            f("prompt_s"),
            f("prompt_tokens_per_s")
        );
        println!("ttft       {:.2} s", f("ttft_s"));
        println!(
            "decode     {decoded} tokens in {:.2} s = {:.1} tokens/s",
            f("decode_s"),
            f("decode_tokens_per_s")
        );
        if let Some(s) = out.speculation {
            println!(
                "speculate  {} of {} drafted tokens accepted, {} passes for {decoded} tokens",
                s.accepted, s.drafted, s.verify_passes
            );
        }
        match report["peak_rss_bytes"].as_u64() {
            Some(b) => println!("peak RSS   {:.0} MB", b as f64 / 1e6),
            None => println!("peak RSS   (unknown on this system)"),
        }
    }
    Ok(())
}

/// Seconds of one forward pass over the prompt (what the first token waits for).
fn prefill_time(model: &CausalLm, prompt: &[u32]) -> Result<f64> {
    let ids = ferroformers::candle::Tensor::new(prompt, &model.device)?.unsqueeze(0)?;
    let mut cache = model.new_cache();
    let started = Instant::now();
    let logits = model.forward(&ids, &mut cache, true)?;
    // Make sure the work is done (lazy devices).
    let _ = logits.flatten_all()?.to_vec1::<f32>()?;
    Ok(started.elapsed().as_secs_f64())
}

/// The process's peak resident memory (Linux: VmHWM), if known.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
