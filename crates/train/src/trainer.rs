//! `Trainer`: transformers' training loop. Batches in a seeded order per epoch, gradient
//! accumulation, clipping, the optimizer and schedule the arguments name, logs (JSONL, a
//! progress bar), evaluation with `compute_metrics`, checkpoints written whole or not at
//! all, the best model kept, early stopping, and resuming a killed run exactly where its
//! last checkpoint left it.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use ferro_models::{
    BertForMaskedLM, BertForSequenceClassification, BertForTokenClassification, CausalLm,
};
use ferro_nn::lora::{peft_saved_key, LoraConfig};
use ferro_nn::{save_adapter, Parameters};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::{json, Value};

use crate::args::{IntervalStrategy, TrainingArguments};
use crate::data::{collate, Batch, Example, MlmMasking};
use crate::error::{Result, TrainError};
use crate::optim::{clip_grad_norm, AdamW, Optimizer, Sgd};
use crate::report::{losses_from_log, plot_losses, EventWriter};
use crate::schedule::{warmup_steps, Schedule, SchedulerType};

/// A model the Trainer can train: sequence or token classifiers, causal LMs.
pub trait TrainableModel {
    /// Its trainable parameters by name.
    fn parameters(&self) -> Vec<(String, Var)>;
    /// Whether labels are per token (token classification, causal LMs) or per row.
    fn per_token_labels(&self) -> bool;
    /// Whether the logits at position t score the label at t + 1 (causal LMs).
    fn shifted_labels(&self) -> bool {
        false
    }
    /// Masked-LM training: how batches are masked as they are formed.
    fn masking(&self) -> Option<&MlmMasking> {
        None
    }
    /// The batch's loss (what the model computes when given `labels`) and its logits,
    /// `(b, classes)` or `(b, t, classes)`.
    fn forward(&self, batch: &Batch) -> Result<(Tensor, Tensor)>;
    /// The batch's loss alone, for a training step: `forward`'s, unless the model can skip
    /// the logits no label scores.
    fn loss(&self, batch: &Batch) -> Result<Tensor> {
        Ok(self.forward(batch)?.0)
    }
    /// transformers' `save_pretrained`.
    fn save_pretrained(&self, dir: &Path) -> Result<()>;
    /// The parameter list (shared with the model's layers), for training mode.
    fn parameter_store(&self) -> Parameters;
    /// `model.train()` / `model.eval()`: dropout on or off.
    fn set_training(&self, on: bool) {
        self.parameter_store().set_training(on);
    }
    /// transformers' `gradient_checkpointing_enable()`; an error where the model does not
    /// recompute its layers.
    fn gradient_checkpointing_enable(&mut self) -> Result<()> {
        Err(TrainError::InvalidArgument {
            param: "gradient_checkpointing",
            msg: format!(
                "{} does not support it (the causal LMs do)",
                std::any::type_name::<Self>()
            ),
        })
    }
}

/// A model trained through LoRA adapters: checkpoints and the final save write the adapter
/// in PEFT's format (adapter_config.json, adapter_model.safetensors) instead of weights.
pub struct LoraModel<M> {
    pub model: M,
    pub config: LoraConfig,
}

impl<M: TrainableModel> TrainableModel for LoraModel<M> {
    fn parameters(&self) -> Vec<(String, Var)> {
        self.model.parameters()
    }
    fn per_token_labels(&self) -> bool {
        self.model.per_token_labels()
    }
    fn shifted_labels(&self) -> bool {
        self.model.shifted_labels()
    }
    fn masking(&self) -> Option<&MlmMasking> {
        self.model.masking()
    }
    fn forward(&self, batch: &Batch) -> Result<(Tensor, Tensor)> {
        self.model.forward(batch)
    }
    fn loss(&self, batch: &Batch) -> Result<Tensor> {
        self.model.loss(batch)
    }
    fn save_pretrained(&self, dir: &Path) -> Result<()> {
        Ok(save_adapter(
            dir,
            &self.config,
            &self.model.parameter_store(),
        )?)
    }
    fn parameter_store(&self) -> Parameters {
        self.model.parameter_store()
    }
    fn gradient_checkpointing_enable(&mut self) -> Result<()> {
        self.model.gradient_checkpointing_enable()
    }
}

impl TrainableModel for BertForSequenceClassification {
    fn parameters(&self) -> Vec<(String, Var)> {
        self.bert.parameters.named()
    }
    fn per_token_labels(&self) -> bool {
        false
    }
    fn forward(&self, b: &Batch) -> Result<(Tensor, Tensor)> {
        let logits = BertForSequenceClassification::forward(
            self,
            &b.input_ids,
            &b.token_type_ids,
            &b.attention_mask,
        )?;
        let loss = crate::loss::cross_entropy(&logits, &b.row_labels())?;
        Ok((loss, logits))
    }
    fn save_pretrained(&self, dir: &Path) -> Result<()> {
        Ok(BertForSequenceClassification::save_pretrained(self, dir)?)
    }
    fn parameter_store(&self) -> Parameters {
        self.bert.parameters.clone()
    }
}

impl TrainableModel for BertForTokenClassification {
    fn parameters(&self) -> Vec<(String, Var)> {
        self.bert.parameters.named()
    }
    fn per_token_labels(&self) -> bool {
        true
    }
    fn forward(&self, b: &Batch) -> Result<(Tensor, Tensor)> {
        let logits = BertForTokenClassification::forward(
            self,
            &b.input_ids,
            &b.token_type_ids,
            &b.attention_mask,
        )?;
        let classes = logits.dim(2)?;
        let flat: Vec<i64> = b.labels.concat();
        let loss = crate::loss::cross_entropy(&logits.reshape(((), classes))?, &flat)?;
        Ok((loss, logits))
    }
    fn save_pretrained(&self, dir: &Path) -> Result<()> {
        Ok(BertForTokenClassification::save_pretrained(self, dir)?)
    }
    fn parameter_store(&self) -> Parameters {
        self.bert.parameters.clone()
    }
}

/// A masked LM with the masking its batches get (transformers'
/// `DataCollatorForLanguageModeling`).
pub struct MaskedLm {
    pub model: BertForMaskedLM,
    pub masking: MlmMasking,
}

impl TrainableModel for MaskedLm {
    fn parameters(&self) -> Vec<(String, Var)> {
        self.model.bert.parameters.named()
    }
    fn per_token_labels(&self) -> bool {
        true
    }
    fn masking(&self) -> Option<&MlmMasking> {
        Some(&self.masking)
    }
    fn forward(&self, b: &Batch) -> Result<(Tensor, Tensor)> {
        let logits = self
            .model
            .forward(&b.input_ids, &b.token_type_ids, &b.attention_mask)?;
        let vocab = logits.dim(2)?;
        let flat: Vec<i64> = b.labels.concat();
        let loss = crate::loss::cross_entropy(&logits.reshape(((), vocab))?, &flat)?;
        Ok((loss, logits))
    }
    fn save_pretrained(&self, dir: &Path) -> Result<()> {
        Ok(self.model.save_pretrained(dir)?)
    }
    fn parameter_store(&self) -> Parameters {
        self.model.bert.parameters.clone()
    }
}

impl TrainableModel for CausalLm {
    fn parameters(&self) -> Vec<(String, Var)> {
        self.parameters.named()
    }
    fn per_token_labels(&self) -> bool {
        true
    }
    fn shifted_labels(&self) -> bool {
        true
    }
    fn forward(&self, b: &Batch) -> Result<(Tensor, Tensor)> {
        // Right padding: real tokens only see earlier, real ones under the causal mask.
        let logits = CausalLm::forward(self, &b.input_ids, &mut self.new_cache(), false)?;
        let loss = crate::loss::causal_lm_loss(&logits, &b.labels)?;
        Ok((loss, logits))
    }
    /// The output head only on the positions the labels score (an SFT batch scores the
    /// answers, not the prompts): the same loss without the rest of the logits.
    fn loss(&self, b: &Batch) -> Result<Tensor> {
        let (rows, t) = b.input_ids.dims2()?;
        let vocab = self.config.vocab_size;
        let (at, targets) = crate::loss::causal_lm_targets(&b.labels, rows, t, vocab)?;
        let logits = self.logits_at(&b.input_ids, &at)?;
        Ok(ferro_nn::cross_entropy_cpu::cross_entropy(
            &logits, &targets,
        )?)
    }
    fn save_pretrained(&self, dir: &Path) -> Result<()> {
        Ok(CausalLm::save_pretrained(self, dir)?)
    }
    fn parameter_store(&self) -> Parameters {
        self.parameters.clone()
    }
    fn gradient_checkpointing_enable(&mut self) -> Result<()> {
        CausalLm::gradient_checkpointing_enable(self);
        Ok(())
    }
}

/// What evaluation hands `compute_metrics`: per example, the predicted class (one, or one
/// per token: the arg-max of the logits) and the labels (-100: not scored).
#[derive(Debug, Clone, Default)]
pub struct EvalPrediction {
    pub predictions: Vec<Vec<i64>>,
    pub labels: Vec<Vec<i64>>,
}

impl EvalPrediction {
    /// Predictions and labels of the scored positions, flattened.
    pub fn scored(&self) -> (Vec<i64>, Vec<i64>) {
        let mut out = (Vec::new(), Vec::new());
        for (p, l) in self.predictions.iter().zip(&self.labels) {
            for (&p, &l) in p.iter().zip(l) {
                if l != crate::loss::IGNORE_INDEX {
                    out.0.push(p);
                    out.1.push(l);
                }
            }
        }
        out
    }
}

/// Metrics from predictions, by name (reported with an `eval_` prefix).
pub type ComputeMetrics = Box<dyn Fn(&EvalPrediction) -> Result<BTreeMap<String, f64>>>;

/// Accuracy and macro F1 (scikit-learn's) over the scored positions, the usual
/// classification report.
pub fn classification_metrics(p: &EvalPrediction) -> Result<BTreeMap<String, f64>> {
    use crate::metrics::classification::{accuracy_score, f1_score, Average, PrfOptions};
    let (preds, labels) = p.scored();
    let mut out = BTreeMap::new();
    out.insert("accuracy".into(), accuracy_score(&labels, &preds)?);
    out.insert(
        "f1".into(),
        f1_score(&labels, &preds, &Average::Macro, &PrfOptions::default())?,
    );
    Ok(out)
}

/// Entity-level precision, recall and F1 (seqeval's default mode) and token accuracy, for
/// token classification with BIO labels named by `labels`.
pub fn entity_metrics(
    labels: Vec<String>,
) -> impl Fn(&EvalPrediction) -> Result<BTreeMap<String, f64>> {
    move |p: &EvalPrediction| {
        use crate::metrics::seqeval;
        let name = |i: i64| {
            labels
                .get(i as usize)
                .cloned()
                .unwrap_or_else(|| "O".into())
        };
        let (mut truth, mut pred) = (Vec::new(), Vec::new());
        for (ps, ls) in p.predictions.iter().zip(&p.labels) {
            let keep: Vec<(i64, i64)> = ps
                .iter()
                .zip(ls)
                .filter(|(_, &l)| l != crate::loss::IGNORE_INDEX)
                .map(|(&p, &l)| (p, l))
                .collect();
            truth.push(keep.iter().map(|&(_, l)| name(l)).collect::<Vec<_>>());
            pred.push(keep.iter().map(|&(p, _)| name(p)).collect::<Vec<_>>());
        }
        let opts = seqeval::SeqevalOptions::default();
        let micro = seqeval::Average::Micro;
        let mut out = BTreeMap::new();
        out.insert(
            "precision".into(),
            seqeval::precision_score(&truth, &pred, micro, &opts)?,
        );
        out.insert(
            "recall".into(),
            seqeval::recall_score(&truth, &pred, micro, &opts)?,
        );
        out.insert("f1".into(), seqeval::f1_score(&truth, &pred, micro, &opts)?);
        out.insert("accuracy".into(), seqeval::accuracy_score(&truth, &pred)?);
        Ok(out)
    }
}

/// The end of `train`.
#[derive(Debug, Clone)]
pub struct TrainOutput {
    pub global_step: usize,
    /// Mean training loss over the steps this call ran.
    pub training_loss: f64,
    pub log_history: Vec<Value>,
    pub best_model_checkpoint: Option<PathBuf>,
    /// Seconds spent in the training steps of this call (evaluation and saving included,
    /// loading not), and optimizer steps per second, as transformers reports them.
    pub train_runtime: f64,
    pub train_steps_per_second: f64,
}

/// What a checkpoint keeps besides weights and optimizer state (trainer_state.json).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct TrainerState {
    global_step: usize,
    epoch: f64,
    log_history: Vec<Value>,
    best_metric: Option<f64>,
    best_model_checkpoint: Option<PathBuf>,
    /// Evaluations since the best one (early stopping).
    patience: usize,
    /// Loss summed over the steps since the last log, and their count.
    pending_loss: f64,
    pending_steps: usize,
    /// The parameters' names and shapes, to refuse a checkpoint of another model.
    parameter_shapes: BTreeMap<String, Vec<usize>>,
}

pub struct Trainer<M: TrainableModel> {
    pub model: M,
    pub args: TrainingArguments,
    train: Vec<Example>,
    eval: Option<Vec<Example>>,
    pad_id: u32,
    device: Device,
    compute_metrics: Option<ComputeMetrics>,
}

const STATE_FILE: &str = "trainer_state.json";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";

impl<M: TrainableModel> Trainer<M> {
    pub fn new(
        mut model: M,
        args: TrainingArguments,
        train: Vec<Example>,
        eval: Option<Vec<Example>>,
        pad_id: u32,
    ) -> Result<Self> {
        args.validate()?;
        let device = Device::Cpu;
        if args.bf16 && !ferro_nn::device_supports(candle_core::DType::BF16, &device) {
            return Err(TrainError::InvalidArgument {
                param: "bf16",
                msg: format!("bf16 autocast needs a device that multiplies bf16 matrices; {device:?} does not"),
            });
        }
        if train.is_empty() {
            return Err(TrainError::InvalidArgument {
                param: "train_dataset",
                msg: "no examples to train on".into(),
            });
        }
        if model.parameters().is_empty() {
            return Err(TrainError::InvalidArgument {
                param: "model",
                msg: "it has no trainable parameters: load it with LoadOptions::trainable".into(),
            });
        }
        if args.gradient_checkpointing {
            model.gradient_checkpointing_enable()?;
        }
        if args.eval_strategy != IntervalStrategy::No && eval.as_ref().is_none_or(Vec::is_empty) {
            return Err(TrainError::InvalidArgument {
                param: "eval_dataset",
                msg: format!(
                    "eval_strategy {:?} needs evaluation examples",
                    args.eval_strategy
                ),
            });
        }
        Ok(Self {
            model,
            args,
            train,
            eval,
            pad_id,
            device,
            compute_metrics: None,
        })
    }

    pub fn with_compute_metrics(mut self, f: ComputeMetrics) -> Self {
        self.compute_metrics = Some(f);
        self
    }

    fn batches_per_epoch(&self) -> usize {
        self.train
            .len()
            .div_ceil(self.args.per_device_train_batch_size)
    }

    fn steps_per_epoch(&self) -> usize {
        self.batches_per_epoch()
            .div_ceil(self.args.gradient_accumulation_steps)
            .max(1)
    }

    /// Optimizer steps in all.
    pub fn total_steps(&self) -> usize {
        if self.args.max_steps > 0 {
            self.args.max_steps as usize
        } else {
            (self.args.num_train_epochs * self.steps_per_epoch() as f64).ceil() as usize
        }
    }

    /// A step interval from an argument that may be a ratio of the total (below 1).
    fn interval(&self, value: f64) -> usize {
        if value < 1.0 {
            ((self.total_steps() as f64 * value).ceil() as usize).max(1)
        } else {
            value as usize
        }
    }

    /// The examples of micro-batch `b` of `epoch`: a seeded shuffle per epoch, so the order
    /// is a function of (seed, epoch) and a resumed run sees what the first one would have;
    /// masked-LM examples are masked here, seeded by (seed, epoch, example).
    fn micro_batch(&self, epoch: usize, b: usize) -> Vec<std::borrow::Cow<'_, Example>> {
        let mut order: Vec<usize> = (0..self.train.len()).collect();
        let seed = self.args.seed.wrapping_add(epoch as u64);
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        let bs = self.args.per_device_train_batch_size;
        order
            .iter()
            .skip(b * bs)
            .take(bs)
            .map(|&i| match self.model.masking() {
                Some(m) => {
                    let seed = self.args.seed ^ ((epoch as u64) << 32) ^ i as u64;
                    std::borrow::Cow::Owned(m.apply(&self.train[i], seed))
                }
                None => std::borrow::Cow::Borrowed(&self.train[i]),
            })
            .collect()
    }

    fn optimizer(&self) -> Result<Optimizer> {
        let params = self.model.parameters();
        let a = &self.args;
        Ok(match a.optim.as_str() {
            "sgd" => Optimizer::Sgd(Sgd::new(&params, a.sgd_momentum, a.weight_decay)?),
            _ => Optimizer::AdamW(AdamW::new(
                &params,
                a.weight_decay,
                (a.adam_beta1, a.adam_beta2),
                a.adam_epsilon,
            )?),
        })
    }

    fn parameter_shapes(&self) -> BTreeMap<String, Vec<usize>> {
        self.model
            .parameters()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().dims().to_vec()))
            .collect()
    }

    /// Runs training to the end (or until early stopping); resumes first when
    /// `resume_from_checkpoint` says so.
    pub fn train(&mut self) -> Result<TrainOutput> {
        let total = self.total_steps();
        let schedule = Schedule {
            kind: SchedulerType::parse(&self.args.lr_scheduler_type)?,
            base_lr: self.args.learning_rate,
            warmup: warmup_steps(self.args.warmup_steps, total)?,
            total,
        };
        let params = self.model.parameters();
        let mut opt = self.optimizer()?;
        let mut state = TrainerState {
            parameter_shapes: self.parameter_shapes(),
            ..TrainerState::default()
        };
        std::fs::create_dir_all(&self.args.output_dir).map_err(|e| TrainError::File {
            path: self.args.output_dir.clone(),
            msg: e.to_string(),
        })?;
        if let Some(spec) = self.args.resume_from_checkpoint.clone() {
            let dir = self.find_checkpoint(&spec)?;
            state = self.restore(&dir, &mut opt)?;
        }
        self.rewrite_log(&state.log_history)?;
        let logging = self.interval(self.args.logging_steps);
        let eval_every = self.interval(self.args.eval_steps.unwrap_or(self.args.logging_steps));
        let save_every = self.interval(self.args.save_steps);
        let spe = self.steps_per_epoch();
        let accum = self.args.gradient_accumulation_steps;
        let bpe = self.batches_per_epoch();
        let per_token = self.model.per_token_labels();
        let progress = if self.args.disable_tqdm {
            indicatif::ProgressBar::hidden()
        } else {
            indicatif::ProgressBar::new(total as u64).with_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            )
        };
        progress.set_position(state.global_step as u64);
        let (mut run_loss, mut run_steps) = (0.0, 0usize);
        // TensorBoard scalars under output_dir/runs, as transformers' TensorBoardCallback.
        let mut events = EventWriter::create(self.args.output_dir.join("runs"))?;
        let started = std::time::Instant::now();
        self.model.set_training(true);
        let mut stop = false;
        while state.global_step < total && !stop {
            let step = state.global_step;
            let (epoch, within) = (step / spe, step % spe);
            let first = within * accum;
            let micro: Vec<usize> = (first..(first + accum).min(bpe)).collect();
            let mut grads: Option<GradStore> = None;
            let mut step_loss = 0.0;
            for &b in &micro {
                // Dropout masks are a function of (seed, micro-batch number): a resumed
                // run draws the ones it would have drawn.
                self.model
                    .parameter_store()
                    .set_dropout_step(self.args.seed, (epoch * bpe + b) as u64);
                let examples = self.micro_batch(epoch, b);
                let refs: Vec<&Example> = examples.iter().map(|e| e.as_ref()).collect();
                let batch = collate(&refs, self.pad_id, per_token, &self.device)?;
                let autocast = self.autocast();
                let loss = ferro_nn::with_autocast(autocast, || self.model.loss(&batch))?;
                step_loss += f64::from(loss.to_scalar::<f32>()?) / micro.len() as f64;
                // With checkpointed layers, their parameters' gradients come from here too
                // (the layers recomputed under the same autocast).
                let g = ferro_nn::with_autocast(autocast, || {
                    ferro_nn::checkpoint::backward(&(loss / micro.len() as f64)?)
                })?;
                grads = Some(match grads {
                    None => g,
                    Some(mut acc) => {
                        for (_, var) in &params {
                            if let Some(new) = g.get(var.as_tensor()) {
                                let sum = match acc.remove(var.as_tensor()) {
                                    Some(old) => (old + new)?,
                                    None => new.clone(),
                                };
                                acc.insert(var.as_tensor(), sum);
                            }
                        }
                        acc
                    }
                });
            }
            let Some(mut grads) = grads else { break };
            let grad_norm = if self.args.max_grad_norm > 0.0 {
                clip_grad_norm(&mut grads, &params, self.args.max_grad_norm)?
            } else {
                clip_grad_norm(&mut grads, &params, f64::INFINITY)?
            };
            let lr = schedule.lr(step);
            opt.step(&grads, lr)?;
            state.global_step += 1;
            state.epoch = state.global_step as f64 / spe as f64;
            state.pending_loss += step_loss;
            state.pending_steps += 1;
            run_loss += step_loss;
            run_steps += 1;
            progress.inc(1);
            progress.set_message(format!("loss {step_loss:.4} lr {lr:.3e}"));
            let gs = state.global_step;
            if gs.is_multiple_of(logging) || gs == total {
                let entry = json!({
                    "loss": state.pending_loss / state.pending_steps as f64,
                    "grad_norm": grad_norm,
                    "learning_rate": lr,
                    "epoch": state.epoch,
                    "step": gs,
                });
                self.log(&mut state, &mut events, entry)?;
                state.pending_loss = 0.0;
                state.pending_steps = 0;
            }
            let epoch_end = gs.is_multiple_of(spe) || gs == total;
            let due = |strategy: IntervalStrategy, every: usize| match strategy {
                IntervalStrategy::No => false,
                IntervalStrategy::Steps => gs.is_multiple_of(every),
                IntervalStrategy::Epoch => epoch_end,
            };
            let mut improved = false;
            if due(self.args.eval_strategy, eval_every) {
                let mut metrics = self.evaluate()?;
                metrics.insert("epoch".into(), state.epoch);
                metrics.insert("step".into(), gs as f64);
                let (key, greater) = self.args.best_metric();
                let value = *metrics
                    .get(&key)
                    .ok_or_else(|| TrainError::InvalidArgument {
                        param: "metric_for_best_model",
                        msg: format!(
                            "`{key}` is not among the evaluation's metrics ({})",
                            metrics.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    })?;
                let threshold = self.args.early_stopping_threshold;
                improved = match state.best_metric {
                    None => true,
                    Some(best) if greater => value > best + threshold,
                    Some(best) => value < best - threshold,
                };
                if improved {
                    state.best_metric = Some(value);
                    state.patience = 0;
                } else {
                    state.patience += 1;
                }
                let entry = serde_json::to_value(&metrics).unwrap_or_default();
                self.log(&mut state, &mut events, entry)?;
                if self
                    .args
                    .early_stopping_patience
                    .is_some_and(|p| state.patience >= p)
                {
                    stop = true;
                }
            }
            if due(self.args.save_strategy, save_every) {
                let dir = self.args.output_dir.join(format!("checkpoint-{gs}"));
                if improved {
                    state.best_model_checkpoint = Some(dir.clone());
                }
                self.save_checkpoint(&dir, &state, &mut opt)?;
            }
        }
        progress.finish_and_clear();
        self.model.set_training(false);
        let train_runtime = started.elapsed().as_secs_f64();
        events.flush()?;
        let (train_losses, eval_losses) = losses_from_log(&state.log_history);
        if !train_losses.is_empty() || !eval_losses.is_empty() {
            plot_losses(
                self.args.output_dir.join("loss.png"),
                &train_losses,
                &eval_losses,
                "loss",
            )?;
        }
        if self.args.load_best_model_at_end {
            if let Some(best) = state.best_model_checkpoint.clone() {
                self.load_weights(&best.join("model.safetensors"))?;
            }
        }
        Ok(TrainOutput {
            global_step: state.global_step,
            training_loss: if run_steps > 0 {
                run_loss / run_steps as f64
            } else {
                0.0
            },
            log_history: state.log_history,
            best_model_checkpoint: state.best_model_checkpoint,
            train_runtime,
            train_steps_per_second: run_steps as f64 / train_runtime.max(1e-9),
        })
    }

    /// The autocast dtype `bf16` asks for.
    fn autocast(&self) -> Option<candle_core::DType> {
        self.args.bf16.then_some(candle_core::DType::BF16)
    }

    /// Loss and metrics on the evaluation examples (`eval_loss`, `eval_<metric>`).
    pub fn evaluate(&self) -> Result<BTreeMap<String, f64>> {
        ferro_nn::with_autocast(self.autocast(), || {
            evaluate(
                &self.model,
                self.eval.as_deref().unwrap_or_default(),
                self.args.per_device_eval_batch_size,
                self.pad_id,
                self.compute_metrics.as_ref(),
            )
        })
    }

    /// Predictions of `examples` (in batches of per_device_eval_batch_size) and the mean
    /// loss over them.
    pub fn predict(&self, examples: &[Example]) -> Result<(EvalPrediction, f64)> {
        ferro_nn::with_autocast(self.autocast(), || {
            predict(
                &self.model,
                examples,
                self.args.per_device_eval_batch_size,
                self.pad_id,
            )
        })
    }

    /// Appends `entry` to the history, log.jsonl and the TensorBoard event file.
    fn log(&self, state: &mut TrainerState, events: &mut EventWriter, entry: Value) -> Result<()> {
        events.add_log_entry(&entry, None)?;
        let path = self.args.output_dir.join("log.jsonl");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| TrainError::File {
                path: path.clone(),
                msg: e.to_string(),
            })?;
        writeln!(f, "{entry}").map_err(|e| TrainError::File {
            path,
            msg: e.to_string(),
        })?;
        tracing::info!(target: "ferro_train", "{entry}");
        state.log_history.push(entry);
        Ok(())
    }

    /// log.jsonl as the history says (a resumed run drops what followed its checkpoint).
    fn rewrite_log(&self, history: &[Value]) -> Result<()> {
        let path = self.args.output_dir.join("log.jsonl");
        let text: String = history.iter().map(|e| format!("{e}\n")).collect();
        ferro_models::save::write_atomic(&path, text.as_bytes())?;
        Ok(())
    }

    /// Writes `dir` whole or not at all (built beside it, then renamed), then drops the
    /// oldest checkpoints beyond save_total_limit (never the best one).
    fn save_checkpoint(&self, dir: &Path, state: &TrainerState, opt: &mut Optimizer) -> Result<()> {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("checkpoint");
        let partial = dir.with_file_name(format!(".{name}.partial"));
        let file_err = |p: &Path, e: std::io::Error| TrainError::File {
            path: p.into(),
            msg: e.to_string(),
        };
        if partial.exists() {
            std::fs::remove_dir_all(&partial).map_err(|e| file_err(&partial, e))?;
        }
        self.model.save_pretrained(&partial)?;
        ferro_models::save::save_safetensors(&partial.join(OPTIMIZER_FILE), &opt.state_dict()?)?;
        let text = serde_json::to_string_pretty(state).unwrap_or_default();
        ferro_models::save::write_atomic(&partial.join(STATE_FILE), text.as_bytes())?;
        // A checkpoint leaves by an atomic rename to a hidden name before it is deleted, so
        // a kill mid-deletion never leaves a half-deleted `checkpoint-N` behind.
        let remove = |d: &Path| -> Result<()> {
            let name = d
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("checkpoint");
            let doomed = d.with_file_name(format!(".{name}.deleting"));
            if doomed.exists() {
                std::fs::remove_dir_all(&doomed).map_err(|e| file_err(&doomed, e))?;
            }
            std::fs::rename(d, &doomed).map_err(|e| file_err(d, e))?;
            std::fs::remove_dir_all(&doomed).map_err(|e| file_err(&doomed, e))
        };
        if dir.exists() {
            remove(dir)?;
        }
        std::fs::rename(&partial, dir).map_err(|e| file_err(dir, e))?;
        if let Some(limit) = self.args.save_total_limit {
            let mut all = self.checkpoints()?;
            all.retain(|(_, p)| Some(p) != state.best_model_checkpoint.as_ref());
            let keep = limit
                .saturating_sub(usize::from(state.best_model_checkpoint.is_some()))
                .max(1);
            while all.len() > keep {
                let (_, oldest) = all.remove(0);
                remove(&oldest)?;
            }
        }
        Ok(())
    }

    /// `checkpoint-N` folders of output_dir, oldest first.
    fn checkpoints(&self) -> Result<Vec<(usize, PathBuf)>> {
        let dir = &self.args.output_dir;
        let entries = std::fs::read_dir(dir).map_err(|e| TrainError::File {
            path: dir.clone(),
            msg: e.to_string(),
        })?;
        let mut out: Vec<(usize, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let n = e
                    .file_name()
                    .to_str()?
                    .strip_prefix("checkpoint-")?
                    .parse()
                    .ok()?;
                Some((n, e.path()))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    fn find_checkpoint(&self, spec: &str) -> Result<PathBuf> {
        if spec == "latest" || spec == "true" {
            return self.checkpoints()?.pop().map(|(_, p)| p).ok_or_else(|| {
                TrainError::InvalidArgument {
                    param: "resume_from_checkpoint",
                    msg: format!(
                        "no checkpoint-N folder in {}",
                        self.args.output_dir.display()
                    ),
                }
            });
        }
        Ok(PathBuf::from(spec))
    }

    /// Puts back what `save_checkpoint` wrote, after checking it is this model's.
    fn restore(&self, dir: &Path, opt: &mut Optimizer) -> Result<TrainerState> {
        let state_path = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&state_path).map_err(|e| TrainError::File {
            path: state_path.clone(),
            msg: format!("not a checkpoint: {e}"),
        })?;
        let state: TrainerState = serde_json::from_str(&text).map_err(|e| TrainError::File {
            path: state_path.clone(),
            msg: e.to_string(),
        })?;
        let ours = self.parameter_shapes();
        if state.parameter_shapes != ours {
            let differ = ours
                .iter()
                .find(|(k, v)| state.parameter_shapes.get(*k) != Some(*v))
                .map(|(k, _)| k.clone())
                .or_else(|| {
                    state
                        .parameter_shapes
                        .keys()
                        .find(|k| !ours.contains_key(*k))
                        .cloned()
                })
                .unwrap_or_default();
            return Err(TrainError::InvalidArgument {
                param: "resume_from_checkpoint",
                msg: format!(
                    "{} was saved from another model (parameter `{differ}` differs)",
                    dir.display()
                ),
            });
        }
        self.load_weights(&dir.join("model.safetensors"))?;
        let opt_path = dir.join(OPTIMIZER_FILE);
        let tensors = candle_core::safetensors::load(&opt_path, &self.device).map_err(|e| {
            TrainError::File {
                path: opt_path.clone(),
                msg: e.to_string(),
            }
        })?;
        opt.load_state_dict(&tensors)?;
        Ok(state)
    }

    /// Sets every parameter from a saved model.safetensors (names as save_pretrained
    /// writes them: a bare encoder's under its family prefix).
    fn load_weights(&self, path: &Path) -> Result<()> {
        // A LoRA run's checkpoints hold its adapter instead.
        let adapter = path.with_file_name("adapter_model.safetensors");
        let path = if !path.exists() && adapter.exists() {
            adapter.as_path()
        } else {
            path
        };
        let saved: HashMap<String, Tensor> = candle_core::safetensors::load(path, &self.device)
            .map_err(|e| TrainError::File {
                path: path.into(),
                msg: e.to_string(),
            })?;
        for (name, var) in self.model.parameters() {
            let t = saved
                .get(&name)
                .or_else(|| peft_saved_key(&name).and_then(|k| saved.get(&k)))
                .or_else(|| {
                    saved
                        .iter()
                        .find(|(k, _)| k.ends_with(&format!(".{name}")))
                        .map(|(_, v)| v)
                })
                .ok_or_else(|| TrainError::File {
                    path: path.into(),
                    msg: format!("no tensor for parameter `{name}`"),
                })?;
            var.set(t)?;
        }
        Ok(())
    }
}

/// Loss and metrics of `model` on `examples` (`eval_loss`, `eval_<metric>`; causal LMs also
/// `eval_perplexity`, exp of the loss), in evaluation mode; what `Trainer::evaluate` and
/// `ferro eval` report.
pub fn evaluate<M: TrainableModel>(
    model: &M,
    examples: &[Example],
    batch_size: usize,
    pad_id: u32,
    compute_metrics: Option<&ComputeMetrics>,
) -> Result<BTreeMap<String, f64>> {
    if examples.is_empty() {
        return Err(TrainError::InvalidArgument {
            param: "eval_dataset",
            msg: "no evaluation examples".into(),
        });
    }
    let training = model.parameter_store().is_training();
    model.set_training(false);
    let predicted = predict(model, examples, batch_size, pad_id);
    model.set_training(training);
    let (p, loss) = predicted?;
    let mut out = BTreeMap::new();
    out.insert("eval_loss".into(), loss);
    if model.shifted_labels() {
        out.insert("eval_perplexity".into(), loss.exp());
    }
    if let Some(f) = compute_metrics {
        for (k, v) in f(&p)? {
            out.insert(format!("eval_{k}"), v);
        }
    }
    Ok(out)
}

/// Predictions of `examples` (in batches of `batch_size`) and the mean loss over them.
pub fn predict<M: TrainableModel>(
    model: &M,
    examples: &[Example],
    batch_size: usize,
    pad_id: u32,
) -> Result<(EvalPrediction, f64)> {
    let device = Device::Cpu;
    let mut p = EvalPrediction::default();
    let mut loss_sum = 0.0;
    let per_token = model.per_token_labels();
    for chunk in examples.chunks(batch_size.max(1)) {
        let refs: Vec<&Example> = chunk.iter().collect();
        let batch = collate(&refs, pad_id, per_token, &device)?;
        let (loss, logits) = model.forward(&batch)?;
        loss_sum += f64::from(loss.to_scalar::<f32>()?) * chunk.len() as f64;
        let best = logits.detach().argmax(candle_core::D::Minus1)?;
        let rows: Vec<Vec<i64>> = if best.rank() == 1 {
            best.to_vec1::<u32>()?
                .into_iter()
                .map(|c| vec![i64::from(c)])
                .collect()
        } else {
            best.to_vec2::<u32>()?
                .into_iter()
                .map(|r| r.into_iter().map(i64::from).collect())
                .collect()
        };
        // A causal LM's logits at t predict the label at t + 1.
        let rows = if per_token && model.shifted_labels() {
            rows.into_iter()
                .map(|mut r| {
                    r.insert(0, crate::loss::IGNORE_INDEX);
                    r.pop();
                    r
                })
                .collect()
        } else {
            rows
        };
        p.predictions.extend(rows);
        p.labels.extend(batch.labels);
    }
    Ok((p, loss_sum / examples.len() as f64))
}
