//! `ferro run`: transformers' chat program on the command line — chat template, generate,
//! and only the new text, streamed as it is produced.

use std::io::Write;

use anyhow::{Context, Result};
use ferroformers::generate::{generate_streaming, GenerationConfig};
use ferroformers::models::{AutoModelForCausalLM, LoadOptions};
use ferroformers::tokenizers::{ChatMessage, ChatTemplateOptions};

use super::read_file;
use crate::model_args::ModelArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The user message.
    prompt: String,
    /// A system message before it.
    #[arg(long)]
    system: Option<String>,
    /// How many tokens to generate at most.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Greedy decoding (the default unless a sampling flag is given).
    #[arg(long)]
    greedy: bool,
    /// Sample with this temperature.
    #[arg(long)]
    temperature: Option<f32>,
    /// Sample from the smallest set of tokens whose probability reaches this.
    #[arg(long)]
    top_p: Option<f32>,
    /// Sample from the k most likely tokens.
    #[arg(long)]
    top_k: Option<usize>,
    /// Penalize tokens already in the text (> 1).
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Expand quantized GGUF weights to f32 instead of multiplying them quantized.
    #[arg(long)]
    dequantize: bool,
    /// Where to run: cpu, cuda[:N], metal[:N] (GPUs need a build with `--features cuda|metal`).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// A Jinja chat template file to use instead of the model's own (or when it has none).
    #[arg(long)]
    chat_template: Option<std::path::PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let tokenizer = args.model.tokenizer()?;
    let spec = args.model.spec()?;
    let opts = LoadOptions {
        gguf_file: args.model.gguf_file.clone(),
        dequantize: args.dequantize,
        device: ferroformers::models::parse_device(&args.device)?,
        hub: args.model.hub_options(),
        ..LoadOptions::default()
    };
    let model = AutoModelForCausalLM::from_pretrained(&spec, &opts)
        .with_context(|| format!("loading the model `{spec}`"))?;

    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(ChatMessage::system(system.clone()));
    }
    messages.push(ChatMessage::user(args.prompt.clone()));
    let template_opts = ChatTemplateOptions {
        chat_template: args
            .chat_template
            .as_deref()
            .map(|p| read_file("--chat-template", p))
            .transpose()?,
        chat_template_name: args.chat_template.as_ref().map(|p| p.display().to_string()),
        ..ChatTemplateOptions::generation_prompt()
    };
    let input_ids = tokenizer.apply_chat_template(&messages, &template_opts)?;

    let sampling = !args.greedy
        && (args.temperature.is_some() || args.top_p.is_some() || args.top_k.is_some());
    let defaults = GenerationConfig::default();
    let cfg = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        do_sample: sampling,
        temperature: args.temperature.unwrap_or(defaults.temperature),
        top_p: args.top_p.unwrap_or(defaults.top_p),
        top_k: args
            .top_k
            .unwrap_or(if sampling { 0 } else { defaults.top_k }),
        repetition_penalty: args.repetition_penalty,
        seed: args.seed,
        eos_token_ids: Some(tokenizer.eos_token_ids.clone()).filter(|e| !e.is_empty()),
    };
    let mut out = std::io::stdout().lock();
    let mut write_error = None;
    generate_streaming(&model, &tokenizer, &input_ids, &cfg, &mut |text| {
        if write_error.is_none() {
            write_error = out
                .write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .err();
        }
    })?;
    if let Some(e) = write_error {
        return Err(e.into());
    }
    writeln!(out)?;
    Ok(())
}
