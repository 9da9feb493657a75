//! `AutoModelForCausalLM::from_config`: a causal LM with fresh, trainable weights from a
//! config.json alone (pretraining from scratch). The weights come from a `Weights` source
//! that makes each tensor as the architecture's loader reads it, so the model is built by
//! the same code as a checkpoint; the values follow transformers' `_init_weights`.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use ferro_nn::{init, Weights};

use crate::auto::{AutoModelForCausalLM, CausalLm, LoadOptions};
use crate::config::{Architecture, CausalLmConfig};
use crate::error::{ModelError, Result};

/// transformers' `_init_weights` for one architecture: what each tensor starts as.
#[derive(Debug, Clone, PartialEq)]
pub struct InitScheme {
    pub architecture: Architecture,
    /// Linear and embedding weights are drawn from Normal(0, initializer_range).
    pub initializer_range: f64,
    /// The embedding row of this id starts at zero (`nn.Embedding(padding_idx=pad)`).
    pub pad_token_id: Option<u32>,
    pub seed: u64,
}

impl InitScheme {
    /// The scheme config.json (`raw`, read from `path`) asks for: `initializer_range`,
    /// `pad_token_id`.
    pub fn from_config_json(
        raw: &serde_json::Value,
        path: &Path,
        config: &CausalLmConfig,
        seed: u64,
    ) -> Result<Self> {
        let bad = |msg: String| ModelError::Config {
            file: path.into(),
            msg,
        };
        let initializer_range = match raw.get("initializer_range") {
            None | Some(serde_json::Value::Null) => 0.02,
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| bad(format!("`initializer_range` = {v} is not a number >= 0")))?,
        };
        let pad_token_id = match raw.get("pad_token_id") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .filter(|&p| p < config.vocab_size as u64)
                    .ok_or_else(|| {
                        bad(format!(
                            "`pad_token_id` = {v} is not a token id below vocab_size {}",
                            config.vocab_size
                        ))
                    })? as u32,
            ),
        };
        Ok(Self {
            architecture: config.architecture,
            // transformers: `config.initializer_range or 0.02`.
            initializer_range: if initializer_range == 0.0 {
                0.02
            } else {
                initializer_range
            },
            pad_token_id,
            seed,
        })
    }

    /// The initial value of tensor `name` (f32): RMSNorm weights ones (zeros for Gemma 3,
    /// whose norms scale by 1 + w), biases zeros, linear and embedding weights normal
    /// (the padding row zero). Each tensor draws from its own seed (the run's seed and its
    /// name), so values do not depend on the order the model reads them.
    pub fn tensor(&self, name: &str, shape: &[usize], device: &Device) -> ferro_nn::Result<Tensor> {
        if name.ends_with("norm.weight") {
            return Ok(match self.architecture {
                Architecture::Gemma3 => init::zeros(shape, device)?,
                _ => Tensor::ones(shape, candle_core::DType::F32, device)?,
            });
        }
        if name.ends_with(".bias") {
            return init::zeros(shape, device);
        }
        if !(name.ends_with(".weight") && shape.len() == 2) {
            return Err(ferro_nn::NnError::InvalidArgument {
                param: "tensor",
                msg: format!("no initial value is known for `{name}` of shape {shape:?}"),
            });
        }
        let w = init::normal(
            shape,
            self.initializer_range,
            tensor_seed(self.seed, name),
            device,
        )?;
        match self.pad_token_id {
            Some(pad) if name == "model.embed_tokens.weight" => {
                let row = init::zeros(&[1, shape[1]], device)?;
                let pad = pad as usize;
                Ok(w.slice_assign(&[pad..pad + 1, 0..shape[1]], &row)?)
            }
            _ => Ok(w),
        }
    }
}

/// A tensor's own seed: the run's seed mixed with the FNV-1a hash of its name (stable
/// across platforms and Rust versions, unlike `DefaultHasher`).
fn tensor_seed(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// config.json itself, or the one in a folder.
fn config_file(path: &Path) -> Result<PathBuf> {
    let file = if path.is_dir() {
        path.join("config.json")
    } else {
        path.to_path_buf()
    };
    if !file.is_file() {
        return Err(ModelError::Config {
            file,
            msg: "no such file (from_config needs a config.json)".into(),
        });
    }
    Ok(file)
}

impl AutoModelForCausalLM {
    /// transformers' `AutoModelForCausalLM.from_config(config)`: the architecture of
    /// `config` (a config.json or its folder) with new weights drawn from `seed` as
    /// transformers initializes them (see `InitScheme`), all of them trainable
    /// parameters (tied embeddings one). `save_pretrained` writes it as a checkpoint.
    /// `opts` gives the device, dtype and `config_overrides` (saved with the model); LoRA
    /// and quantization are refused (they are for trained weights).
    pub fn from_config(config: &Path, opts: &LoadOptions, seed: u64) -> Result<CausalLm> {
        let refuse = |param: &'static str, what: &str| {
            Err(ModelError::InvalidArgument {
                param,
                msg: format!("{what} needs trained weights; a model from a config has new ones"),
            })
        };
        if opts.lora.is_some() {
            return refuse("lora", "LoRA");
        }
        if opts.quantize.is_some() {
            return refuse("quantize", "quantizing");
        }
        let path = config_file(config)?;
        let config =
            CausalLmConfig::from_config_json_with(&path, Vec::new(), &opts.config_overrides)?;
        let mut raw_config = crate::auto::read_json(&path)?;
        crate::config::apply_config_overrides(&mut raw_config, &opts.config_overrides, &path)?;
        let scheme = InitScheme::from_config_json(&raw_config, &path, &config, seed)?;
        let make: ferro_nn::InitFn =
            Box::new(move |name, shape, device| scheme.tensor(name, shape, device));
        let weights = Weights::from_init(&path, make, &opts.device, opts.dtype).trainable();
        CausalLm::assemble(&weights, config, &opts.device, None, Some(raw_config))
    }
}
