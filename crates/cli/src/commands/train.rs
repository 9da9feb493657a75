//! `ferro train --config train.toml`: fine-tune a model as the config says (`[model]`,
//! `[data]`, `[training]` with TrainingArguments' fields) and save it where transformers and
//! `ferro pipeline` load it.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ferro_train::{TrainConfig, TrainingArguments};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The run's TOML config.
    #[arg(long)]
    config: PathBuf,
    /// Continue from a checkpoint folder, or `latest` (overrides the config).
    #[arg(long)]
    resume_from_checkpoint: Option<String>,
    /// Where checkpoints, logs and the model go (overrides the config).
    #[arg(long)]
    output_dir: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    crate::allocator::keep_training_memory();
    let mut cfg = TrainConfig::from_file(&args.config)?;
    if let Some(r) = args.resume_from_checkpoint {
        cfg.training.resume_from_checkpoint = Some(r);
    }
    if let Some(o) = args.output_dir {
        cfg.training = TrainingArguments {
            output_dir: o,
            ..cfg.training
        };
    }
    let report = ferro_train::recipe::run(&cfg)
        .with_context(|| format!("training as {} says", args.config.display()))?;
    let summary = serde_json::json!({
        "global_step": report.output.global_step,
        "training_loss": report.output.training_loss,
        "train_runtime": report.output.train_runtime,
        "train_steps_per_second": report.output.train_steps_per_second,
        "eval": report.eval,
        "best_model_checkpoint": report.output.best_model_checkpoint,
        "saved_to": report.saved_to,
    });
    super::print_line(&summary.to_string())
}
