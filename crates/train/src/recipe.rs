//! A whole fine-tuning run from one config (what `ferro train --config train.toml` runs):
//! the model and its task, the data files and columns, and `TrainingArguments`; at the end
//! the model is saved with its tokenizer where transformers and our pipelines load it.

use std::path::{Path, PathBuf};

use ferro_core::{HubOptions, ModelSource};
use ferro_models::{BertForSequenceClassification, LoadOptions};
use ferro_tokenizers::AutoTokenizer;
use serde::Deserialize;

use crate::args::TrainingArguments;
use crate::data::{tokenize_classification, ClassificationColumns, Dataset};
use crate::error::{Result, TrainError};
use crate::trainer::{classification_metrics, TrainOutput, Trainer};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A model folder or Hub id.
    pub name_or_path: String,
    /// `text-classification` (sequence classification).
    #[serde(default = "default_task")]
    pub task: String,
    /// Class names, in id order (default: the model config's, else the dataset's
    /// dataset_info.json beside the train file).
    #[serde(default)]
    pub labels: Vec<String>,
    /// Inputs are cut to this many tokens (default: the model's limit, at most 512).
    #[serde(default)]
    pub max_length: Option<usize>,
}

fn default_task() -> String {
    "text-classification".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    pub train_file: PathBuf,
    /// Evaluation examples; or `test_size` to split them off the train file.
    #[serde(default)]
    pub eval_file: Option<PathBuf>,
    #[serde(default)]
    pub test_size: Option<f64>,
    #[serde(default = "default_text")]
    pub text_column: String,
    #[serde(default)]
    pub text_pair_column: Option<String>,
    #[serde(default = "default_label")]
    pub label_column: String,
    /// Use only the first N training examples (quick runs).
    #[serde(default)]
    pub max_train_samples: Option<usize>,
}

fn default_text() -> String {
    "text".into()
}
fn default_label() -> String {
    "label".into()
}

/// The config file: `[model]`, `[data]`, `[training]` (TrainingArguments' fields).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub model: ModelSection,
    pub data: DataSection,
    #[serde(default)]
    pub training: TrainingArguments,
}

impl TrainConfig {
    /// Reads a TOML file; relative data paths are taken from the current directory, and a
    /// leading `~/` is the home folder.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::File {
            path: path.into(),
            msg: e.to_string(),
        })?;
        let cfg: Self = toml::from_str(&text).map_err(|e| TrainError::File {
            path: path.into(),
            msg: e.to_string(),
        })?;
        let mut cfg = cfg;
        cfg.model.name_or_path = expand_home(&cfg.model.name_or_path);
        let path = |p: &Path| PathBuf::from(expand_home(&p.to_string_lossy()));
        cfg.data.train_file = path(&cfg.data.train_file);
        cfg.data.eval_file = cfg.data.eval_file.as_deref().map(path);
        cfg.training.output_dir = path(&cfg.training.output_dir);
        cfg.training.validate()?;
        Ok(cfg)
    }
}

/// A leading `~/` as the home folder, as a shell would read the config's paths.
fn expand_home(p: &str) -> String {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest).to_string_lossy().into_owned(),
        _ => p.to_string(),
    }
}

/// What a run reports.
#[derive(Debug, Clone)]
pub struct TrainReport {
    pub output: TrainOutput,
    /// Final evaluation (`eval_loss`, `eval_accuracy`, `eval_f1`), when there is an eval set.
    pub eval: Option<std::collections::BTreeMap<String, f64>>,
    /// Where the final model and tokenizer were saved.
    pub saved_to: PathBuf,
}

/// Tokenizer files copied beside a saved model, when the source has them.
const TOKENIZER_FILES: [&str; 6] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
];

/// Runs `cfg`: loads, tokenizes, trains, evaluates and saves.
pub fn run(cfg: &TrainConfig) -> Result<TrainReport> {
    if cfg.model.task != "text-classification" {
        return Err(TrainError::InvalidArgument {
            param: "model.task",
            msg: format!(
                "`{}`: only text-classification is trained from a config so far",
                cfg.model.task
            ),
        });
    }
    let source = ModelSource::resolve(&cfg.model.name_or_path, &HubOptions::from_env())?;
    let tokenizer = AutoTokenizer::from_pretrained(&cfg.model.name_or_path)?;
    let train_all = Dataset::from_file(&cfg.data.train_file)?;
    let (mut train, eval) = match (&cfg.data.eval_file, cfg.data.test_size) {
        (Some(f), _) => (train_all, Some(Dataset::from_file(f)?)),
        (None, Some(t)) => {
            let (a, b) = train_all.train_test_split(t, cfg.training.seed)?;
            (a, Some(b))
        }
        (None, None) => (train_all, None),
    };
    if let Some(n) = cfg.data.max_train_samples {
        train.rows.truncate(n);
    }
    let labels = labels_for(cfg, &source)?;
    let model = BertForSequenceClassification::for_fine_tuning(
        &source,
        &LoadOptions::default(),
        &labels,
        cfg.training.seed,
    )?;
    let max_length = cfg
        .model
        .max_length
        .unwrap_or(512)
        .min(model.bert.config.max_tokens())
        .min(tokenizer.model_max_length.unwrap_or(usize::MAX));
    let columns = ClassificationColumns {
        text: cfg.data.text_column.clone(),
        text_pair: cfg.data.text_pair_column.clone(),
        label: cfg.data.label_column.clone(),
    };
    let train = tokenize_classification(&train, &tokenizer, &columns, &labels, max_length)?;
    let eval = eval
        .map(|d| tokenize_classification(&d, &tokenizer, &columns, &labels, max_length))
        .transpose()?;
    let pad = tokenizer.pad_token_id().unwrap_or(0);
    let mut trainer = Trainer::new(model, cfg.training.clone(), train, eval.clone(), pad)?
        .with_compute_metrics(Box::new(classification_metrics));
    let output = trainer.train()?;
    let eval = match eval {
        Some(_) => Some(trainer.evaluate()?),
        None => None,
    };
    let saved_to = cfg.training.output_dir.clone();
    trainer.model.save_pretrained(&saved_to)?;
    for f in TOKENIZER_FILES {
        if let Some(p) = source.optional_file(f)? {
            std::fs::copy(&p, saved_to.join(f)).map_err(|e| TrainError::File {
                path: p.clone(),
                msg: format!("copying the tokenizer: {e}"),
            })?;
        }
    }
    if let Some(m) = &eval {
        let text = serde_json::to_string_pretty(m).unwrap_or_default();
        ferro_models::save::write_atomic(&saved_to.join("eval_results.json"), text.as_bytes())?;
    }
    Ok(TrainReport {
        output,
        eval,
        saved_to,
    })
}

/// The class names: the config's, the model's, or dataset_info.json's `id2label`.
fn labels_for(cfg: &TrainConfig, source: &ModelSource) -> Result<Vec<String>> {
    if !cfg.model.labels.is_empty() {
        return Ok(cfg.model.labels.clone());
    }
    let model_cfg = ferro_models::BertConfig::from_file(&source.required_file("config.json")?)?;
    let labels = model_cfg.labels()?;
    if !labels.is_empty() {
        return Ok(labels);
    }
    let info = cfg
        .data
        .train_file
        .parent()
        .map(|d| d.join("dataset_info.json"))
        .filter(|p| p.is_file());
    if let Some(p) = info {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).map_err(|e| TrainError::File {
                path: p.clone(),
                msg: e.to_string(),
            })?)
            .map_err(|e| TrainError::File {
                path: p.clone(),
                msg: e.to_string(),
            })?;
        if let Some(map) = v.get("id2label").and_then(|m| m.as_object()) {
            let mut labels = vec![String::new(); map.len()];
            for (k, name) in map {
                let i: usize = k.parse().map_err(|_| TrainError::File {
                    path: p.clone(),
                    msg: format!("id2label key `{k}` is not a number"),
                })?;
                if let (Some(slot), Some(name)) = (labels.get_mut(i), name.as_str()) {
                    *slot = name.to_string();
                }
            }
            if labels.iter().all(|l| !l.is_empty()) {
                return Ok(labels);
            }
        }
    }
    Err(TrainError::InvalidArgument {
        param: "model.labels",
        msg: "the model has no id2label and none was given: set model.labels".into(),
    })
}
