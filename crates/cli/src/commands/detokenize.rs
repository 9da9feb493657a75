//! `ferro detokenize`: the text of a JSON array of ids, printed exactly.

use anyhow::{Context, Result};

use super::{parse_json, print_exact};
use crate::model_args::ModelArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Leave special tokens out of the text.
    #[arg(long)]
    skip_special: bool,
    /// The ids, as a JSON array such as `[9707, 0]`.
    ids: String,
}

pub fn run(args: Args) -> Result<()> {
    let value = parse_json("IDS_JSON", &args.ids)?;
    let ids: Vec<u32> = serde_json::from_value(value)
        .context("IDS_JSON must be an array of non-negative integers below 2^32")?;
    let tok = args.model.tokenizer()?;
    let text = tok.decode(&ids, args.skip_special)?;
    print_exact(text.as_bytes())
}
