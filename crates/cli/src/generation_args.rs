//! The flags `ferro run` and `ferro chat` share: how to load the chat model and how to
//! generate.

use std::io::Write;
use std::ops::ControlFlow;

use anyhow::{Context, Result};
use clap::Args;
use ferroformers::generate::{
    generate_text, generate_text_assisted, GenerateOutput, GenerationConfig, TokenEvent,
};
use ferroformers::models::{AutoModelForCausalLM, CausalLm, LoadOptions};
use ferroformers::tokenizers::{ChatTemplateOptions, Tokenizer};

use crate::commands::chat_template_flag;
use crate::model_args::ModelArgs;

#[derive(Args, Debug, Clone)]
pub struct ChatModelArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Expand quantized GGUF weights to f32 instead of multiplying them quantized.
    #[arg(long)]
    pub dequantize: bool,
    /// Quantize a safetensors checkpoint's weight matrices as it loads: q8_0, q4_k, q5_k
    /// or q6_k (CPU only; a GGUF is already quantized).
    #[arg(long, value_name = "TYPE")]
    pub quantize: Option<String>,
    /// Where to run: cpu, cuda[:N], metal[:N] (GPUs need a build with `--features cuda|metal`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// A Jinja chat template file to use instead of the model's own (or when it has none).
    #[arg(long)]
    pub chat_template: Option<std::path::PathBuf>,
}

impl ChatModelArgs {
    /// The tokenizer and the model.
    pub fn load(&self) -> Result<(Tokenizer, CausalLm)> {
        let spec = self.model.spec()?;
        let opts = LoadOptions {
            gguf_file: self.model.gguf_file.clone(),
            quantize: self
                .quantize
                .as_deref()
                .map(ferroformers::nn::quant::parse_quant_type)
                .transpose()?,
            ..self.shared_options()?
        };
        let tokenizer = self.model.tokenizer()?;
        let model = AutoModelForCausalLM::from_pretrained(&spec, &opts)
            .with_context(|| format!("loading the model `{spec}`"))?;
        Ok((tokenizer, model))
    }

    /// What a draft model is loaded with too: device, `--dequantize`, Hub settings.
    fn shared_options(&self) -> Result<LoadOptions> {
        Ok(LoadOptions {
            dequantize: self.dequantize,
            device: ferroformers::models::parse_device(&self.device)?,
            hub: self.model.hub_options(),
            ..LoadOptions::default()
        })
    }

    /// Template options with a generation prompt, and `--chat-template` when given.
    pub fn template_options(&self) -> Result<ChatTemplateOptions> {
        let (chat_template, chat_template_name) =
            chat_template_flag(self.chat_template.as_deref())?;
        Ok(ChatTemplateOptions {
            chat_template,
            chat_template_name,
            ..ChatTemplateOptions::generation_prompt()
        })
    }
}

#[derive(Args, Debug, Clone)]
pub struct GenerationArgs {
    /// How many tokens to generate at most.
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// Greedy decoding (the default unless a sampling flag is given).
    #[arg(long)]
    pub greedy: bool,
    /// Sample with this temperature.
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Sample from the smallest set of tokens whose probability reaches this.
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Sample from the k most likely tokens.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Sample only tokens at least this fraction as likely as the most likely one.
    #[arg(long)]
    pub min_p: Option<f32>,
    /// Penalize tokens already in the text (> 1).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// Stop when the answer contains this text (repeatable); the text is not shown.
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl GenerationArgs {
    /// The generation config the flags describe, ending on the tokenizer's end tokens.
    pub fn config(&self, tokenizer: &Tokenizer) -> Result<GenerationConfig> {
        let sampling = !self.greedy
            && (self.temperature.is_some()
                || self.top_p.is_some()
                || self.top_k.is_some()
                || self.min_p.is_some());
        let defaults = GenerationConfig::default();
        let cfg = GenerationConfig {
            max_new_tokens: self.max_new_tokens,
            do_sample: sampling,
            temperature: self.temperature.unwrap_or(defaults.temperature),
            top_p: self.top_p.unwrap_or(defaults.top_p),
            top_k: self
                .top_k
                .unwrap_or(if sampling { 0 } else { defaults.top_k }),
            min_p: self.min_p.unwrap_or(defaults.min_p),
            repetition_penalty: self.repetition_penalty,
            stop_strings: self.stop.clone(),
            seed: self.seed,
            eos_token_ids: Some(tokenizer.eos_token_ids.clone()).filter(|e| !e.is_empty()),
            ..defaults
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Speculative decoding flags of `ferro run`, `ferro chat` and `ferro bench`.
#[derive(Args, Debug, Clone, Default)]
pub struct SpeculationArgs {
    /// Speculative decoding: draft up to N tokens per step (by prompt lookup: copying what
    /// followed the last words where they appeared before, or with --draft-model) and check
    /// them in one pass. The output does not change.
    #[arg(long, value_name = "N")]
    pub speculate: Option<usize>,
    /// A smaller model with the same tokenizer that drafts the tokens for --speculate
    /// (a local directory or GGUF file, or a Hub id).
    #[arg(long, value_name = "MODEL", requires = "speculate")]
    pub draft_model: Option<String>,
}

impl SpeculationArgs {
    /// Sets the speculation knobs of `cfg` (prompt lookup unless a draft model is given).
    pub fn apply(&self, cfg: &mut GenerationConfig) -> Result<()> {
        match (self.speculate, &self.draft_model) {
            (Some(0), _) => anyhow::bail!("--speculate must be at least 1"),
            (Some(n), None) => cfg.prompt_lookup_num_tokens = Some(n),
            (Some(n), Some(_)) => cfg.num_assistant_tokens = n,
            (None, _) => {}
        }
        cfg.validate()?;
        Ok(())
    }

    /// The draft model, loaded like the main one (same device, same `--dequantize`).
    pub fn load_draft(&self, main: &ChatModelArgs) -> Result<Option<CausalLm>> {
        let Some(spec) = &self.draft_model else {
            return Ok(None);
        };
        let draft = AutoModelForCausalLM::from_pretrained(spec, &main.shared_options()?)
            .with_context(|| format!("loading the draft model `{spec}`"))?;
        Ok(Some(draft))
    }
}

/// `generate_text`, or `generate_text_assisted` when there is a draft model.
pub fn generate_events(
    model: &CausalLm,
    draft: Option<&CausalLm>,
    tokenizer: &Tokenizer,
    prompts: &[Vec<u32>],
    cfg: &GenerationConfig,
    on_event: &mut dyn FnMut(TokenEvent<'_>) -> ControlFlow<()>,
) -> Result<GenerateOutput> {
    Ok(match draft {
        None => generate_text(model, tokenizer, prompts, cfg, on_event)?,
        Some(d) => generate_text_assisted(model, d, tokenizer, prompts, cfg, on_event)?,
    })
}

/// Generates after `input_ids`, writing the new text to stdout as it comes (then a
/// newline), with `draft` drafting tokens when given.
pub fn generate_to_stdout(
    model: &CausalLm,
    draft: Option<&CausalLm>,
    tokenizer: &Tokenizer,
    input_ids: &[u32],
    cfg: &GenerationConfig,
) -> Result<GenerateOutput> {
    let mut out = std::io::stdout().lock();
    let mut write_error = None;
    let result = generate_events(
        model,
        draft,
        tokenizer,
        std::slice::from_ref(&input_ids.to_vec()),
        cfg,
        &mut |e| {
            if write_error.is_none() && !e.text.is_empty() {
                write_error = out
                    .write_all(e.text.as_bytes())
                    .and_then(|()| out.flush())
                    .err();
            }
            ControlFlow::Continue(())
        },
    )?;
    if let Some(e) = write_error {
        return Err(e.into());
    }
    writeln!(out)?;
    out.flush()?;
    if let Some(s) = result.speculation {
        tracing::info!(
            drafted = s.drafted,
            accepted = s.accepted,
            passes = s.verify_passes,
            "speculative decoding"
        );
    }
    Ok(result)
}
