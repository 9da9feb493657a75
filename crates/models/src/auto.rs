//! `AutoModelForCausalLM::from_pretrained`: resolve the model, read its config (config.json
//! or GGUF metadata), pick the architecture, load its weights.

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use ferro_core::{GgufFile, HubOptions, ModelSource};
use ferro_nn::{Cache, Caches, LoraSpec, MatmulPrecision, Parameters, TargetModules, Weights};

use crate::config::{Architecture, CausalLmConfig};
use crate::error::{ModelError, Result};
use crate::gemma3::Gemma3ForCausalLM;
use crate::gguf_names::{gemma3_gguf_name, llama_family_gguf_name};
use crate::llama::{LlamaForCausalLM, Logits};

/// How to load a model, as transformers' `from_pretrained` keyword arguments.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Dtype of dense weights and activations (f32 by default).
    pub dtype: DType,
    pub device: Device,
    /// Which `.gguf` of a folder or repo (transformers' `gguf_file=`).
    pub gguf_file: Option<String>,
    /// Expand quantized GGUF weights to `dtype` instead of multiplying them quantized.
    pub dequantize: bool,
    /// Quantize a safetensors checkpoint's matrices to this block type as it loads
    /// (`Q8_0`, `Q4K`, `Q5K`, `Q6K`; see `ferro_nn::quant::parse_quant_type`), to run on
    /// the quantized CPU kernels as the GGUF `ferro quantize` writes would. Refused for a
    /// GGUF (already quantized) and off the CPU.
    pub quantize: Option<GgmlDType>,
    pub hub: HubOptions,
    /// Load for training: dense weights become trainable parameters (`Var`s), listed by
    /// the model's `parameters()`.
    pub trainable: bool,
    /// Load with LoRA adapters (PEFT's format): a new adapter, or a saved one to go on
    /// from. Only the adapters (and `modules_to_save`) are trainable then, whatever
    /// `trainable` says; the base weights are frozen, quantized ones included (QLoRA).
    pub lora: Option<LoraSpec>,
    /// Fields set over the checkpoint's config.json, as transformers'
    /// `from_pretrained(..., hidden_dropout_prob=0.0)` (e.g. dropout off for a reference
    /// run); `save_pretrained` writes them back.
    pub config_overrides: serde_json::Map<String, serde_json::Value>,
    /// How dense f32 linear layers multiply for inference (`MatmulPrecision`; PyTorch's
    /// `torch.set_float32_matmul_precision`): `Highest` (f32, the default) or `High`.
    pub matmul_precision: MatmulPrecision,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            device: Device::Cpu,
            gguf_file: None,
            dequantize: false,
            quantize: None,
            hub: HubOptions::from_env(),
            trainable: false,
            lora: None,
            config_overrides: serde_json::Map::new(),
            matmul_precision: MatmulPrecision::Highest,
        }
    }
}

/// The architecture-specific model behind `CausalLm`.
#[derive(Debug, Clone)]
enum Model {
    Llama(LlamaForCausalLM),
    Gemma3(Gemma3ForCausalLM),
}

impl Model {
    fn load(w: &Weights, config: &CausalLmConfig) -> Result<Self> {
        Ok(match config.architecture {
            Architecture::Llama | Architecture::Qwen2 | Architecture::Mistral => {
                Model::Llama(LlamaForCausalLM::load(w, config)?)
            }
            Architecture::Gemma3 => Model::Gemma3(Gemma3ForCausalLM::load(w, config)?),
        })
    }
}

/// A device from its name: `cpu`, `cuda`, `cuda:N`, `metal`, `metal:N`. CUDA and Metal need
/// the crate's `cuda` / `metal` feature; without it the error says so.
pub fn parse_device(spec: &str) -> Result<Device> {
    let bad = |msg: String| ModelError::InvalidArgument {
        param: "device",
        msg,
    };
    let (kind, index) = match spec.split_once(':') {
        Some((k, i)) => (
            k,
            i.parse::<usize>()
                .map_err(|_| bad(format!("`{spec}`: the index after `:` must be a number")))?,
        ),
        None => (spec, 0),
    };
    match kind {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(index)
            .map_err(|e| bad(format!("`{spec}`: {e} (build with `--features cuda`)"))),
        "metal" => Device::new_metal(index)
            .map_err(|e| bad(format!("`{spec}`: {e} (build with `--features metal`)"))),
        _ => Err(bad(format!(
            "`{spec}` is not one of cpu, cuda[:N], metal[:N]"
        ))),
    }
}

/// A loaded causal language model.
#[derive(Debug, Clone)]
pub struct CausalLm {
    model: Model,
    pub config: CausalLmConfig,
    pub device: Device,
    /// The checkpoint's generation_config.json (generation defaults), when it has one.
    pub generation_config: Option<serde_json::Value>,
    /// The trainable parameters (empty unless loaded with `LoadOptions::trainable`).
    pub parameters: Parameters,
    /// config.json as read (a safetensors checkpoint), which `save_pretrained` writes back.
    raw_config: Option<serde_json::Value>,
}

/// transformers' `AutoModelForCausalLM`.
pub struct AutoModelForCausalLM;

impl AutoModelForCausalLM {
    pub fn from_pretrained(model: &str, opts: &LoadOptions) -> Result<CausalLm> {
        let source = ModelSource::resolve(model, &opts.hub)?;
        Self::from_source(&source, opts)
    }

    pub fn from_source(source: &ModelSource, opts: &LoadOptions) -> Result<CausalLm> {
        let start = std::time::Instant::now();
        if let Some(path) = source.gguf(opts.gguf_file.as_deref())? {
            if opts.quantize.is_some() {
                return Err(ModelError::InvalidArgument {
                    param: "quantize",
                    msg: format!(
                        "{} is a GGUF file, already quantized (requantize it with `ferro quantize`)",
                        path.display()
                    ),
                });
            }
            // The tokenizer's arrays are not needed for the model (and take tens of MB).
            let header = GgufFile::open_without_large_arrays(&path)?;
            tracing::debug!(elapsed = ?start.elapsed(), "read GGUF header");
            let mut config = CausalLmConfig::from_gguf(&header)?;
            config.apply_gguf_overrides(&opts.config_overrides, &path)?;
            let name_map = match config.architecture {
                Architecture::Gemma3 => gemma3_gguf_name,
                _ => llama_family_gguf_name,
            };
            let mut weights =
                Weights::from_gguf(header, name_map, &opts.device, opts.dtype, opts.dequantize)?;
            if let Some(spec) = lora_spec(opts, model_type(config.architecture)) {
                weights = weights.with_lora(&spec)?;
            } else if opts.trainable {
                // Quantized matrices stay frozen; dense tensors (norms, biases, or all of
                // them when dequantized) become trainable.
                weights = weights.trainable();
            }
            if config.architecture == Architecture::Llama {
                // llama.cpp's converter stores Llama's q/k rows permuted for its interleaved
                // rotary layout (Qwen2 and Gemma 3 files are not permuted).
                weights = weights
                    .with_permuted_qk(config.num_attention_heads, config.num_key_value_heads);
            }
            let model = CausalLm::assemble(&weights, config, &opts.device, None, None)?;
            tracing::debug!(elapsed = ?start.elapsed(), "loaded the GGUF model");
            return Ok(model);
        }
        let (config, config_path) = read_causal_lm_config(source, &opts.config_overrides)?;
        let mut raw_config = read_json(&config_path)?;
        crate::config::apply_config_overrides(
            &mut raw_config,
            &opts.config_overrides,
            &config_path,
        )?;
        let raw_config = Some(raw_config);
        let generation_config = source
            .optional_file("generation_config.json")?
            .map(|p| read_json(&p))
            .transpose()?;
        let files = safetensors_files(source)?;
        let mut weights = Weights::from_safetensors(&files, &opts.device, opts.dtype)?
            .with_matmul_precision(opts.matmul_precision);
        if let Some(dtype) = opts.quantize {
            weights = weights.with_quantize(dtype)?;
        }
        if let Some(spec) = lora_spec(opts, model_type(config.architecture)) {
            weights = weights.with_lora(&spec)?;
        } else if opts.trainable {
            weights = weights.trainable();
        }
        let model = CausalLm::assemble(
            &weights,
            config,
            &opts.device,
            generation_config,
            raw_config,
        )?;
        tracing::debug!(elapsed = ?start.elapsed(), "loaded the safetensors model");
        Ok(model)
    }
}

/// config.json's `model_type` of an architecture.
fn model_type(a: Architecture) -> &'static str {
    match a {
        Architecture::Llama => "llama",
        Architecture::Qwen2 => "qwen2",
        Architecture::Mistral => "mistral",
        Architecture::Gemma3 => "gemma3_text",
    }
}

/// `opts.lora`, with PEFT's default target modules for `model_type` when it names none.
pub(crate) fn lora_spec(opts: &LoadOptions, model_type: &str) -> Option<LoraSpec> {
    let mut spec = opts.lora.clone()?;
    if spec.config.target_modules.is_none() {
        // peft's TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.
        let targets: &[&str] = match model_type {
            "llama" | "mistral" | "qwen2" | "gemma3" | "gemma3_text" => &["q_proj", "v_proj"],
            "bert" | "roberta" | "xlm-roberta" => &["query", "value"],
            _ => &[],
        };
        if !targets.is_empty() {
            spec.config.target_modules = Some(TargetModules::names(targets));
        }
    }
    Some(spec)
}

/// config.json (with generation_config.json's eos ids), validated; and its path.
pub(crate) fn read_causal_lm_config(
    source: &ModelSource,
    overrides: &serde_json::Map<String, serde_json::Value>,
) -> Result<(CausalLmConfig, std::path::PathBuf)> {
    let config_path = source.required_file("config.json")?;
    let generation_eos = source
        .optional_file("generation_config.json")?
        .map(|p| read_json(&p))
        .transpose()?
        .as_ref()
        .map(generation_eos)
        .unwrap_or_default();
    let config = CausalLmConfig::from_config_json_with(&config_path, generation_eos, overrides)?;
    Ok((config, config_path))
}

/// A JSON file, with errors naming it.
pub(crate) fn read_json(path: &std::path::Path) -> Result<serde_json::Value> {
    let config_error = |msg: String| ModelError::Config {
        file: path.into(),
        msg,
    };
    let text = std::fs::read_to_string(path).map_err(|e| config_error(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| config_error(format!("invalid JSON: {e}")))
}

/// `eos_token_id` of generation_config.json (an id or a list).
fn generation_eos(config: &serde_json::Value) -> Vec<u32> {
    match config.get("eos_token_id") {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(|x| vec![x as u32]).unwrap_or_default()
        }
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64())
            .map(|x| x as u32)
            .collect(),
        _ => Vec::new(),
    }
}

/// model.safetensors, or the shards model.safetensors.index.json lists.
pub(crate) fn safetensors_files(source: &ModelSource) -> Result<Vec<std::path::PathBuf>> {
    if let Some(p) = source.optional_file("model.safetensors")? {
        return Ok(vec![p]);
    }
    let Some(index) = source.optional_file("model.safetensors.index.json")? else {
        return Err(ModelError::NoWeights {
            model: source.describe(),
            reason: "no model.safetensors, model.safetensors.index.json or .gguf file".into(),
        });
    };
    let v = read_json(&index)?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| ModelError::Config {
            file: index.clone(),
            msg: "no `weight_map` object".into(),
        })?;
    let mut shards: Vec<&str> = map.values().filter_map(|s| s.as_str()).collect();
    shards.sort_unstable();
    shards.dedup();
    shards
        .into_iter()
        .map(|s| source.required_file(s).map_err(ModelError::from))
        .collect()
}

impl CausalLm {
    /// The model `weights` hold for `config` (a checkpoint's, or new ones from
    /// `from_config`): the one place a `CausalLm` is built.
    pub(crate) fn assemble(
        weights: &Weights,
        config: CausalLmConfig,
        device: &Device,
        generation_config: Option<serde_json::Value>,
        raw_config: Option<serde_json::Value>,
    ) -> Result<Self> {
        let model = Model::load(weights, &config)?;
        weights.finish_lora()?;
        Ok(CausalLm {
            model,
            config,
            device: device.clone(),
            generation_config,
            parameters: weights.parameters(),
            raw_config,
        })
    }

    /// transformers' `save_pretrained` of a model loaded for training from safetensors:
    /// config.json and model.safetensors (tied weights once, under the embedding's name),
    /// each written whole or not at all.
    pub fn save_pretrained(&self, dir: &std::path::Path) -> Result<()> {
        let Some(config) = &self.raw_config else {
            return Err(ModelError::InvalidArgument {
                param: "model",
                msg: "loaded from a GGUF file: save a LoRA adapter instead of full weights".into(),
            });
        };
        let tensors: Vec<(String, Tensor)> = self
            .parameters
            .named()
            .into_iter()
            .map(|(name, var)| (name, var.as_tensor().detach()))
            .collect();
        if tensors.is_empty() {
            return Err(ModelError::InvalidArgument {
                param: "model",
                msg: "loaded for inference: load it with LoadOptions::trainable to save it".into(),
            });
        }
        crate::save::save_checkpoint(dir, config, &tensors)
    }

    /// An empty cache for one sequence (or an unpadded batch).
    pub fn new_cache(&self) -> Cache {
        self.new_batch_cache(Vec::new())
    }

    /// An empty cache for a left-padded batch: row `i` starts with `left_pad[i]` padding
    /// tokens, which are masked and do not count as positions.
    pub fn new_batch_cache(&self, left_pad: Vec<usize>) -> Cache {
        let layers = match &self.model {
            Model::Llama(m) => m.num_layers(),
            Model::Gemma3(m) => m.num_layers(),
        };
        Cache::new(layers, left_pad)
    }

    /// PEFT's `merge_and_unload`: every LoRA adapter folded into its base weight
    /// (`W + scaling · B A`) and dropped; `parameters` keeps what stays trainable (modules
    /// to save, under their own names). A model without adapters comes back as it was. An
    /// adapter on a quantized base (GGUF) is refused, before anything changes: load the
    /// GGUF with `dequantize` and the adapter to merge.
    pub fn merge_and_unload(mut self) -> Result<Self> {
        let linears = match &mut self.model {
            Model::Llama(m) => m.linears_mut(),
            Model::Gemma3(m) => m.linears_mut(),
        };
        ferro_nn::lora::merge_all(linears)?;
        self.parameters = self.parameters.without_lora();
        Ok(self)
    }

    /// The longest sequence (prompt + generated) the model takes.
    pub fn max_positions(&self) -> usize {
        self.config.max_position_embeddings
    }

    /// Runs `ids (b, t)` in the slots after what `cache` holds; returns f32 logits
    /// `(b, t, vocab)`, or `(b, 1, vocab)` with `last_only`.
    pub fn forward(&self, ids: &Tensor, cache: &mut Cache, last_only: bool) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let pads = cache.left_pad().len();
        if pads != 0 && pads != b {
            return Err(ModelError::InvalidArgument {
                param: "input_ids",
                msg: format!("a batch of {b} rows for a cache laid out for {pads}"),
            });
        }
        self.check_room(cache.len() + t)?;
        let which = if last_only { Logits::Last } else { Logits::All };
        self.run(ids, &mut Caches::Batch(cache), which, false)
    }

    /// f32 logits `(n, vocab)` of the positions `rows` of the flattened `ids (b, t)` only,
    /// from an empty cache: what a training loss scores (`Logits::Rows`).
    pub fn logits_at(&self, ids: &Tensor, rows: &[u32]) -> Result<Tensor> {
        let (_, t) = ids.dims2()?;
        self.check_room(t)?;
        let mut cache = self.new_cache();
        self.run(
            ids,
            &mut Caches::Batch(&mut cache),
            Logits::Rows(rows),
            false,
        )
    }

    /// One step of several independent sequences (a serving engine's batch): sequence `i`
    /// feeds `seqs[i].0` (one token when decoding, a chunk of its prompt when prefilling)
    /// after what its cache `seqs[i].1` holds. The tokens are packed into one row, so the
    /// matrix products read each weight once for all of them; each sequence attends over
    /// its own cache. When every sequence feeds one token (a decode step), each row gets
    /// exactly the logits it gets alone, whatever else is packed with it
    /// (`ferro_nn::quant::rows_alone`). Returns each sequence's last logits, f32 `(n, vocab)`.
    pub fn forward_packed(&self, seqs: &mut [(&[u32], &mut Cache)]) -> Result<Tensor> {
        let mut ids = Vec::new();
        let mut lens = Vec::with_capacity(seqs.len());
        for (i, (tokens, cache)) in seqs.iter().enumerate() {
            if tokens.is_empty() || !cache.left_pad().is_empty() {
                return Err(ModelError::InvalidArgument {
                    param: "packed sequences",
                    msg: format!("sequence {i} has no tokens or a left-padded batch cache"),
                });
            }
            self.check_room(cache.len() + tokens.len())?;
            ids.extend_from_slice(tokens);
            lens.push(tokens.len());
        }
        if ids.is_empty() {
            return Err(ModelError::InvalidArgument {
                param: "packed sequences",
                msg: "no sequence was given".into(),
            });
        }
        let total = ids.len();
        let ids = Tensor::from_vec(ids, (1, total), &self.device)?;
        let rows_alone = lens.iter().all(|&len| len == 1);
        let caches = seqs.iter_mut().map(|(_, c)| &mut **c).collect();
        let mut caches = Caches::Packed { caches, lens };
        let logits = self.run(&ids, &mut caches, Logits::Last, rows_alone)?;
        Ok(logits.squeeze(1)?)
    }

    fn check_room(&self, positions: usize) -> Result<()> {
        if positions > self.max_positions() {
            return Err(ModelError::InvalidArgument {
                param: "input_ids",
                msg: format!(
                    "{positions} positions exceed the model's context of {}",
                    self.max_positions()
                ),
            });
        }
        Ok(())
    }

    /// The model's forward pass on the kernels' thread pool, so that their parallel loops
    /// start from a worker; with `rows_alone`, every row gets its single-row bits (a
    /// per-thread setting, so it is made on that worker).
    fn run(
        &self,
        ids: &Tensor,
        caches: &mut Caches<'_>,
        which: Logits<'_>,
        rows_alone: bool,
    ) -> Result<Tensor> {
        let training = self.parameters.is_training();
        ferro_nn::quant::install(|| {
            let mut forward = || match &self.model {
                Model::Llama(m) => m.forward(ids, caches, which, training),
                Model::Gemma3(m) => m.forward(ids, caches, which, training),
            };
            if rows_alone {
                ferro_nn::quant::rows_alone(forward)
            } else {
                forward()
            }
        })
    }
}

/// Gradient checkpointing (`ferro_nn::checkpoint`).
impl CausalLm {
    /// transformers' `gradient_checkpointing_enable()`: in training mode
    /// (`parameters.set_training(true)`, as the Trainer sets it), a forward from an empty
    /// cache keeps only each decoder layer's input, and the layer runs again in the backward
    /// pass (the cache stays empty, as transformers turns `use_cache` off). Less memory, the same gradients, about one
    /// more forward pass of time; train with `ferro_nn::checkpoint::backward(&loss)`, which
    /// collects the layers' parameter gradients. Out of training mode (inference, generation)
    /// nothing changes.
    pub fn gradient_checkpointing_enable(&mut self) {
        self.set_gradient_checkpointing(true);
    }

    /// transformers' `gradient_checkpointing_disable()`.
    pub fn gradient_checkpointing_disable(&mut self) {
        self.set_gradient_checkpointing(false);
    }

    /// transformers' `is_gradient_checkpointing`.
    pub fn is_gradient_checkpointing(&self) -> bool {
        match &self.model {
            Model::Llama(m) => m.gradient_checkpointing,
            Model::Gemma3(m) => m.gradient_checkpointing,
        }
    }

    fn set_gradient_checkpointing(&mut self, on: bool) {
        match &mut self.model {
            Model::Llama(m) => m.gradient_checkpointing = on,
            Model::Gemma3(m) => m.gradient_checkpointing = on,
        }
    }
}
