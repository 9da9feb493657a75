//! `ferro run`: transformers' chat program on the command line — chat template, generate,
//! and only the new text, streamed as it is produced.

use anyhow::Result;
use ferroformers::tokenizers::ChatMessage;

use crate::generation_args::{generate_to_stdout, ChatModelArgs, GenerationArgs, SpeculationArgs};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    load: ChatModelArgs,
    /// The user message.
    prompt: String,
    /// A system message before it.
    #[arg(long)]
    system: Option<String>,
    #[command(flatten)]
    generation: GenerationArgs,
    #[command(flatten)]
    speculation: SpeculationArgs,
}

pub fn run(args: Args) -> Result<()> {
    let (tokenizer, model) = args.load.load()?;
    let draft = args.speculation.load_draft(&args.load)?;
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(ChatMessage::system(system.clone()));
    }
    messages.push(ChatMessage::user(args.prompt.clone()));
    let input_ids = tokenizer.apply_chat_template(&messages, &args.load.template_options()?)?;
    let mut cfg = args.generation.config(&tokenizer)?;
    args.speculation.apply(&mut cfg)?;
    generate_to_stdout(&model, draft.as_ref(), &tokenizer, &input_ids, &cfg)?;
    Ok(())
}
