//! Trainable parameters: when a model is loaded for training, every dense tensor it reads
//! becomes a candle `Var` (a leaf that gradients reach), kept here under its checkpoint
//! name. A name read twice (tied embeddings) is one `Var`, so its gradients add up, as a
//! tied `nn.Parameter` does in PyTorch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::{Tensor, Var};

use crate::dropout::DropoutStream;
use crate::error::Result;

/// The trainable tensors of a model, by checkpoint name, in the order they were read.
/// Cloning shares the list: a task head loaded after its encoder adds to the same one.
/// It also carries the model's training mode (PyTorch's `model.train()` / `model.eval()`)
/// and where its dropout masks come from, shared the same way.
#[derive(Debug, Clone, Default)]
pub struct Parameters {
    list: Arc<Mutex<Vec<(String, Var)>>>,
    training: Arc<AtomicBool>,
    dropout: Arc<DropoutStream>,
}

impl Parameters {
    /// `(name, var)` for every parameter (transformers' `named_parameters()`).
    pub fn named(&self) -> Vec<(String, Var)> {
        self.list.lock().map(|p| p.clone()).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.list.lock().map(|p| p.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The parameter called `name`.
    pub fn get(&self, name: &str) -> Option<Var> {
        let params = self.list.lock().ok()?;
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    /// The `Var` for `name`: the one already made, or a new one holding a copy of `value`
    /// (how a new layer, not in the checkpoint, joins the parameters).
    pub fn var(&self, name: &str, value: &Tensor) -> Result<Tensor> {
        if let Some(v) = self.get(name) {
            return Ok(v.as_tensor().clone());
        }
        let v = Var::from_tensor(value)?;
        if let Ok(mut params) = self.list.lock() {
            params.push((name.to_string(), v.clone()));
        }
        Ok(v.as_tensor().clone())
    }
}

impl Parameters {
    /// Training mode on or off (`model.train()` / `model.eval()`): what dropout, the LoRA
    /// adapters' included, looks at. Off when a model is loaded.
    pub fn set_training(&self, on: bool) {
        self.training.store(on, Ordering::Relaxed);
    }

    pub fn is_training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }

    /// Starts the dropout masks of one training step (see `crate::dropout`): the masks
    /// depend on `seed` and `step` only, so a resumed run draws what it would have.
    pub fn set_dropout_step(&self, seed: u64, step: u64) {
        self.dropout.set_step(seed, step);
    }

    /// The model's dropout mask stream (shared by its dropout layers).
    pub fn dropout_stream(&self) -> Arc<DropoutStream> {
        self.dropout.clone()
    }

    /// The shared training flag, for layers that read it as they run.
    pub(crate) fn training_flag(&self) -> Arc<AtomicBool> {
        self.training.clone()
    }

    /// A new list without the LoRA adapters' parameters, each module to save under its
    /// module's own name (`base_model.model.classifier.modules_to_save.default.weight` →
    /// `classifier.weight`): the parameters of a model after `merge_and_unload`.
    pub fn without_lora(&self) -> Parameters {
        let kept = self
            .named()
            .into_iter()
            .filter(|(n, _)| !(n.contains(".lora_A.") || n.contains(".lora_B.")))
            .map(|(n, v)| match crate::lora::peft_saved_key(&n) {
                Some(k) => (
                    k.strip_prefix(crate::lora::PEFT_PREFIX)
                        .unwrap_or(&k)
                        .to_string(),
                    v,
                ),
                None => (n, v),
            })
            .collect();
        Parameters {
            list: Arc::new(Mutex::new(kept)),
            training: Arc::new(AtomicBool::new(self.is_training())),
            dropout: self.dropout.clone(),
        }
    }
}
