//! `pipeline(task, model)`: transformers' one entry point to every task. Inputs and
//! keyword arguments are JSON, as transformers' `pipe(inputs, **kwargs)` takes them, and
//! each output is shaped as transformers returns it, so a JSONL file of inputs becomes a
//! JSONL file of answers. The typed pipelines behind it can also be used directly.

use ferro_models::LoadOptions;
use serde_json::{Map, Value};

use crate::error::{PipelineError, Result};
use crate::{
    split_labels, Aggregation, FeatureExtractionPipeline, FillMaskPipeline, FunctionToApply,
    Prompt, QaOptions, QuestionAnsweringPipeline, SentenceTransformer, TextClassificationPipeline,
    TextGenerationPipeline, TokenClassificationPipeline, TopK, ZeroShotClassificationPipeline,
};

/// The tasks `pipeline` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    FeatureExtraction,
    SentenceEmbeddings,
    TextClassification,
    TokenClassification,
    QuestionAnswering,
    FillMask,
    ZeroShotClassification,
    TextGeneration,
}

impl Task {
    pub const ALL: [Task; 8] = [
        Task::FeatureExtraction,
        Task::SentenceEmbeddings,
        Task::TextClassification,
        Task::TokenClassification,
        Task::QuestionAnswering,
        Task::FillMask,
        Task::ZeroShotClassification,
        Task::TextGeneration,
    ];

    /// transformers' task name (and its aliases: sentiment-analysis, ner).
    pub fn from_name(name: &str) -> Result<Self> {
        let task = match name {
            "sentiment-analysis" => Task::TextClassification,
            "ner" => Task::TokenClassification,
            _ => *Self::ALL.iter().find(|t| t.name() == name).ok_or_else(|| {
                PipelineError::InvalidArgument {
                    param: "task",
                    msg: format!(
                        "unknown task `{name}` (known: {}, and the aliases \
                         sentiment-analysis and ner)",
                        Self::ALL.map(Task::name).join(", ")
                    ),
                }
            })?,
        };
        Ok(task)
    }

    /// What `pipeline` loads the task's model with: the defaults, but
    /// `MatmulPrecision::High` for sentence embeddings, whose accuracy contract (cosine
    /// 0.99999 to sentence-transformers) it keeps (`SentenceTransformer::from_pretrained`).
    pub fn default_load_options(self) -> LoadOptions {
        match self {
            Task::SentenceEmbeddings => SentenceTransformer::default_load_options(),
            _ => LoadOptions::default(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Task::FeatureExtraction => "feature-extraction",
            Task::SentenceEmbeddings => "sentence-embeddings",
            Task::TextClassification => "text-classification",
            Task::TokenClassification => "token-classification",
            Task::QuestionAnswering => "question-answering",
            Task::FillMask => "fill-mask",
            Task::ZeroShotClassification => "zero-shot-classification",
            Task::TextGeneration => "text-generation",
        }
    }

    /// The keyword arguments the task takes.
    pub fn arguments(self) -> &'static [&'static str] {
        match self {
            Task::FeatureExtraction => &["truncation"],
            Task::SentenceEmbeddings => &["batch_size"],
            Task::TextClassification => &["top_k", "function_to_apply", "truncation"],
            Task::TokenClassification => &["aggregation_strategy", "ignore_labels", "stride"],
            Task::QuestionAnswering => &[
                "top_k",
                "doc_stride",
                "max_seq_len",
                "max_answer_len",
                "handle_impossible_answer",
                "align_to_words",
            ],
            Task::FillMask => &["top_k", "targets"],
            Task::ZeroShotClassification => {
                &["candidate_labels", "hypothesis_template", "multi_label"]
            }
            Task::TextGeneration => &[
                "return_full_text",
                "max_new_tokens",
                "min_new_tokens",
                "do_sample",
                "temperature",
                "top_k",
                "top_p",
                "min_p",
                "typical_p",
                "repetition_penalty",
                "no_repeat_ngram_size",
                "stop_strings",
                "seed",
                "num_return_sequences",
                "num_beams",
                "length_penalty",
            ],
        }
    }
}

/// A loaded pipeline of any task.
pub enum Pipeline {
    FeatureExtraction(FeatureExtractionPipeline),
    SentenceEmbeddings(SentenceTransformer),
    TextClassification(TextClassificationPipeline),
    TokenClassification(TokenClassificationPipeline),
    QuestionAnswering(QuestionAnsweringPipeline),
    FillMask(FillMaskPipeline),
    ZeroShotClassification(ZeroShotClassificationPipeline),
    TextGeneration(Box<TextGenerationPipeline>),
}

/// transformers' `pipeline(task, model=...)`: the model (folder, file or Hub id) loaded
/// for `task` with the task's `Task::default_load_options`.
pub fn pipeline(task: &str, model: &str) -> Result<Pipeline> {
    let task = Task::from_name(task)?;
    load(task, model, &task.default_load_options())
}

/// `pipeline` with the model loaded with `opts` (transformers' `model_kwargs`).
pub fn pipeline_with(task: &str, model: &str, opts: &LoadOptions) -> Result<Pipeline> {
    load(Task::from_name(task)?, model, opts)
}

fn load(task: Task, model: &str, opts: &LoadOptions) -> Result<Pipeline> {
    Ok(match task {
        Task::FeatureExtraction => Pipeline::FeatureExtraction(
            FeatureExtractionPipeline::from_pretrained_with(model, opts)?,
        ),
        Task::SentenceEmbeddings => {
            Pipeline::SentenceEmbeddings(SentenceTransformer::from_pretrained_with(model, opts)?)
        }
        Task::TextClassification => Pipeline::TextClassification(
            TextClassificationPipeline::from_pretrained_with(model, opts)?,
        ),
        Task::TokenClassification => Pipeline::TokenClassification(
            TokenClassificationPipeline::from_pretrained_with(model, opts)?,
        ),
        Task::QuestionAnswering => Pipeline::QuestionAnswering(
            QuestionAnsweringPipeline::from_pretrained_with(model, opts)?,
        ),
        Task::FillMask => Pipeline::FillMask(FillMaskPipeline::from_pretrained_with(model, opts)?),
        Task::ZeroShotClassification => Pipeline::ZeroShotClassification(
            ZeroShotClassificationPipeline::from_pretrained_with(model, opts)?,
        ),
        Task::TextGeneration => Pipeline::TextGeneration(Box::new(
            TextGenerationPipeline::from_pretrained_with(model, opts)?,
        )),
    })
}

impl Pipeline {
    pub fn task(&self) -> Task {
        match self {
            Pipeline::FeatureExtraction(_) => Task::FeatureExtraction,
            Pipeline::SentenceEmbeddings(_) => Task::SentenceEmbeddings,
            Pipeline::TextClassification(_) => Task::TextClassification,
            Pipeline::TokenClassification(_) => Task::TokenClassification,
            Pipeline::QuestionAnswering(_) => Task::QuestionAnswering,
            Pipeline::FillMask(_) => Task::FillMask,
            Pipeline::ZeroShotClassification(_) => Task::ZeroShotClassification,
            Pipeline::TextGeneration(_) => Task::TextGeneration,
        }
    }

    /// Runs the task on each input (a JSON string, or an object with the task's fields:
    /// `text` (and `text_pair`); `question` and `context`; `sequence` and
    /// `candidate_labels`; for text-generation also a list of chat messages) with the
    /// keyword arguments `kwargs`; one output per input, in order.
    pub fn run(&self, inputs: &[Value], kwargs: &Map<String, Value>) -> Result<Vec<Value>> {
        let task = self.task();
        if let Some(unknown) = kwargs
            .keys()
            .find(|k| !task.arguments().contains(&k.as_str()))
        {
            return Err(PipelineError::InvalidArgument {
                param: "kwargs",
                msg: format!(
                    "`{unknown}` is not an argument of {} (it takes: {})",
                    task.name(),
                    task.arguments().join(", ")
                ),
            });
        }
        let args = Args(kwargs);
        if let Pipeline::SentenceEmbeddings(model) = self {
            // Batched across inputs, sorted by length as sentence-transformers does.
            let texts = inputs.iter().map(text_of).collect::<Result<Vec<_>>>()?;
            let batch_size = args.usize("batch_size")?.unwrap_or(32);
            return Ok(model
                .encode(&texts, batch_size)?
                .into_iter()
                .map(|v| serde_json::to_value(v).unwrap_or_default())
                .collect());
        }
        inputs
            .iter()
            .map(|input| self.run_one(input, &args))
            .collect()
    }

    fn run_one(&self, input: &Value, args: &Args) -> Result<Value> {
        match self {
            Pipeline::SentenceEmbeddings(model) => {
                json(&model.encode(&[text_of(input)?], 1)?.remove(0))
            }
            Pipeline::FeatureExtraction(p) => {
                json(&p.call(text_of(input)?, args.bool("truncation")?.unwrap_or(false))?)
            }
            Pipeline::TextClassification(p) => {
                let top_k = match args.0.get("top_k") {
                    None => TopK::Best,
                    Some(Value::Null) => TopK::All,
                    Some(_) => TopK::K(args.usize("top_k")?.unwrap_or(1)),
                };
                let function = match args.str("function_to_apply")? {
                    Some(f) => FunctionToApply::parse(f)?,
                    None => FunctionToApply::Default,
                };
                let pair = input.get("text_pair").and_then(Value::as_str);
                let truncation = args.bool("truncation")?.unwrap_or(false);
                json(&p.call_pair(text_of(input)?, pair, top_k, function, truncation)?)
            }
            Pipeline::TokenClassification(p) => {
                let aggregation =
                    Aggregation::parse(args.str("aggregation_strategy")?.unwrap_or("none"))?;
                let ignore = match args.strings("ignore_labels")? {
                    Some(labels) => labels,
                    None => vec!["O".to_string()],
                };
                let stride = args.usize("stride")?;
                json(&p.call_windows(text_of(input)?, aggregation, &ignore, stride)?)
            }
            Pipeline::QuestionAnswering(p) => {
                let field = |name: &'static str| {
                    input.get(name).and_then(Value::as_str).ok_or_else(|| {
                        PipelineError::InvalidArgument {
                            param: "inputs",
                            msg: format!(
                                "question-answering takes objects with `question` and \
                                 `context` strings; `{name}` is missing"
                            ),
                        }
                    })
                };
                let d = QaOptions::default();
                let opts = QaOptions {
                    top_k: args.usize("top_k")?.unwrap_or(d.top_k),
                    doc_stride: args.usize("doc_stride")?,
                    max_seq_len: args.usize("max_seq_len")?,
                    max_answer_len: args.usize("max_answer_len")?.unwrap_or(d.max_answer_len),
                    handle_impossible_answer: args
                        .bool("handle_impossible_answer")?
                        .unwrap_or(d.handle_impossible_answer),
                    align_to_words: args.bool("align_to_words")?.unwrap_or(d.align_to_words),
                };
                let mut answers = p.call(field("question")?, field("context")?, &opts)?;
                // transformers: one answer is returned bare, several as a list.
                match answers.len() {
                    1 => json(&answers.remove(0)),
                    _ => json(&answers),
                }
            }
            Pipeline::FillMask(p) => {
                let targets = args.strings("targets")?;
                let mut per_mask = p.call(
                    text_of(input)?,
                    args.usize("top_k")?.unwrap_or(5),
                    targets.as_deref(),
                )?;
                match per_mask.len() {
                    1 => json(&per_mask.remove(0)),
                    _ => json(&per_mask),
                }
            }
            Pipeline::ZeroShotClassification(p) => {
                let labels = match input.get("candidate_labels") {
                    Some(v) => labels_of(v)?,
                    None => match args.0.get("candidate_labels") {
                        Some(v) => labels_of(v)?,
                        None => Vec::new(),
                    },
                };
                let text = match input.get("sequence") {
                    Some(Value::String(s)) => s.as_str(),
                    _ => text_of(input)?,
                };
                let template = args
                    .str("hypothesis_template")?
                    .unwrap_or("This example is {}.");
                let multi = args.bool("multi_label")?.unwrap_or(false);
                json(&p.call(text, &labels, template, multi)?)
            }
            Pipeline::TextGeneration(p) => {
                let prompt = match input {
                    Value::String(s) => Prompt::Text(s.clone()),
                    Value::Array(messages) => Prompt::Chat(messages.clone()),
                    Value::Object(o) => match (o.get("messages"), o.get("text")) {
                        (Some(Value::Array(m)), _) => Prompt::Chat(m.clone()),
                        (_, Some(Value::String(s))) => Prompt::Text(s.clone()),
                        _ => return Err(bad_input("text-generation", "`text` or `messages`")),
                    },
                    _ => return Err(bad_input("text-generation", "`text` or `messages`")),
                };
                let mut cfg = p.generation_config()?;
                let mut gen = args.0.clone();
                let full = gen.remove("return_full_text");
                cfg.update(&Value::Object(gen))?;
                let full = match full {
                    None => true,
                    Some(v) => v.as_bool().ok_or_else(|| PipelineError::InvalidArgument {
                        param: "return_full_text",
                        msg: format!("must be true or false, got {v}"),
                    })?,
                };
                json(&p.call(&prompt, &cfg, full)?)
            }
        }
    }
}

/// A pipeline's output (plain data) as JSON.
fn json<T: serde::Serialize>(v: &T) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| PipelineError::InvalidArgument {
        param: "inputs",
        msg: format!("the output cannot be written as JSON: {e}"),
    })
}

fn bad_input(task: &str, fields: &str) -> PipelineError {
    PipelineError::InvalidArgument {
        param: "inputs",
        msg: format!("{task} takes a string or an object with {fields}"),
    }
}

/// The text of an input: a string, or an object's `text`.
fn text_of(input: &Value) -> Result<&str> {
    match input {
        Value::String(s) => Ok(s),
        Value::Object(o) => match o.get("text") {
            Some(Value::String(s)) => Ok(s),
            _ => Err(bad_input("this task", "a `text` string")),
        },
        _ => Err(bad_input("this task", "a `text` string")),
    }
}

/// Candidate labels: a list of strings, or one comma-separated string.
fn labels_of(v: &Value) -> Result<Vec<String>> {
    match v {
        Value::String(s) => Ok(split_labels(s)),
        Value::Array(a) => a
            .iter()
            .map(|l| {
                l.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| PipelineError::InvalidArgument {
                        param: "candidate_labels",
                        msg: format!("must be strings, got {l}"),
                    })
            })
            .collect(),
        other => Err(PipelineError::InvalidArgument {
            param: "candidate_labels",
            msg: format!("must be a list of strings or a comma-separated string, got {other}"),
        }),
    }
}

/// The call's keyword arguments, read with their types checked.
struct Args<'a>(&'a Map<String, Value>);

impl Args<'_> {
    /// The static name of argument `key` (for error messages).
    fn param(key: &str) -> &'static str {
        Task::ALL
            .iter()
            .flat_map(|t| t.arguments())
            .find(|a| **a == key)
            .copied()
            .unwrap_or("kwargs")
    }

    fn wrong(key: &str, want: &str, got: &Value) -> PipelineError {
        PipelineError::InvalidArgument {
            param: Self::param(key),
            msg: format!("must be {want}, got {got}"),
        }
    }

    fn present(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    fn usize(&self, key: &str) -> Result<Option<usize>> {
        self.present(key)
            .map(|v| {
                v.as_u64()
                    .map(|n| n as usize)
                    .ok_or_else(|| Self::wrong(key, "a non-negative integer", v))
            })
            .transpose()
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        self.present(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| Self::wrong(key, "true or false", v))
            })
            .transpose()
    }

    fn str(&self, key: &str) -> Result<Option<&str>> {
        self.present(key)
            .map(|v| v.as_str().ok_or_else(|| Self::wrong(key, "a string", v)))
            .transpose()
    }

    /// A list of strings (one string counts as a list of one).
    fn strings(&self, key: &str) -> Result<Option<Vec<String>>> {
        self.present(key)
            .map(|v| match v {
                Value::String(s) => Ok(vec![s.clone()]),
                Value::Array(a) => a
                    .iter()
                    .map(|x| {
                        x.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| Self::wrong(key, "a list of strings", v))
                    })
                    .collect(),
                _ => Err(Self::wrong(key, "a list of strings", v)),
            })
            .transpose()
    }
}
