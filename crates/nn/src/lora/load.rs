//! Loading a model with LoRA: which linear layers get an adapter, where the adapters
//! start from (a PEFT file, or PEFT's initialisation from a seed), and the checks once the
//! model is loaded.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use super::config::{lora_param_names, module_to_save_param_name, ALL_LINEAR};
use super::{
    invalid, LoraAdapter, LoraConfig, LoraSpec, TargetModules, ADAPTER_WEIGHTS_FILE, PEFT_PREFIX,
};
use crate::dropout::Dropout;
use crate::error::{NnError, Result};
use crate::parameters::Parameters;

/// A PEFT adapter file's tensors, by saved key.
struct AdapterFile {
    path: PathBuf,
    tensors: HashMap<String, Tensor>,
}

/// LoRA state while a model loads (`Weights::with_lora`).
pub(crate) struct LoraLoad {
    config: LoraConfig,
    scaling: f64,
    adapter: Option<AdapterFile>,
    /// Adapter keys read so far.
    used: Mutex<BTreeSet<String>>,
    /// Draws new adapters' A (and B when `init_lora_weights` is false).
    init_rng: Mutex<StdRng>,
    /// Every adapter's dropout (one probability, the model's mask stream).
    dropout: Dropout,
    /// Every module a tensor was read from, and the linear layers among them.
    seen: Mutex<BTreeSet<String>>,
    linears: Mutex<Vec<String>>,
    adapted: Mutex<Vec<String>>,
    parameters: Parameters,
    device: Device,
}

impl LoraLoad {
    pub(crate) fn new(spec: &LoraSpec, parameters: Parameters, device: &Device) -> Result<Self> {
        let config = spec.config.resolved();
        config.validate()?;
        if config.target_modules.is_none() {
            return Err(invalid(
                "target_modules",
                "no target modules (and no default for this model family): name the \
                 linear layers to adapt, e.g. [\"q_proj\", \"v_proj\"]",
            ));
        }
        if spec.adapter.is_none() {
            match &config.init_lora_weights {
                Value::Bool(_) => {}
                Value::String(s) if s.eq_ignore_ascii_case("gaussian") => {}
                other => {
                    return Err(invalid(
                        "init_lora_weights",
                        format!(
                            "{other}: a new adapter starts as true (PEFT's default), \
                             \"gaussian\" or false"
                        ),
                    ))
                }
            }
        }
        let adapter = match &spec.adapter {
            None => None,
            Some(dir) => Some(read_adapter(dir, device)?),
        };
        let dropout = Dropout::new(config.lora_dropout, "lora_dropout", &parameters)?;
        Ok(Self {
            scaling: config.scaling(),
            config,
            adapter,
            used: Mutex::default(),
            init_rng: Mutex::new(StdRng::seed_from_u64(spec.seed)),
            dropout,
            seen: Mutex::default(),
            linears: Mutex::default(),
            adapted: Mutex::default(),
            parameters,
            device: device.clone(),
        })
    }

    pub(crate) fn config(&self) -> &LoraConfig {
        &self.config
    }

    /// Notes that tensor `name` was read (its module is everything before the last dot).
    pub(crate) fn note_read(&self, name: &str) {
        if let (Some((module, _)), Ok(mut seen)) = (name.rsplit_once('.'), self.seen.lock()) {
            seen.insert(module.to_string());
        }
    }

    /// For a tensor of a module to save: its parameter name and its value from the adapter
    /// file (`None` when there is no file: the checkpoint's value is the start).
    pub(crate) fn module_to_save(
        &self,
        name: &str,
        shape: &[usize],
    ) -> Result<Option<(String, Option<Tensor>)>> {
        let Some((module, rest)) = self.config.module_to_save(name) else {
            return Ok(None);
        };
        let param = module_to_save_param_name(module, rest);
        let value = match &self.adapter {
            None => None,
            Some(_) => Some(self.take(&format!("{PEFT_PREFIX}{module}.{rest}"), shape)?),
        };
        Ok(Some((param, value)))
    }

    /// Whether tensors of `module` are trained whole.
    pub(crate) fn saves(&self, module: &str) -> bool {
        self.config
            .module_to_save(&format!("{module}.weight"))
            .is_some()
    }

    /// An adapter tensor of the file, checked against `shape`.
    fn take(&self, key: &str, shape: &[usize]) -> Result<Tensor> {
        let Some(file) = &self.adapter else {
            return Err(invalid("lora", "no adapter file"));
        };
        let t = file
            .tensors
            .get(key)
            .ok_or_else(|| NnError::MissingTensor {
                file: file.path.clone(),
                name: key.into(),
                hint: " (the adapter was saved for another model, or with other target_modules / \
                   modules_to_save)"
                    .into(),
            })?;
        if t.dims() != shape {
            return Err(NnError::ShapeMismatch {
                file: file.path.clone(),
                name: key.into(),
                expected: shape.to_vec(),
                got: t.dims().to_vec(),
            });
        }
        if let Ok(mut used) = self.used.lock() {
            used.insert(key.to_string());
        }
        Ok(t.clone())
    }

    /// The adapter of linear layer `module` (`in_features → out_features`), or `None` when
    /// it is not a target. `is_output`: the model's output layer (left out by "all-linear").
    pub(crate) fn adapter(
        &self,
        module: &str,
        in_features: usize,
        out_features: usize,
        is_output: bool,
    ) -> Result<Option<LoraAdapter>> {
        if let Ok(mut l) = self.linears.lock() {
            l.push(module.to_string());
        }
        if !self.config.is_target(module, is_output) {
            return Ok(None);
        }
        let r = self.config.r;
        let (a, b) = match &self.adapter {
            Some(_) => (
                self.take(
                    &format!("{PEFT_PREFIX}{module}.lora_A.weight"),
                    &[r, in_features],
                )?,
                self.take(
                    &format!("{PEFT_PREFIX}{module}.lora_B.weight"),
                    &[out_features, r],
                )?,
            ),
            None => self.init(in_features, out_features)?,
        };
        let (a_name, b_name) = lora_param_names(module);
        let a = self.parameters.var(&a_name, &a.to_dtype(DType::F32)?)?;
        let b = self.parameters.var(&b_name, &b.to_dtype(DType::F32)?)?;
        if let Ok(mut l) = self.adapted.lock() {
            l.push(module.to_string());
        }
        Ok(Some(LoraAdapter {
            module: module.to_string(),
            a,
            b,
            scaling: self.scaling,
            dropout: self.dropout.clone(),
        }))
    }

    /// A new adapter as PEFT's `reset_lora_parameters` makes it: A kaiming-uniform with
    /// a = √5 (uniform in ±1/√in, `nn.Linear`'s default) or normal with std 1/r
    /// ("gaussian"), B zero; with `init_lora_weights: false` both keep `nn.Linear`'s
    /// default (B uniform in ±1/√r).
    fn init(&self, inp: usize, out: usize) -> Result<(Tensor, Tensor)> {
        let r = self.config.r;
        let mut rng = self
            .init_rng
            .lock()
            .map_err(|_| invalid("lora", "the init generator is poisoned"))?;
        let uniform = |rng: &mut StdRng, n: usize, fan_in: usize| -> Vec<f32> {
            let bound = 1.0 / (fan_in as f64).sqrt();
            (0..n)
                .map(|_| rng.random_range(-bound..bound) as f32)
                .collect()
        };
        let (a, b) = match &self.config.init_lora_weights {
            Value::Bool(false) => (
                uniform(&mut rng, r * inp, inp),
                uniform(&mut rng, out * r, r),
            ),
            Value::String(_) => {
                let std = 1.0 / r as f64;
                let a = (0..r * inp)
                    .map(|_| (std * standard_normal(&mut rng)) as f32)
                    .collect();
                (a, vec![0f32; out * r])
            }
            _ => (uniform(&mut rng, r * inp, inp), vec![0f32; out * r]),
        };
        Ok((
            Tensor::from_vec(a, (r, inp), &self.device)?,
            Tensor::from_vec(b, (out, r), &self.device)?,
        ))
    }

    /// After the model is loaded: errors when no linear layer matched `target_modules`,
    /// when a target is not a linear layer (LoRA on embeddings or norms is not
    /// implemented), or when the adapter file holds tensors no module took.
    pub(crate) fn finish(&self) -> Result<()> {
        let linears = self.linears.lock().map(|l| l.clone()).unwrap_or_default();
        let adapted = self.adapted.lock().map(|l| l.len()).unwrap_or(0);
        let targets = self
            .config
            .target_modules
            .as_ref()
            .map_or_else(|| "none".to_string(), |t| t.to_string());
        if adapted == 0 {
            let shown: Vec<&str> = linears.iter().take(8).map(String::as_str).collect();
            return Err(invalid(
                "target_modules",
                format!(
                    "{targets} matches no linear layer of the model; its {} linear layers \
                     include {}",
                    linears.len(),
                    shown.join(", ")
                ),
            ));
        }
        let seen = self.seen.lock().map(|s| s.clone()).unwrap_or_default();
        let linear_set: BTreeSet<&String> = linears.iter().collect();
        // "all-linear" is about linear layers only.
        let all_linear = matches!(
            &self.config.target_modules,
            Some(TargetModules::Pattern(p)) if p.eq_ignore_ascii_case(ALL_LINEAR)
        );
        if let Some(m) = seen
            .iter()
            .find(|m| !all_linear && !linear_set.contains(m) && self.config.is_target(m, false))
        {
            return Err(invalid(
                "target_modules",
                format!(
                    "{targets} matches `{m}`, which is not a linear layer (LoRA here adapts \
                     linear layers only, not embeddings or norms)"
                ),
            ));
        }
        if let Some(file) = &self.adapter {
            let used = self.used.lock().map(|u| u.clone()).unwrap_or_default();
            let mut unused: Vec<&String> =
                file.tensors.keys().filter(|k| !used.contains(*k)).collect();
            unused.sort();
            if !unused.is_empty() {
                return Err(NnError::Format {
                    file: file.path.clone(),
                    msg: format!(
                        "{} adapter tensors match no module of this model (saved for another \
                         model?): {}",
                        unused.len(),
                        unused
                            .iter()
                            .take(4)
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        }
        Ok(())
    }
}

/// A standard normal draw (Box–Muller).
fn standard_normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A PEFT folder's adapter_model.safetensors, in f32 on `device`.
fn read_adapter(dir: &Path, device: &Device) -> Result<AdapterFile> {
    let path = dir.join(ADAPTER_WEIGHTS_FILE);
    if !path.exists() {
        let hint = if dir.join("adapter_model.bin").exists() {
            " (only adapter_model.bin, PyTorch's pickle format, is there: re-save the adapter \
             with safe_serialization=True)"
        } else {
            ""
        };
        return Err(NnError::Format {
            file: path,
            msg: format!("no adapter weights{hint}"),
        });
    }
    let tensors = candle_core::safetensors::load(&path, device).map_err(|e| NnError::Format {
        file: path.clone(),
        msg: format!("not a valid safetensors file: {e}"),
    })?;
    let tensors = tensors
        .into_iter()
        .map(|(k, t)| Ok((k, t.to_dtype(DType::F32)?)))
        .collect::<Result<HashMap<_, _>>>()?;
    Ok(AdapterFile { path, tensors })
}
