//! `ferro pipeline TASK`: a task over inputs given as arguments or in a file, one JSON line
//! per input, in order.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ferro_pipelines::{pipeline_with, SemanticSearch, SentenceTransformer, Task};
use ferroformers::models::{LoadOptions, MatmulPrecision};
use serde_json::{Map, Value};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The task: text-classification (alias sentiment-analysis), token-classification
    /// (alias ner), question-answering, fill-mask, zero-shot-classification,
    /// feature-extraction (token-level hidden states), sentence-embeddings (pooled and
    /// normalized as sentence-transformers returns them), text-generation, or
    /// semantic-search (the --corpus passages nearest each input).
    task: String,
    /// A model folder or Hub id.
    #[arg(long, short = 'm')]
    model: String,
    /// Inputs (or --file).
    inputs: Vec<String>,
    /// Inputs from a file: JSONL (each line a JSON string or an object with the task's
    /// fields: `text` (and `text_pair`); `question` and `context`; `sequence` and
    /// `candidate_labels`; for text-generation a list of chat messages), CSV with those
    /// columns, or plain text (one input per line).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Where the JSON lines go [default: stdout].
    #[arg(long)]
    output: Option<PathBuf>,
    /// How dense f32 products run (PyTorch's `set_float32_matmul_precision`): `highest`
    /// (f32) or `high` (16-bit integer products, ~2 × faster on CPUs with AVX-512 VNNI;
    /// embeddings within cosine 0.99999 of f32, scores within ~1e-3) [default: high for
    /// sentence-embeddings, highest for the other tasks].
    #[arg(long, value_parser = parse_matmul_precision)]
    matmul_precision: Option<MatmulPrecision>,
    /// Inputs per batch (sentence-embeddings and semantic-search embed them together).
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// How many answers: labels (a number, or `all`), masks' tokens, QA answers, search
    /// hits [default: the task's].
    #[arg(long)]
    top_k: Option<String>,
    /// text-classification: sigmoid, softmax or none [default: from the model's problem type].
    #[arg(long)]
    function_to_apply: Option<String>,
    /// text-classification, feature-extraction: cut texts longer than the model takes
    /// instead of refusing them.
    #[arg(long)]
    truncation: bool,
    /// token-classification: none, simple, first, average or max [default: none].
    #[arg(long)]
    aggregation_strategy: Option<String>,
    /// token-classification: read a long text whole, in windows of the model's length
    /// overlapping by this many tokens (needs an aggregation strategy).
    #[arg(long)]
    stride: Option<usize>,
    /// token-classification: labels left out [default: O].
    #[arg(long = "ignore-label")]
    ignore_labels: Option<Vec<String>>,
    /// zero-shot-classification: the candidate labels, comma-separated.
    #[arg(long)]
    candidate_labels: Option<String>,
    /// zero-shot-classification: score each label on its own.
    #[arg(long)]
    multi_label: bool,
    /// zero-shot-classification: the hypothesis, `{}` standing for the label
    /// [default: "This example is {}."].
    #[arg(long)]
    hypothesis_template: Option<String>,
    /// fill-mask: score only these words (repeat the flag for several).
    #[arg(long = "target")]
    targets: Vec<String>,
    /// question-answering: tokens shared by consecutive windows of a long context.
    #[arg(long)]
    doc_stride: Option<usize>,
    /// question-answering: tokens per window.
    #[arg(long)]
    max_seq_len: Option<usize>,
    /// question-answering: the longest answer, in tokens [default: 15].
    #[arg(long)]
    max_answer_len: Option<usize>,
    /// question-answering: also offer the empty answer.
    #[arg(long)]
    handle_impossible_answer: bool,
    /// text-generation: tokens to generate at most.
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// semantic-search: the passages to search (a file read as --file is).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Any other keyword argument of the task, as transformers names it: KEY=VALUE, the
    /// value read as JSON when it parses (`--arg align_to_words=false`,
    /// `--arg temperature=0.7`), else as a string.
    #[arg(long = "arg", value_name = "KEY=VALUE")]
    args: Vec<String>,
}

impl Args {
    /// The flags given, as the task's keyword arguments.
    fn kwargs(&self) -> Result<Map<String, Value>> {
        let mut kw = Map::new();
        let mut set = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                kw.insert(k.into(), v);
            }
        };
        let top_k = match self.top_k.as_deref() {
            None => None,
            Some("all") => Some(Value::Null),
            Some(k) => {
                Some(Value::from(k.parse::<u64>().with_context(|| {
                    format!("--top-k `{k}`: a number or `all`")
                })?))
            }
        };
        set("top_k", top_k);
        set(
            "function_to_apply",
            self.function_to_apply.clone().map(Value::from),
        );
        set("truncation", self.truncation.then_some(Value::Bool(true)));
        set(
            "aggregation_strategy",
            self.aggregation_strategy.clone().map(Value::from),
        );
        set("ignore_labels", self.ignore_labels.clone().map(Value::from));
        set("stride", self.stride.map(Value::from));
        set(
            "candidate_labels",
            self.candidate_labels.clone().map(Value::from),
        );
        set("multi_label", self.multi_label.then_some(Value::Bool(true)));
        set(
            "hypothesis_template",
            self.hypothesis_template.clone().map(Value::from),
        );
        set(
            "targets",
            (!self.targets.is_empty()).then(|| Value::from(self.targets.clone())),
        );
        set("doc_stride", self.doc_stride.map(Value::from));
        set("max_seq_len", self.max_seq_len.map(Value::from));
        set("max_answer_len", self.max_answer_len.map(Value::from));
        set(
            "handle_impossible_answer",
            self.handle_impossible_answer.then_some(Value::Bool(true)),
        );
        set("max_new_tokens", self.max_new_tokens.map(Value::from));
        for a in &self.args {
            let Some((k, v)) = a.split_once('=') else {
                bail!("--arg `{a}`: expected KEY=VALUE");
            };
            let v = serde_json::from_str(v).unwrap_or_else(|_| Value::from(v));
            kw.insert(k.trim().to_string(), v);
        }
        Ok(kw)
    }
}

pub fn run(args: Args) -> Result<()> {
    let inputs = match &args.file {
        Some(f) => read_inputs(f)?,
        None => args.inputs.iter().cloned().map(Value::from).collect(),
    };
    if inputs.is_empty() {
        bail!("no inputs: give them as arguments or with --file");
    }
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let mut kwargs = args.kwargs()?;
    let loading = || format!("loading `{}` for {}", args.model, args.task);
    let mut out: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("--output {}", p.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let progress = indicatif::ProgressBar::new(inputs.len() as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} inputs, {per_sec}, {eta} left",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if args.task == "semantic-search" {
        let Some(corpus) = &args.corpus else {
            bail!("semantic-search needs --corpus FILE (the passages to search)");
        };
        let passages = read_inputs(corpus)?
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => other
                    .get("text")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .with_context(|| format!("{}: a passage without `text`", corpus.display())),
            })
            .collect::<Result<Vec<_>>>()?;
        // Search scores match sentence-transformers' to 1e-4 with f32 products.
        let opts = load_options(&args, LoadOptions::default());
        let model =
            SentenceTransformer::from_pretrained_with(&args.model, &opts).with_context(loading)?;
        let search = SemanticSearch::new(model, passages, args.batch_size)?;
        let top_k = kwargs
            .remove("top_k")
            .and_then(|v| v.as_u64())
            .unwrap_or(10) as usize;
        if let Some(k) = kwargs.keys().next() {
            bail!("semantic-search takes --top-k and --batch-size, not `{k}`");
        }
        for (i, query) in inputs.iter().enumerate() {
            let text = query
                .as_str()
                .or_else(|| query.get("text").and_then(Value::as_str))
                .with_context(|| format!("input {}: a query is a string or has `text`", i + 1))?;
            let hits = search
                .search(text, top_k)
                .with_context(|| format!("input {}", i + 1))?;
            writeln!(out, "{}", serde_json::to_string(&hits)?)?;
            progress.inc(1);
        }
    } else {
        let task = Task::from_name(&args.task)?;
        let opts = load_options(&args, task.default_load_options());
        let pipe = pipeline_with(task.name(), &args.model, &opts).with_context(loading)?;
        // sentence-embeddings sorts a chunk's inputs by length before batching them.
        let chunk = match task {
            Task::SentenceEmbeddings => {
                kwargs.insert("batch_size".into(), args.batch_size.into());
                args.batch_size * 16
            }
            _ => args.batch_size,
        };
        for (c, part) in inputs.chunks(chunk).enumerate() {
            let outputs = match pipe.run(part, &kwargs) {
                Ok(o) => o,
                // Name the input at fault: rerun the chunk's inputs one by one.
                Err(_) if part.len() > 1 => part
                    .iter()
                    .enumerate()
                    .map(|(i, x)| {
                        pipe.run(std::slice::from_ref(x), &kwargs)
                            .map(|mut o| o.remove(0))
                            .with_context(|| format!("input {}", c * chunk + i + 1))
                    })
                    .collect::<Result<_>>()?,
                Err(e) => return Err(e).with_context(|| format!("input {}", c * chunk + 1)),
            };
            for o in outputs {
                writeln!(out, "{}", serde_json::to_string(&o)?)?;
            }
            progress.inc(part.len() as u64);
        }
    }
    progress.finish_and_clear();
    out.flush()?;
    Ok(())
}

/// The inputs of `path` by its extension (see `--file`): JSON values, one per line (CSV
/// rows become objects keyed by the header).
fn read_inputs(path: &Path) -> Result<Vec<Value>> {
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
                    Value::String(_) | Value::Object(_) | Value::Array(_) => Ok(v),
                    _ => bail!(
                        "{} line {}: not a string, an object or a list of messages",
                        path.display(),
                        i + 1
                    ),
                }
            })
            .collect(),
        "csv" => {
            let rows = ferroformers::core::csv::parse(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let mut rows = rows.into_iter();
            let header: Vec<String> = rows
                .next()
                .unwrap_or_default()
                .iter()
                .map(|h| h.trim().to_string())
                .collect();
            let known = ["text", "question", "sequence"];
            if !header.iter().any(|h| known.contains(&h.as_str())) {
                bail!(
                    "{}: the header `{}` has none of the columns text, question, sequence",
                    path.display(),
                    header.join(",")
                );
            }
            rows.enumerate()
                .map(|(i, fields)| {
                    if fields.len() != header.len() {
                        bail!(
                            "{} row {}: {} fields for {} columns",
                            path.display(),
                            i + 2,
                            fields.len(),
                            header.len()
                        );
                    }
                    let row: Map<String, Value> = header
                        .iter()
                        .cloned()
                        .zip(fields.into_iter().map(Value::from))
                        .collect();
                    Ok(Value::Object(row))
                })
                .collect()
        }
        _ => Ok(text
            .lines()
            .filter(|l| !l.is_empty())
            .map(Value::from)
            .collect()),
    }
}

/// The task's load options with `--matmul-precision` over them.
fn load_options(args: &Args, mut opts: LoadOptions) -> LoadOptions {
    if let Some(p) = args.matmul_precision {
        opts.matmul_precision = p;
    }
    opts
}

fn parse_matmul_precision(name: &str) -> std::result::Result<MatmulPrecision, String> {
    MatmulPrecision::from_name(name).ok_or_else(|| {
        let names = MatmulPrecision::ALL.map(MatmulPrecision::name);
        format!("`{name}` is not one of {}", names.join(", "))
    })
}
