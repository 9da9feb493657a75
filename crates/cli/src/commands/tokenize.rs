//! `ferro tokenize`: ids as a JSON array; byte-exact stdin; JSON-lines batches.

use std::io::{BufRead, Read, Write};

use anyhow::{bail, Context, Result};

use super::print_line;
use crate::model_args::ModelArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Do not add the model's special tokens (BOS, [CLS]/[SEP], ...).
    #[arg(long)]
    no_special: bool,
    /// Read stdin as JSON lines: each line a JSON string, each output line its id array.
    #[arg(long, conflicts_with = "text")]
    jsonl: bool,
    /// The text; without it, stdin is read byte for byte (no newline stripped).
    text: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    let tok = args.model.tokenizer()?;
    let add_special = !args.no_special;
    if args.jsonl {
        let stdin = std::io::stdin().lock();
        let mut out = std::io::stdout().lock();
        for (n, line) in stdin.lines().enumerate() {
            let line = line.with_context(|| format!("reading stdin line {}", n + 1))?;
            let text: String = serde_json::from_str(&line)
                .with_context(|| format!("stdin line {}: expected a JSON string", n + 1))?;
            let ids = tok.encode(&text, add_special)?.ids;
            writeln!(out, "{}", serde_json::to_string(&ids)?)?;
        }
        out.flush()?;
        return Ok(());
    }
    let text = match args.text {
        Some(t) => t,
        None => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut bytes)
                .context("reading stdin")?;
            match String::from_utf8(bytes) {
                Ok(s) => s,
                Err(e) => bail!(
                    "stdin is not valid UTF-8 (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                ),
            }
        }
    };
    let ids = tok.encode(&text, add_special)?.ids;
    print_line(&serde_json::to_string(&ids)?)
}
