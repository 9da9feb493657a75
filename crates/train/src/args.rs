//! `TrainingArguments`: transformers' names and defaults for what a training run does, read
//! from TOML or JSON; `validate` names the first field that is wrong.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::schedule::SchedulerType;

/// When evaluation (or saving) happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum IntervalStrategy {
    #[default]
    No,
    Steps,
    Epoch,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingArguments {
    /// Where checkpoints, logs and the final model go.
    pub output_dir: PathBuf,
    pub num_train_epochs: f64,
    /// Optimizer steps in all; overrides `num_train_epochs` when > 0.
    pub max_steps: i64,
    pub per_device_train_batch_size: usize,
    pub per_device_eval_batch_size: usize,
    pub gradient_accumulation_steps: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_epsilon: f64,
    /// `adamw_torch` (also `adamw_torch_fused`, the same math) or `sgd`.
    pub optim: String,
    /// SGD's momentum (transformers passes it through `optim_args`).
    pub sgd_momentum: f64,
    /// Clip the global gradient norm to this (0: no clipping).
    pub max_grad_norm: f64,
    pub lr_scheduler_type: String,
    /// Warmup steps, or a ratio of the total steps when below 1 (transformers 5).
    pub warmup_steps: f64,
    pub seed: u64,
    /// Log every this many steps (a ratio of the total below 1).
    pub logging_steps: f64,
    pub eval_strategy: IntervalStrategy,
    /// Steps between evaluations with `eval_strategy = "steps"` (default: logging_steps).
    pub eval_steps: Option<f64>,
    pub save_strategy: IntervalStrategy,
    pub save_steps: f64,
    /// Keep at most this many checkpoints (the best one is always kept).
    pub save_total_limit: Option<usize>,
    pub load_best_model_at_end: bool,
    /// `loss` (eval_loss) or a metric from `compute_metrics`, with or without `eval_`.
    pub metric_for_best_model: Option<String>,
    pub greater_is_better: Option<bool>,
    /// Stop after this many evaluations without improvement (the EarlyStoppingCallback).
    pub early_stopping_patience: Option<usize>,
    pub early_stopping_threshold: f64,
    /// A checkpoint folder to continue from, or `latest` (the newest in output_dir).
    pub resume_from_checkpoint: Option<String>,
    /// bf16 autocast (`ferro_nn::with_autocast`): the dense linear layers multiply in bf16
    /// over f32 master weights, in training and evaluation, as transformers' `bf16=True`.
    /// Refused where the device cannot multiply bf16 matrices. On a CPU without bf16
    /// instructions (these machines) candle widens the operands to f32 for each product:
    /// bf16's rounding, not its speed.
    pub bf16: bool,
    /// Recompute each decoder layer's activations in the backward pass instead of keeping
    /// them (causal LMs; `ferro_nn::checkpoint`): less memory, about one more forward pass.
    pub gradient_checkpointing: bool,
    /// No progress bar.
    pub disable_tqdm: bool,
}

impl Default for TrainingArguments {
    fn default() -> Self {
        Self {
            output_dir: PathBuf::from("trainer_output"),
            num_train_epochs: 3.0,
            max_steps: -1,
            per_device_train_batch_size: 8,
            per_device_eval_batch_size: 8,
            gradient_accumulation_steps: 1,
            learning_rate: 5e-5,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            optim: "adamw_torch".into(),
            sgd_momentum: 0.0,
            max_grad_norm: 1.0,
            lr_scheduler_type: "linear".into(),
            warmup_steps: 0.0,
            seed: 42,
            logging_steps: 500.0,
            eval_strategy: IntervalStrategy::No,
            eval_steps: None,
            save_strategy: IntervalStrategy::Steps,
            save_steps: 500.0,
            save_total_limit: None,
            load_best_model_at_end: false,
            metric_for_best_model: None,
            greater_is_better: None,
            early_stopping_patience: None,
            early_stopping_threshold: 0.0,
            resume_from_checkpoint: None,
            bf16: false,
            gradient_checkpointing: false,
            disable_tqdm: false,
        }
    }
}

fn invalid(param: &'static str, msg: impl Into<String>) -> TrainError {
    TrainError::InvalidArgument {
        param,
        msg: msg.into(),
    }
}

impl TrainingArguments {
    /// Reads a JSON object (a `[training]` table converted by the caller, or JSON itself).
    pub fn from_json(value: serde_json::Value, origin: &Path) -> Result<Self> {
        let args: Self = serde_json::from_value(value).map_err(|e| TrainError::File {
            path: origin.into(),
            msg: format!("training arguments: {e}"),
        })?;
        args.validate()?;
        Ok(args)
    }

    /// Checks every field; the error names the first one that is wrong.
    pub fn validate(&self) -> Result<()> {
        let positive = |x: f64| x.is_finite() && x > 0.0;
        let non_negative = |x: f64| x.is_finite() && x >= 0.0;
        if self.max_steps <= 0 && !positive(self.num_train_epochs) {
            return Err(invalid(
                "num_train_epochs",
                format!(
                    "must be > 0 when max_steps is not set, got {}",
                    self.num_train_epochs
                ),
            ));
        }
        for (name, v) in [
            (
                "per_device_train_batch_size",
                self.per_device_train_batch_size,
            ),
            (
                "per_device_eval_batch_size",
                self.per_device_eval_batch_size,
            ),
            (
                "gradient_accumulation_steps",
                self.gradient_accumulation_steps,
            ),
        ] {
            if v == 0 {
                return Err(invalid(name, "must be at least 1"));
            }
        }
        if !non_negative(self.learning_rate) {
            return Err(invalid(
                "learning_rate",
                format!("must be >= 0, got {}", self.learning_rate),
            ));
        }
        if !non_negative(self.max_grad_norm) {
            return Err(invalid(
                "max_grad_norm",
                format!("must be >= 0, got {}", self.max_grad_norm),
            ));
        }
        if !positive(self.logging_steps) || !positive(self.save_steps) {
            return Err(invalid("logging_steps / save_steps", "must be > 0"));
        }
        if self.eval_steps.is_some_and(|s| !positive(s)) {
            return Err(invalid("eval_steps", "must be > 0"));
        }
        SchedulerType::parse(&self.lr_scheduler_type)?;
        crate::schedule::warmup_steps(self.warmup_steps, 1)?;
        if !["adamw_torch", "adamw_torch_fused", "sgd"].contains(&self.optim.as_str()) {
            return Err(invalid(
                "optim",
                format!(
                    "`{}` is not one of adamw_torch, adamw_torch_fused, sgd",
                    self.optim
                ),
            ));
        }
        if self.load_best_model_at_end {
            if self.eval_strategy == IntervalStrategy::No {
                return Err(invalid("load_best_model_at_end", "needs an eval_strategy"));
            }
            if self.save_strategy != self.eval_strategy {
                return Err(invalid(
                    "load_best_model_at_end",
                    "needs save_strategy equal to eval_strategy (as in transformers)",
                ));
            }
        }
        if self.early_stopping_patience.is_some() && self.eval_strategy == IntervalStrategy::No {
            return Err(invalid("early_stopping_patience", "needs an eval_strategy"));
        }
        Ok(())
    }

    /// The metric that picks the best checkpoint (`eval_` prefixed) and whether higher
    /// is better.
    pub fn best_metric(&self) -> (String, bool) {
        let name = self
            .metric_for_best_model
            .clone()
            .unwrap_or_else(|| "loss".into());
        let key = if name.starts_with("eval_") {
            name
        } else {
            format!("eval_{name}")
        };
        let greater = self
            .greater_is_better
            .unwrap_or(!(key == "eval_loss" || key.ends_with("_loss")));
        (key, greater)
    }
}
