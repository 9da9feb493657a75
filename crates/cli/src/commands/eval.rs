//! `ferro eval`: loss and task metrics of a checkpoint on a dataset (perplexity for causal
//! LMs, accuracy and F1 for classifiers, seqeval's entity scores for token classifiers).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use ferro_train::TrainConfig;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A `ferro train` config: its model, task, columns and eval data.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The checkpoint (overrides the config's model; without a config, give --task too).
    #[arg(long, short = 'm')]
    model: Option<String>,
    /// text-classification, token-classification or causal-lm.
    #[arg(long)]
    task: Option<String>,
    /// The examples (JSONL, JSON, CSV, Parquet or text), as training reads them.
    #[arg(long)]
    file: Option<PathBuf>,
    /// The text (or chat `messages`) column.
    #[arg(long, default_value = "text")]
    text_column: String,
    /// A LoRA adapter folder (PEFT's format) to evaluate on the model.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// A GGUF causal LM in f32 instead of its quantized kernels.
    #[arg(long)]
    dequantize: bool,
}

pub fn run(args: Args) -> Result<()> {
    let mut cfg = match &args.config {
        Some(p) => TrainConfig::from_file(p)?,
        None => {
            let (Some(model), Some(task), Some(file)) = (&args.model, &args.task, &args.file)
            else {
                bail!("give --config, or --model, --task and --file");
            };
            let text = format!(
                "[model]\nname_or_path = {model:?}\ntask = {task:?}\n[data]\ntrain_file = {:?}\ntext_column = {:?}\n",
                file.display().to_string(),
                args.text_column
            );
            TrainConfig::from_toml(&text, std::path::Path::new("ferro eval's arguments"))?
        }
    };
    if let Some(m) = &args.model {
        cfg.model.name_or_path = m.clone();
    }
    if let Some(t) = &args.task {
        cfg.model.task = t.clone();
    }
    cfg.model.dequantize |= args.dequantize;
    let file = args.file.as_deref().or(if args.config.is_none() {
        Some(cfg.data.train_file.as_path())
    } else {
        None
    });
    let metrics = ferro_train::recipe::evaluate_config(&cfg, file, args.adapter.as_deref())
        .context("evaluating")?;
    super::print_line(&serde_json::to_string(&metrics)?)
}
