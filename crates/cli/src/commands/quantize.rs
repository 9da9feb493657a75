//! `ferro quantize`: a safetensors checkpoint, or a GGUF to requantize, written as a GGUF
//! llama.cpp loads, with weight matrices in one block type.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ferroformers::core::ModelSource;
use ferroformers::nn::quant::{parse_quant_type, quant_type_name};
use ferroformers::quantize::quantize_checkpoint;

use crate::model_args::ModelArgs;

#[derive(clap::Args)]
pub struct Args {
    /// A checkpoint folder (config.json, safetensors, tokenizer.json), a .gguf file, or a
    /// Hub id `org/name[@revision]`.
    input: String,
    /// The GGUF file to write.
    output: PathBuf,
    /// Block type of the weight matrices: q8_0, q4_k, q5_k or q6_k.
    #[arg(long = "type", short = 't', value_name = "TYPE")]
    quant_type: String,
    /// Hub branch, tag or commit of a Hub id.
    #[arg(long)]
    revision: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    let dtype = parse_quant_type(&args.quant_type)?;
    let hub = ModelArgs {
        model: Some(args.input.clone()),
        gguf_file: None,
        revision: args.revision.clone(),
    }
    .hub_options();
    let source = ModelSource::resolve(&args.input, &hub)?;
    let started = std::time::Instant::now();
    let report = quantize_checkpoint(&source, &args.output, dtype)
        .with_context(|| format!("quantizing `{}` to {}", args.input, args.output.display()))?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    for (tensor, ty) in &report.fallbacks {
        eprintln!(
            "{tensor}: rows are not whole {} blocks; stored as {}",
            quant_type_name(dtype),
            quant_type_name(*ty)
        );
    }
    eprintln!(
        "wrote {} ({} tensors, {:.1} MB, {}) in {:.1} s",
        args.output.display(),
        report.tensors,
        report.bytes as f64 / 1e6,
        quant_type_name(dtype),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
