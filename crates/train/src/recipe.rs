//! A whole training run from one config (what `ferro train --config train.toml` runs):
//! the model (a pretrained one to fine-tune, or a config.json to train from scratch) and
//! its task, the data files and columns, and `TrainingArguments`; at the end the model is
//! saved with its tokenizer where transformers and our pipelines load it.

use std::path::{Path, PathBuf};

use ferro_core::{HubOptions, ModelSource};
use ferro_models::{
    AutoModelForCausalLM, BertForSequenceClassification, BertForTokenClassification, CausalLm,
    LoadOptions,
};
use ferro_nn::lora::LoraConfig;
use ferro_tokenizers::AutoTokenizer;
use serde::Deserialize;

use crate::args::TrainingArguments;
use crate::data::{
    tokenize_causal_lm, tokenize_classification, tokenize_grouped, tokenize_masked_lm,
    tokenize_token_classification, ClassificationColumns, Dataset, MlmMasking,
};
use crate::error::{Result, TrainError};
use crate::trainer::{
    classification_metrics, entity_metrics, EvalPrediction, LoraModel, MaskedLm, TrainOutput,
    TrainableModel, Trainer,
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A model folder or Hub id (the pretrained model to fine-tune).
    #[serde(default)]
    pub name_or_path: String,
    /// Pretraining from scratch instead: a config.json (or its folder) whose architecture
    /// is built with new weights (`AutoModelForCausalLM.from_config`); causal-lm only.
    #[serde(default)]
    pub from_config: Option<PathBuf>,
    /// The tokenizer's folder or Hub id, when it is not the model's: by default
    /// `name_or_path`, or the folder of `from_config`.
    #[serde(default)]
    pub tokenizer: Option<String>,
    /// `text-classification`, `token-classification`, `masked-lm` or `causal-lm`.
    #[serde(default = "default_task")]
    pub task: String,
    /// A GGUF causal LM: expand its weights to f32 (full precision training, or LoRA on
    /// a dense base) instead of keeping them quantized (QLoRA).
    #[serde(default)]
    pub dequantize: bool,
    /// Class names, in id order (default: the model config's, else the dataset's
    /// dataset_info.json beside the train file).
    #[serde(default)]
    pub labels: Vec<String>,
    /// Inputs are cut to this many tokens (default: the model's limit, at most 512).
    #[serde(default)]
    pub max_length: Option<usize>,
    /// Fields set over the model's config.json, as transformers'
    /// `from_pretrained(..., **kwargs)`: e.g. `{ hidden_dropout_prob = 0.0 }`.
    #[serde(default)]
    pub config_overrides: serde_json::Map<String, serde_json::Value>,
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
    /// masked-lm: the share of tokens masked.
    #[serde(default = "default_mlm_probability")]
    pub mlm_probability: f64,
    /// token-classification: the words and their tags.
    #[serde(default = "default_tokens")]
    pub tokens_column: String,
    #[serde(default = "default_tags")]
    pub tags_column: String,
    /// Use only the first N training examples (quick runs).
    #[serde(default)]
    pub max_train_samples: Option<usize>,
    /// causal-lm: run_clm.py's `group_texts`: the texts are joined (EOS after each) and cut
    /// into blocks of this many tokens, instead of one example per text.
    #[serde(default)]
    pub block_size: Option<usize>,
}

fn default_text() -> String {
    "text".into()
}
fn default_label() -> String {
    "label".into()
}
fn default_mlm_probability() -> f64 {
    0.15
}
fn default_tokens() -> String {
    "tokens".into()
}
fn default_tags() -> String {
    "ner_tags".into()
}

/// The config file: `[model]`, `[data]`, `[training]` (TrainingArguments' fields) and
/// optionally `[lora]` (PEFT's LoraConfig fields: r, lora_alpha, lora_dropout,
/// target_modules, ...) to train adapters instead of the weights.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub model: ModelSection,
    pub data: DataSection,
    #[serde(default)]
    pub training: TrainingArguments,
    #[serde(default)]
    pub lora: Option<LoraConfig>,
}

impl TrainConfig {
    /// Reads a TOML file; relative data paths are taken from the current directory, and a
    /// leading `~/` is the home folder.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::File {
            path: path.into(),
            msg: e.to_string(),
        })?;
        Self::from_toml(&text, path)
    }

    /// Tokens an input is cut to: `model.max_length` (512 when unset), at most what the
    /// model and its tokenizer take.
    pub fn max_length(&self, tokenizer: &ferro_tokenizers::Tokenizer, model_limit: usize) -> usize {
        self.model
            .max_length
            .unwrap_or(512)
            .min(model_limit)
            .min(tokenizer.model_max_length.unwrap_or(usize::MAX))
    }

    /// Parses TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self> {
        let cfg: Self = toml::from_str(text).map_err(|e| TrainError::File {
            path: origin.into(),
            msg: e.to_string(),
        })?;
        let mut cfg = cfg;
        cfg.model.name_or_path = expand_home(&cfg.model.name_or_path);
        cfg.model.tokenizer = cfg.model.tokenizer.as_deref().map(expand_home);
        let path = |p: &Path| PathBuf::from(expand_home(&p.to_string_lossy()));
        cfg.model.from_config = cfg.model.from_config.as_deref().map(path);
        cfg.data.train_file = path(&cfg.data.train_file);
        cfg.data.eval_file = cfg.data.eval_file.as_deref().map(path);
        cfg.training.output_dir = path(&cfg.training.output_dir);
        cfg.training.validate()?;
        cfg.validate_model()?;
        Ok(cfg)
    }

    /// One model source: a pretrained model, or a config to train from scratch (a new
    /// causal LM, trained whole).
    fn validate_model(&self) -> Result<()> {
        let bad =
            |param: &'static str, msg: String| Err(TrainError::InvalidArgument { param, msg });
        let m = &self.model;
        match (&m.from_config, m.name_or_path.is_empty()) {
            (None, true) => bad(
                "model.name_or_path",
                "give name_or_path (a pretrained model) or from_config (a config.json to train \
                 from scratch)"
                    .into(),
            ),
            (Some(_), false) => bad(
                "model.from_config",
                format!(
                    "trains new weights, name_or_path `{}` would load pretrained ones: give one \
                     of them (a separate tokenizer goes in model.tokenizer)",
                    m.name_or_path
                ),
            ),
            (Some(_), true) if m.task != "causal-lm" => bad(
                "model.from_config",
                format!("training from scratch is for causal-lm, not {}", m.task),
            ),
            (Some(_), true) if self.lora.is_some() => bad(
                "lora",
                "LoRA adapts trained weights; a model from a config is trained whole".into(),
            ),
            _ => Ok(()),
        }
    }
}

impl ModelSection {
    /// Where the tokenizer comes from: `tokenizer`, else the model, else the folder of
    /// `from_config`.
    pub fn tokenizer_name(&self) -> String {
        if let Some(t) = &self.tokenizer {
            return t.clone();
        }
        match &self.from_config {
            Some(c) if self.name_or_path.is_empty() => {
                let dir = if c.is_dir() {
                    c.as_path()
                } else {
                    c.parent().unwrap_or(Path::new("."))
                };
                dir.to_string_lossy().into_owned()
            }
            _ => self.name_or_path.clone(),
        }
    }

    /// The pretrained model.
    fn source(&self) -> Result<ModelSource> {
        if self.name_or_path.is_empty() {
            return Err(TrainError::InvalidArgument {
                param: "model.name_or_path",
                msg: "no pretrained model is given (a model trained from a config is evaluated \
                      from its output_dir: `ferro eval --model <output_dir>`)"
                    .into(),
            });
        }
        Ok(ModelSource::resolve(
            &self.name_or_path,
            &HubOptions::from_env(),
        )?)
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

/// `[lora]` for the config's task: the classifiers' heads are new, so they are trained
/// whole and saved with the adapter, as PEFT's task types SEQ_CLS / TOKEN_CLS arrange
/// (`modules_to_save` gets `classifier`); masked-LM has no PEFT task type and is refused.
fn lora_for_task(cfg: &TrainConfig) -> Result<Option<LoraConfig>> {
    let Some(lora) = &cfg.lora else {
        return Ok(None);
    };
    let mut lora = lora.clone();
    let task_type = match cfg.model.task.as_str() {
        "causal-lm" => None,
        "text-classification" => Some("SEQ_CLS"),
        "token-classification" => Some("TOKEN_CLS"),
        other => {
            return Err(TrainError::InvalidArgument {
                param: "lora",
                msg: format!(
                    "LoRA from a config is for causal-lm, text-classification and \
                     token-classification, not {other}"
                ),
            })
        }
    };
    if lora.task_type.is_none() {
        lora.task_type = task_type.map(String::from);
    }
    Ok(Some(lora))
}

/// Runs `cfg`: loads, tokenizes, trains, evaluates and saves.
pub fn run(cfg: &TrainConfig) -> Result<TrainReport> {
    let cfg = &TrainConfig {
        lora: lora_for_task(cfg)?,
        ..cfg.clone()
    };
    let tokenizer_name = cfg.model.tokenizer_name();
    let tokenizer_source = ModelSource::resolve(&tokenizer_name, &HubOptions::from_env())?;
    let tokenizer = AutoTokenizer::from_source(&tokenizer_source, None)?;
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
    let seed = cfg.training.seed;
    let opts = LoadOptions {
        lora: cfg
            .lora
            .clone()
            .map(|c| ferro_nn::lora::LoraSpec::new(c, seed)),
        dequantize: cfg.model.dequantize,
        config_overrides: cfg.model.config_overrides.clone(),
        ..LoadOptions::default()
    };
    let limit = |model_limit: usize| cfg.max_length(&tokenizer, model_limit);
    let pad = tokenizer.pad_token_id().unwrap_or(0);
    let job = Job {
        cfg,
        tokenizer_source: &tokenizer_source,
        pad,
    };
    match cfg.model.task.as_str() {
        "text-classification" => {
            let source = cfg.model.source()?;
            let labels = labels_for(cfg, &source)?;
            let model =
                BertForSequenceClassification::for_fine_tuning(&source, &opts, &labels, seed)?;
            let max_length = limit(model.bert.config.max_tokens());
            let columns = ClassificationColumns {
                text: cfg.data.text_column.clone(),
                text_pair: cfg.data.text_pair_column.clone(),
                label: cfg.data.label_column.clone(),
            };
            let tok =
                |d: &Dataset| tokenize_classification(d, &tokenizer, &columns, &labels, max_length);
            let (train, eval) = (tok(&train)?, eval.as_ref().map(tok).transpose()?);
            job.run(model, train, eval, Box::new(classification_metrics))
        }
        "token-classification" => {
            let source = cfg.model.source()?;
            let labels = labels_for(cfg, &source)?;
            let model = BertForTokenClassification::for_fine_tuning(&source, &opts, &labels, seed)?;
            let max_length = limit(model.bert.config.max_tokens());
            let (words, tags) = (&cfg.data.tokens_column, &cfg.data.tags_column);
            let tok = |d: &Dataset| {
                tokenize_token_classification(d, &tokenizer, words, tags, &labels, max_length)
            };
            let (train, eval) = (tok(&train)?, eval.as_ref().map(tok).transpose()?);
            job.run(model, train, eval, Box::new(entity_metrics(labels)))
        }
        "masked-lm" | "fill-mask" => {
            let opts = LoadOptions {
                trainable: true,
                ..opts
            };
            let model = ferro_models::BertForMaskedLM::from_source(&cfg.model.source()?, &opts)?;
            let max_length = limit(model.bert.config.max_tokens());
            let masking = MlmMasking::for_tokenizer(&tokenizer, cfg.data.mlm_probability)?;
            let column = &cfg.data.text_column;
            let tok = |d: &Dataset| tokenize_masked_lm(d, &tokenizer, column, max_length);
            let (train, eval) = (tok(&train)?, eval.as_ref().map(tok).transpose()?);
            // Evaluation examples are masked once, the same way every time.
            let eval = eval.map(|ex| {
                ex.iter()
                    .enumerate()
                    .map(|(i, e)| masking.apply(e, seed ^ (1 << 63) ^ i as u64))
                    .collect()
            });
            job.run(
                MaskedLm { model, masking },
                train,
                eval,
                Box::new(|_: &EvalPrediction| Ok(Default::default())),
            )
        }
        "causal-lm" => {
            let opts = LoadOptions {
                trainable: cfg.lora.is_none(),
                ..opts
            };
            let model = match &cfg.model.from_config {
                Some(config) => {
                    let model = AutoModelForCausalLM::from_config(config, &opts, seed)?;
                    check_vocab(&model.config, &tokenizer, config)?;
                    model
                }
                None => AutoModelForCausalLM::from_source(&cfg.model.source()?, &opts)?,
            };
            let tok = causal_lm_examples(cfg, &tokenizer, &model)?;
            let (train, eval) = (tok(&train)?, eval.as_ref().map(&tok).transpose()?);
            job.run(
                model,
                train,
                eval,
                Box::new(|_: &EvalPrediction| Ok(Default::default())),
            )
        }
        other => Err(TrainError::InvalidArgument {
            param: "model.task",
            msg: format!(
                "`{other}` is not one of text-classification, token-classification, masked-lm, \
                 causal-lm"
            ),
        }),
    }
}

/// Every token id of the tokenizer must have a row in a new model's embeddings.
fn check_vocab(
    model: &ferro_models::CausalLmConfig,
    tokenizer: &ferro_tokenizers::Tokenizer,
    config: &Path,
) -> Result<()> {
    if model.vocab_size < tokenizer.vocab_size() {
        return Err(TrainError::InvalidArgument {
            param: "model.from_config",
            msg: format!(
                "{}: vocab_size {} is smaller than the tokenizer's {} tokens",
                config.display(),
                model.vocab_size,
                tokenizer.vocab_size()
            ),
        });
    }
    Ok(())
}

/// How a causal-lm run makes its examples: blocks of `data.block_size` tokens
/// (`group_texts`) when it is set, else one example per text (or chat) cut to the length
/// limit.
fn causal_lm_examples<'a>(
    cfg: &'a TrainConfig,
    tokenizer: &'a ferro_tokenizers::Tokenizer,
    model: &CausalLm,
) -> Result<impl Fn(&Dataset) -> Result<Vec<crate::data::Example>> + 'a> {
    let column = &cfg.data.text_column;
    let block_size = cfg.data.block_size;
    if let Some(b) = block_size {
        if b > model.max_positions() {
            return Err(TrainError::InvalidArgument {
                param: "data.block_size",
                msg: format!(
                    "{b} is more than the model's {} positions",
                    model.max_positions()
                ),
            });
        }
    }
    let max_length = cfg.max_length(tokenizer, model.max_positions());
    Ok(move |d: &Dataset| match block_size {
        Some(b) => tokenize_grouped(d, tokenizer, column, b),
        None => tokenize_causal_lm(d, tokenizer, column, max_length),
    })
}

/// What every task does once its model and examples are ready.
struct Job<'a> {
    cfg: &'a TrainConfig,
    /// Where the tokenizer files copied beside the saved model come from.
    tokenizer_source: &'a ModelSource,
    pad: u32,
}

impl Job<'_> {
    fn run<M: TrainableModel + 'static>(
        &self,
        model: M,
        train: Vec<crate::data::Example>,
        eval: Option<Vec<crate::data::Example>>,
        metrics: crate::trainer::ComputeMetrics,
    ) -> Result<TrainReport> {
        match &self.cfg.lora {
            Some(config) => self.train(
                LoraModel {
                    model,
                    config: config.clone(),
                },
                train,
                eval,
                metrics,
            ),
            None => self.train(model, train, eval, metrics),
        }
    }

    fn train<M: TrainableModel>(
        &self,
        model: M,
        train: Vec<crate::data::Example>,
        eval: Option<Vec<crate::data::Example>>,
        metrics: crate::trainer::ComputeMetrics,
    ) -> Result<TrainReport> {
        let has_eval = eval.is_some();
        let mut trainer = Trainer::new(model, self.cfg.training.clone(), train, eval, self.pad)?
            .with_compute_metrics(metrics);
        let output = trainer.train()?;
        let eval = if has_eval {
            Some(trainer.evaluate()?)
        } else {
            None
        };
        let saved_to = self.cfg.training.output_dir.clone();
        trainer.model.save_pretrained(&saved_to)?;
        for f in TOKENIZER_FILES {
            if let Some(p) = self.tokenizer_source.optional_file(f)? {
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

/// What `ferro eval` evaluates: `cfg`'s model (or `adapter` on it) on `file` (else the
/// config's eval file, else its test split).
pub fn evaluate_config(
    cfg: &TrainConfig,
    file: Option<&Path>,
    adapter: Option<&Path>,
) -> Result<std::collections::BTreeMap<String, f64>> {
    let source = cfg.model.source()?;
    let tokenizer = AutoTokenizer::from_pretrained(&cfg.model.tokenizer_name())?;
    let data = match (file, &cfg.data.eval_file, cfg.data.test_size) {
        (Some(f), _, _) => Dataset::from_file(f)?,
        (None, Some(f), _) => Dataset::from_file(f)?,
        (None, None, Some(t)) => {
            Dataset::from_file(&cfg.data.train_file)?
                .train_test_split(t, cfg.training.seed)?
                .1
        }
        (None, None, None) => {
            return Err(TrainError::InvalidArgument {
                param: "data.eval_file",
                msg: "nothing to evaluate on: give a file, data.eval_file or data.test_size".into(),
            })
        }
    };
    let opts = LoadOptions {
        lora: adapter
            .map(ferro_nn::lora::LoraSpec::from_pretrained)
            .transpose()?,
        dequantize: cfg.model.dequantize,
        config_overrides: cfg.model.config_overrides.clone(),
        ..LoadOptions::default()
    };
    let limit = |model_limit: usize| cfg.max_length(&tokenizer, model_limit);
    let pad = tokenizer.pad_token_id().unwrap_or(0);
    let batch = cfg.training.per_device_eval_batch_size;
    // An adapter of a classifier carries its head (`modules_to_save`); the base may be a
    // bare encoder, so the head is built as for fine-tuning and read from the adapter.
    let seed = cfg.training.seed;
    match cfg.model.task.as_str() {
        "text-classification" => {
            let model = match adapter {
                Some(_) => BertForSequenceClassification::for_fine_tuning(
                    &source,
                    &opts,
                    &labels_for(cfg, &source)?,
                    seed,
                )?,
                None => BertForSequenceClassification::from_source(&source, &opts)?,
            };
            let labels = model.bert.config.labels()?;
            let columns = ClassificationColumns {
                text: cfg.data.text_column.clone(),
                text_pair: cfg.data.text_pair_column.clone(),
                label: cfg.data.label_column.clone(),
            };
            let examples = tokenize_classification(
                &data,
                &tokenizer,
                &columns,
                &labels,
                limit(model.bert.config.max_tokens()),
            )?;
            let metrics: crate::trainer::ComputeMetrics = Box::new(classification_metrics);
            crate::trainer::evaluate(&model, &examples, batch, pad, Some(&metrics))
        }
        "token-classification" => {
            let model = match adapter {
                Some(_) => BertForTokenClassification::for_fine_tuning(
                    &source,
                    &opts,
                    &labels_for(cfg, &source)?,
                    seed,
                )?,
                None => BertForTokenClassification::from_source(&source, &opts)?,
            };
            let labels = model.bert.config.labels()?;
            let (words, tags) = (&cfg.data.tokens_column, &cfg.data.tags_column);
            let examples = tokenize_token_classification(
                &data,
                &tokenizer,
                words,
                tags,
                &labels,
                limit(model.bert.config.max_tokens()),
            )?;
            let metrics: crate::trainer::ComputeMetrics = Box::new(entity_metrics(labels));
            crate::trainer::evaluate(&model, &examples, batch, pad, Some(&metrics))
        }
        "causal-lm" => {
            let model = AutoModelForCausalLM::from_source(&source, &opts)?;
            let examples = causal_lm_examples(cfg, &tokenizer, &model)?(&data)?;
            crate::trainer::evaluate(&model, &examples, batch, pad, None)
        }
        other => Err(TrainError::InvalidArgument {
            param: "model.task",
            msg: format!(
                "`{other}` is not one of text-classification, token-classification, masked-lm, \
                 causal-lm"
            ),
        }),
    }
}
