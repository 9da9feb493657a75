//! `ferro pipeline TASK`: a task over inputs given as arguments or in a file, one JSON line
//! per input, in order.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ferro_pipelines::SentenceTransformer;
use serde_json::Value;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The task: sentence-embeddings (pooled and normalized as sentence-transformers returns
    /// them), text-classification (alias sentiment-analysis), token-classification (alias
    /// ner), fill-mask, zero-shot-classification or feature-extraction (token-level hidden
    /// states).
    task: String,
    /// A model folder or Hub id.
    #[arg(long, short = 'm')]
    model: String,
    /// Inputs (or --file).
    inputs: Vec<String>,
    /// Inputs from a file: JSONL (each line a JSON string or an object with `text`), CSV
    /// with a `text` column, or plain text (one input per line).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Where the JSON lines go [default: stdout].
    #[arg(long)]
    output: Option<PathBuf>,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// text-classification: how many labels (a number, or `all`) [default: the best one].
    #[arg(long)]
    top_k: Option<String>,
    /// text-classification: sigmoid, softmax or none [default: from the model's problem type].
    #[arg(long)]
    function_to_apply: Option<String>,
    /// text-classification, feature-extraction: cut texts longer than the model takes
    /// instead of refusing them.
    #[arg(long)]
    truncation: bool,
    /// token-classification: none, simple, first, average or max.
    #[arg(long, default_value = "none")]
    aggregation_strategy: String,
    /// token-classification: labels left out [default: O].
    #[arg(long = "ignore-label")]
    ignore_labels: Option<Vec<String>>,
    /// zero-shot-classification: the candidate labels, comma-separated.
    #[arg(long)]
    candidate_labels: Option<String>,
    /// zero-shot-classification: score each label on its own.
    #[arg(long)]
    multi_label: bool,
    /// zero-shot-classification: the hypothesis, `{}` standing for the label.
    #[arg(long, default_value = "This example is {}.")]
    hypothesis_template: String,
    /// fill-mask: score only these words (repeat the flag for several).
    #[arg(long = "target")]
    targets: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    let inputs = match &args.file {
        Some(f) => read_inputs(f)?,
        None => args.inputs.clone(),
    };
    if inputs.is_empty() {
        bail!("no inputs: give them as arguments or with --file");
    }
    let loading = || format!("loading `{}`", args.model);
    let lines: Vec<String> = match args.task.as_str() {
        "sentence-embeddings" => {
            let model = SentenceTransformer::from_pretrained(&args.model).with_context(loading)?;
            model
                .encode(&inputs, args.batch_size)?
                .iter()
                .map(|v| serde_json::to_string(v).unwrap_or_default())
                .collect()
        }
        "text-classification" | "sentiment-analysis" => {
            use ferro_pipelines::{FunctionToApply, TextClassificationPipeline, TopK};
            let pipe =
                TextClassificationPipeline::from_pretrained(&args.model).with_context(loading)?;
            let top_k = match args.top_k.as_deref() {
                None => TopK::Best,
                Some("all") => TopK::All,
                Some(k) => TopK::K(
                    k.parse()
                        .with_context(|| format!("--top-k `{k}`: a number or `all`"))?,
                ),
            };
            let function = match args.function_to_apply.as_deref() {
                None => FunctionToApply::Default,
                Some(f) => FunctionToApply::parse(f)?,
            };
            each_input(&inputs, |text| {
                pipe.call(text, top_k, function, args.truncation)
            })?
        }
        "token-classification" | "ner" => {
            use ferro_pipelines::{Aggregation, TokenClassificationPipeline};
            let pipe =
                TokenClassificationPipeline::from_pretrained(&args.model).with_context(loading)?;
            let aggregation = Aggregation::parse(&args.aggregation_strategy)?;
            let ignore = args
                .ignore_labels
                .clone()
                .unwrap_or_else(|| vec!["O".into()]);
            each_input(&inputs, |text| pipe.call(text, aggregation, &ignore))?
        }
        "feature-extraction" => {
            let pipe = ferro_pipelines::FeatureExtractionPipeline::from_pretrained(&args.model)
                .with_context(loading)?;
            each_input(&inputs, |text| pipe.call(text, args.truncation))?
        }
        "zero-shot-classification" => {
            let pipe =
                ferro_pipelines::ZeroShotClassificationPipeline::from_pretrained(&args.model)
                    .with_context(loading)?;
            let labels =
                ferro_pipelines::split_labels(args.candidate_labels.as_deref().unwrap_or(""));
            each_input(&inputs, |text| {
                pipe.call(text, &labels, &args.hypothesis_template, args.multi_label)
            })?
        }
        "fill-mask" => {
            let pipe = ferro_pipelines::FillMaskPipeline::from_pretrained(&args.model)
                .with_context(loading)?;
            let top_k = match args.top_k.as_deref() {
                None => 5,
                Some(k) => k
                    .parse()
                    .with_context(|| format!("--top-k `{k}`: a number"))?,
            };
            let targets = (!args.targets.is_empty()).then_some(args.targets.as_slice());
            each_input(&inputs, |text| {
                let mut out = pipe.call(text, top_k, targets)?;
                Ok(match out.len() {
                    1 => Masks::One(out.remove(0)),
                    _ => Masks::Each(out),
                })
            })?
        }
        other => bail!(
            "task `{other}` is not available yet (available: sentence-embeddings, \
             text-classification, token-classification, fill-mask, zero-shot-classification, \
             feature-extraction)"
        ),
    };
    let mut out: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("--output {}", p.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    for line in lines {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(())
}

/// fill-mask's answer as transformers shapes it: one mask, its candidates; several, a
/// list per mask.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Masks {
    One(Vec<ferro_pipelines::FillMaskResult>),
    Each(Vec<Vec<ferro_pipelines::FillMaskResult>>),
}

/// `run` on each input in order, as JSON lines; an error names the input (1-based).
fn each_input<T: serde::Serialize>(
    inputs: &[String],
    run: impl Fn(&str) -> ferro_pipelines::Result<T>,
) -> Result<Vec<String>> {
    inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let out = run(text).with_context(|| format!("input {}", i + 1))?;
            Ok(serde_json::to_string(&out)?)
        })
        .collect()
}

/// The inputs of `path` by its extension (see `--file`).
fn read_inputs(path: &Path) -> Result<Vec<String>> {
    let text = super::read_file("--file", path)?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext {
        "jsonl" => text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                let v: Value = serde_json::from_str(l)
                    .with_context(|| format!("{} line {}: invalid JSON", path.display(), i + 1))?;
                match v {
                    Value::String(s) => Ok(s),
                    Value::Object(o) => match o.get("text") {
                        Some(Value::String(s)) => Ok(s.clone()),
                        _ => bail!("{} line {}: no `text` string", path.display(), i + 1),
                    },
                    _ => bail!(
                        "{} line {}: not a string or an object",
                        path.display(),
                        i + 1
                    ),
                }
            })
            .collect(),
        "csv" => {
            let mut rows = text.lines();
            let header = rows.next().unwrap_or("");
            let Some(col) = header.split(',').position(|h| h.trim() == "text") else {
                bail!(
                    "{}: no `text` column in the header `{header}`",
                    path.display()
                );
            };
            rows.filter(|l| !l.trim().is_empty())
                .map(|l| {
                    split_csv(l)
                        .get(col)
                        .cloned()
                        .context("a row is missing the text column")
                })
                .collect()
        }
        _ => Ok(text
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect()),
    }
}

/// One CSV line's fields (double-quoted fields may hold commas and `""`).
fn split_csv(line: &str) -> Vec<String> {
    let (mut fields, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    fields.push(cur);
    fields
}
