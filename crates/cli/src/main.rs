//! `ferro`: the ferroformers command line. Thin: parsing and printing only; the work is
//! done by the libraries.

mod allocator;
mod commands;
mod generation_args;
mod model_args;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ferro", version, about = "Hugging Face transformers, in Rust")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Answer one message with a chat model, streaming only the new text.
    Run(commands::run::Args),
    /// Measure prompt processing and decode speed, load time and peak memory.
    Bench(commands::bench::Args),
    /// Hold a conversation with a chat model (streamed; /help lists the commands).
    Chat(commands::chat::Args),
    /// Print the token ids of a text as a JSON array.
    Tokenize(commands::tokenize::Args),
    /// Print the text of a JSON array of token ids.
    Detokenize(commands::detokenize::Args),
    /// Render a conversation with the model's chat template.
    Template(commands::template::Args),
    /// Run a task pipeline over inputs (sentence-embeddings so far), one JSON line each.
    Pipeline(commands::pipeline::Args),
    /// Loss and metrics of a checkpoint on a dataset (perplexity, accuracy/F1, entity F1).
    Eval(commands::eval::Args),
    /// Fine-tune a model as a TOML config says (Trainer, TrainingArguments).
    Train(commands::train::Args),
    /// Serve the model over OpenAI's HTTP API (continuous batching).
    Serve(commands::serve::Args),
    /// Write a checkpoint (safetensors folder or GGUF) as a quantized GGUF llama.cpp loads.
    Quantize(commands::quantize::Args),
}

fn main() -> ExitCode {
    allocator::keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("FERRO_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => commands::run::run(a),
        Command::Chat(a) => commands::chat::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::Tokenize(a) => commands::tokenize::run(a),
        Command::Detokenize(a) => commands::detokenize::run(a),
        Command::Template(a) => commands::template::run(a),
        Command::Quantize(a) => commands::quantize::run(a),
        Command::Serve(a) => commands::serve::run(a),
        Command::Pipeline(a) => commands::pipeline::run(a),
        Command::Train(a) => commands::train::run(a),
        Command::Eval(a) => commands::eval::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that went away (`ferro tokenize ... | head -c0`) is not an error of ours.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}
