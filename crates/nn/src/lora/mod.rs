//! LoRA adapters in PEFT's format (peft 0.21): `LoraConfig` as adapter_config.json holds
//! it, the adapter a targeted `Linear` carries (`y = base(x) + scaling · B(A(dropout(x)))`),
//! and `save_adapter`, which writes a folder `PeftModel.from_pretrained` reads.
//!
//! Names follow PEFT exactly. A targeted module `m` (its transformers name, which is the
//! checkpoint's) gets the trainable parameters `base_model.model.m.lora_A.default.weight`
//! (`[r, in]`) and `...lora_B.default.weight` (`[out, r]`), PEFT's in-memory names, saved as
//! `base_model.model.m.lora_A.weight` / `...lora_B.weight`. A module of `modules_to_save`
//! (the classifier of a sequence-classification model) is trained whole, as a copy:
//! `base_model.model.m.modules_to_save.default.<param>` in memory, saved as
//! `base_model.model.m.<param>`. Everything else is frozen.
//!
//! Models are loaded with an adapter through `Weights::with_lora`; `Linear::load` asks the
//! weights for its adapter. A quantized base (GGUF) keeps its quantized matmul, frozen; the
//! adapter is dense f32 and gradients flow through the quantized product (QLoRA).

mod config;
mod load;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};

pub use config::{
    lora_param_names, module_to_save_param_name, peft_saved_key, LoraConfig, TargetModules,
};
pub(crate) use load::LoraLoad;

use crate::dropout::Dropout;
use crate::error::{NnError, Result};
use crate::linear::Linear;
use crate::parameters::Parameters;

/// The adapter's config file in a PEFT folder.
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";
/// The adapter's weights in a PEFT folder.
pub const ADAPTER_WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// What PEFT puts before every module name (`PeftModel.base_model.model`).
pub const PEFT_PREFIX: &str = "base_model.model.";
/// PEFT's adapter name for a single adapter, part of the in-memory parameter names.
pub const ADAPTER_NAME: &str = "default";

/// What to load a model with: a LoRA config, and the adapter to start from (a PEFT
/// folder) or, without one, the seed a new adapter is drawn from.
#[derive(Debug, Clone)]
pub struct LoraSpec {
    pub config: LoraConfig,
    /// A PEFT folder (adapter_config.json, adapter_model.safetensors) whose weights the
    /// adapters start from; `None`: a new adapter, initialised as PEFT does.
    pub adapter: Option<PathBuf>,
    /// Seeds a new adapter's A (dropout masks follow the trainer's seed and step).
    pub seed: u64,
}

impl LoraSpec {
    /// A new adapter with `config`, drawn from `seed`.
    pub fn new(config: LoraConfig, seed: u64) -> Self {
        Self {
            config,
            adapter: None,
            seed,
        }
    }

    /// A saved PEFT adapter (its folder).
    pub fn from_pretrained(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        Ok(Self {
            config: LoraConfig::from_pretrained(dir)?,
            adapter: Some(dir.to_path_buf()),
            seed: 0,
        })
    }
}

/// The adapter of one linear layer: `delta(x) = scaling · (dropout(x) Aᵀ) Bᵀ`, A `[r, in]`
/// and B `[out, r]` trainable (f32 `Var`s in the model's `Parameters`).
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    module: String,
    a: Tensor,
    b: Tensor,
    scaling: f64,
    /// On the adapter's input while training (the model's mask stream).
    dropout: Dropout,
}

impl LoraAdapter {
    /// The adapted module's name.
    pub fn module(&self) -> &str {
        &self.module
    }

    /// `lora_A`, `[r, in]`.
    pub fn a(&self) -> &Tensor {
        &self.a
    }

    /// `lora_B`, `[out, r]`.
    pub fn b(&self) -> &Tensor {
        &self.b
    }

    pub fn scaling(&self) -> f64 {
        self.scaling
    }

    /// The adapter's contribution for `x (..., in)`: `(..., out)` in `x`'s dtype (computed
    /// in f32).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let (rank, inp) = self.a.dims2()?;
        let out = self.b.dim(0)?;
        let mut dims = x.dims().to_vec();
        if dims.last() != Some(&inp) {
            return Err(invalid(
                "x",
                format!(
                    "`{}`: last dimension {:?}, the adapter takes {inp}",
                    self.module,
                    dims.last()
                ),
            ));
        }
        let rows = x.elem_count() / inp.max(1);
        // Dropout is the identity outside training mode.
        let h = self
            .dropout
            .forward(&x.to_dtype(DType::F32)?.reshape((rows, inp))?)?;
        let y = match crate::autocast::autocast_dtype().filter(|&d| d != DType::F32) {
            // Under autocast, both products in its dtype (as PEFT's layers under
            // `torch.autocast`).
            Some(low) => {
                let h = crate::autocast::linear(&h, &self.a, None, low)?;
                (crate::autocast::linear(&h, &self.b, None, low)? * self.scaling)?
            }
            None => {
                let h = crate::matmul(&h, &self.a.t()?)?;
                debug_assert_eq!(h.dim(1).ok(), Some(rank));
                (crate::matmul(&h, &self.b.t()?)? * self.scaling)?
            }
        };
        if let Some(last) = dims.last_mut() {
            *last = out;
        }
        Ok(y.reshape(dims)?.to_dtype(dtype)?)
    }

    /// `scaling · B A`, `(out, in)`, detached: what merging adds to the base weight.
    pub fn delta_weight(&self) -> Result<Tensor> {
        Ok((self.b.detach().matmul(&self.a.detach())? * self.scaling)?)
    }
}

/// Writes `dir`/adapter_config.json and `dir`/adapter_model.safetensors as
/// `PeftModel.save_pretrained` does: `config` as PEFT resolves it (with
/// `inference_mode: true`), and every adapter parameter of `parameters` (`lora_A`,
/// `lora_B`, modules to save) under its saved key, in f32. Each file is written to a
/// temporary name and renamed into place. The folder is made if needed.
pub fn save_adapter(dir: &Path, config: &LoraConfig, parameters: &Parameters) -> Result<()> {
    let mut config = config.resolved();
    config.inference_mode = true;
    config.validate()?;
    let mut tensors = HashMap::new();
    for (name, var) in parameters.named() {
        let Some(key) = peft_saved_key(&name) else {
            continue;
        };
        let t = var.as_tensor().detach().to_dtype(DType::F32)?;
        if name.contains(".lora_A.") && t.dim(0)? != config.r {
            return Err(invalid(
                "config",
                format!("r is {} but `{name}` has shape {:?}", config.r, t.dims()),
            ));
        }
        tensors.insert(key, t);
    }
    if tensors.is_empty() {
        return Err(invalid(
            "parameters",
            "no LoRA parameter: load the model with a LoRA spec (LoadOptions::lora)",
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| ferro_core::Error::io(dir, e))?;
    let weights = dir.join(ADAPTER_WEIGHTS_FILE);
    let tmp = dir.join(format!(".{ADAPTER_WEIGHTS_FILE}.tmp"));
    candle_core::safetensors::save(&tensors, &tmp)?;
    std::fs::rename(&tmp, &weights).map_err(|e| ferro_core::Error::io(&weights, e))?;
    let path = dir.join(ADAPTER_CONFIG_FILE);
    let tmp = dir.join(format!(".{ADAPTER_CONFIG_FILE}.tmp"));
    std::fs::write(&tmp, format!("{}\n", config.to_json()?))
        .map_err(|e| ferro_core::Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| ferro_core::Error::io(&path, e))?;
    Ok(())
}

/// Folds every adapter of `layers` into its base weight (`W + scaling · B A`) and drops the
/// adapters: PEFT's `merge_and_unload`. Refused, before anything changes, when an adapted
/// layer's base is quantized (see `Linear::merge_and_unload`).
pub fn merge_all(layers: Vec<&mut Linear>) -> Result<()> {
    if let Some(l) = layers.iter().find(|l| !l.can_merge()) {
        return Err(invalid(
            "merge_and_unload",
            format!(
                "`{}` has a quantized base weight: merging would need it dense. Load the \
                 GGUF with `dequantize` (LoadOptions::dequantize) and the adapter, then merge",
                l.lora().map_or("?", |a| a.module())
            ),
        ));
    }
    for l in layers {
        l.merge_and_unload()?;
    }
    Ok(())
}

fn invalid(param: &'static str, msg: impl Into<String>) -> NnError {
    NnError::InvalidArgument {
        param,
        msg: msg.into(),
    }
}
