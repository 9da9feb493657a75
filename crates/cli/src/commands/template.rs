//! `ferro template`: the prompt a chat template renders, printed exactly.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use ferroformers::tokenizers::ChatTemplateOptions;
use serde_json::Value;

use super::{chat_template_flag, parse_json, print_exact, print_line, read_file};
use crate::model_args::ModelArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The conversation: a JSON array of messages (or an object with a `messages` array).
    #[arg(long)]
    messages: PathBuf,
    /// Tool definitions: a JSON array of JSON schemas.
    #[arg(long)]
    tools: Option<PathBuf>,
    /// Documents for retrieval templates: a JSON array of objects.
    #[arg(long)]
    documents: Option<PathBuf>,
    /// Do not open an assistant turn at the end.
    #[arg(long)]
    no_generation_prompt: bool,
    /// Leave the final message open for the model to continue (implies --no-generation-prompt).
    #[arg(long)]
    continue_final_message: bool,
    /// A Jinja template file to use instead of the model's own.
    #[arg(long)]
    chat_template: Option<PathBuf>,
    /// Print the prompt's token ids (a JSON array) instead of its text.
    #[arg(long)]
    tokenize: bool,
}

fn json_list(path: &std::path::Path, what: &str) -> Result<Vec<Value>> {
    let name = format!("{what} file {}", path.display());
    match parse_json(&name, &read_file(&format!("--{what}"), path)?)? {
        Value::Array(items) => Ok(items),
        _ => bail!("{name}: expected a JSON array"),
    }
}

pub fn run(args: Args) -> Result<()> {
    let name = format!("messages file {}", args.messages.display());
    let messages = match parse_json(&name, &read_file("--messages", &args.messages)?)? {
        Value::Array(m) => m,
        Value::Object(mut o) => match o.remove("messages") {
            Some(Value::Array(m)) => m,
            _ => bail!(
                "{name}: expected a JSON array of messages or an object with a `messages` array"
            ),
        },
        _ => bail!("{name}: expected a JSON array of messages"),
    };
    let (chat_template, chat_template_name) = chat_template_flag(args.chat_template.as_deref())?;
    let opts = ChatTemplateOptions {
        add_generation_prompt: !args.no_generation_prompt && !args.continue_final_message,
        continue_final_message: args.continue_final_message,
        tools: args
            .tools
            .as_ref()
            .map(|p| json_list(p, "tools"))
            .transpose()?,
        documents: args
            .documents
            .as_ref()
            .map(|p| json_list(p, "documents"))
            .transpose()?,
        chat_template,
        chat_template_name,
        ..ChatTemplateOptions::default()
    };
    let tok = args.model.tokenizer()?;
    let prompt = tok
        .render_chat(&messages, &opts)
        .with_context(|| format!("rendering {name}"))?;
    if args.tokenize {
        let ids = tok.encode(&prompt, false)?.ids;
        return print_line(&serde_json::to_string(&ids)?);
    }
    print_exact(prompt.as_bytes())
}
