//! Where weights come from: safetensors files (one or sharded) or a GGUF file whose
//! tensor names are mapped to the checkpoint's own (`blk.0.attn_q` → `model.layers.0.self_attn.q_proj`).
//! Quantized GGUF tensors stay quantized unless dequantization is asked for.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::{
    ggml_file::qtensor_from_ggml, GgmlDType, QStorage, QTensor, QuantizedType,
};
use candle_core::{DType, Device, Tensor};
use ferro_core::GgufFile;

use crate::error::{NnError, Result};
use crate::lora::{LoraAdapter, LoraConfig, LoraLoad, LoraSpec};
use crate::parameters::Parameters;
use crate::quant::QuantMatrix;

/// Maps a transformers weight name to its GGUF name, per architecture.
pub type GgufNameMap = fn(&str) -> Option<String>;

/// Makes a tensor from its checkpoint name and shape (outermost first), in f32 on the
/// given device: fresh initial values for a model built from its config alone.
pub type InitFn = Box<dyn Fn(&str, &[usize], &Device) -> Result<Tensor> + Send + Sync>;

enum Source {
    Safetensors {
        files: Vec<PathBuf>,
        tensors: candle_core::safetensors::MmapedSafetensors,
    },
    Gguf {
        file: File,
        header: GgufFile,
        index: HashMap<String, usize>,
        name_map: GgufNameMap,
        /// Head counts of q and k when the file stores their rows in llama.cpp's
        /// interleaved-rotary order (its converter permutes Llama's q/k weights).
        permuted_qk: Option<(usize, usize)>,
    },
    /// No checkpoint: each tensor is made when the model reads it (a model initialized
    /// from its config), so the architecture's loader stays the one place that names them.
    Init {
        /// The config the model is built from, for messages.
        origin: PathBuf,
        make: InitFn,
    },
}

/// A checkpoint's weights, read on demand in the checkpoint's own names.
pub struct Weights {
    source: Source,
    pub device: Device,
    /// The dtype dense weights are converted to.
    pub dtype: DType,
    /// Turn quantized tensors into dense ones when loading.
    pub dequantize: bool,
    /// Quantize dense matrices to this block type when loading (`--quantize`).
    quantize: Option<GgmlDType>,
    /// How linear layers' dense products run for inference (set on each as it loads).
    pub matmul_precision: crate::linear::MatmulPrecision,
    /// Quantized matrices already read, by GGUF name (a tied embedding is read once).
    shared: std::sync::Mutex<HashMap<String, Arc<QuantMatrix>>>,
    /// Loading for training: dense tensors become `Var`s, listed here.
    parameters: Option<Parameters>,
    /// Loading with LoRA adapters: only they (and the modules to save) are `Var`s.
    lora: Option<LoraLoad>,
    /// A bare base model read as a task model: names under this prefix (transformers'
    /// `base_model_prefix`, `bert`) are stored without it.
    base_prefix: Option<String>,
}

/// ggml type ids and candle's types.
const GGML_TYPES: [(u32, GgmlDType); 15] = [
    (0, GgmlDType::F32),
    (1, GgmlDType::F16),
    (2, GgmlDType::Q4_0),
    (3, GgmlDType::Q4_1),
    (6, GgmlDType::Q5_0),
    (7, GgmlDType::Q5_1),
    (8, GgmlDType::Q8_0),
    (9, GgmlDType::Q8_1),
    (10, GgmlDType::Q2K),
    (11, GgmlDType::Q3K),
    (12, GgmlDType::Q4K),
    (13, GgmlDType::Q5K),
    (14, GgmlDType::Q6K),
    (15, GgmlDType::Q8K),
    (30, GgmlDType::BF16),
];

/// The ggml type id of a GGUF tensor as candle's type.
pub fn ggml_dtype(id: u32) -> Option<GgmlDType> {
    GGML_TYPES.iter().find(|(i, _)| *i == id).map(|&(_, t)| t)
}

/// Candle's type as the ggml type id a GGUF stores.
pub fn ggml_type_id(dtype: GgmlDType) -> u32 {
    GGML_TYPES
        .iter()
        .find(|(_, t)| *t == dtype)
        .map_or(0, |&(i, _)| i)
}

impl Weights {
    /// Memory-maps safetensors files (several for a sharded checkpoint).
    pub fn from_safetensors(files: &[PathBuf], device: &Device, dtype: DType) -> Result<Self> {
        for f in files {
            check_safetensors_header(f)?;
        }
        // SAFETY: the files are mapped read-only; like every mmap-based loader (transformers,
        // candle, llama.cpp) we rely on them not being truncated while the model loads.
        #[allow(unsafe_code)]
        let tensors = unsafe { candle_core::safetensors::MmapedSafetensors::multi(files) }
            .map_err(|e| NnError::Format {
                file: files.first().cloned().unwrap_or_default(),
                msg: format!("not a valid safetensors file: {e}"),
            })?;
        let source = Source::Safetensors {
            files: files.to_vec(),
            tensors,
        };
        Ok(Self::new(source, device, dtype, true))
    }

    /// Opens a GGUF file; `name_map` translates the architecture's weight names.
    pub fn from_gguf(
        mut header: GgufFile,
        name_map: GgufNameMap,
        device: &Device,
        dtype: DType,
        dequantize: bool,
    ) -> Result<Self> {
        // Only the tensor directory is needed from here on; the vocabulary arrays in the
        // metadata take tens of MB.
        header.metadata.clear();
        let file = File::open(&header.path).map_err(|e| ferro_core::Error::io(&header.path, e))?;
        let len = file
            .metadata()
            .map_err(|e| ferro_core::Error::io(&header.path, e))?
            .len();
        let mut index = HashMap::with_capacity(header.tensors.len());
        for (i, t) in header.tensors.iter().enumerate() {
            let (start, size) = gguf_extent(&header, i)?;
            if start.checked_add(size).is_none_or(|end| end > len) {
                return Err(NnError::Format {
                    file: header.path.clone(),
                    msg: format!(
                        "tensor `{}` claims bytes {start}..{} but the file holds {len} (truncated?)",
                        t.name,
                        start.saturating_add(size)
                    ),
                });
            }
            index.insert(t.name.clone(), i);
        }
        let source = Source::Gguf {
            file,
            header,
            index,
            name_map,
            permuted_qk: None,
        };
        Ok(Self::new(source, device, dtype, dequantize))
    }

    /// Weights made by `make` as the model reads them (transformers' `from_config`: a new
    /// model with initial values); `origin` names the config in messages. Loaded for
    /// training with `trainable`, a name read twice (tied embeddings) is one parameter.
    pub fn from_init(origin: &Path, make: InitFn, device: &Device, dtype: DType) -> Self {
        let source = Source::Init {
            origin: origin.into(),
            make,
        };
        Self::new(source, device, dtype, true)
    }

    /// Weights read from `source`, for inference until `trainable` or `with_lora`.
    fn new(source: Source, device: &Device, dtype: DType, dequantize: bool) -> Self {
        Self {
            source,
            device: device.clone(),
            dtype,
            dequantize,
            quantize: None,
            matmul_precision: Default::default(),
            shared: Default::default(),
            parameters: None,
            lora: None,
            base_prefix: None,
        }
    }

    /// Declares that `self_attn.{q,k}_proj.weight` are stored permuted as llama.cpp's
    /// converter writes Llama models (`num_heads` / `num_kv_heads` heads); they are put back
    /// in the checkpoint's order when read.
    pub fn with_permuted_qk(mut self, num_heads: usize, num_kv_heads: usize) -> Self {
        if let Source::Gguf { permuted_qk, .. } = &mut self.source {
            *permuted_qk = Some((num_heads, num_kv_heads));
        }
        self
    }

    /// Quantizes every matrix `quant_matrix` is asked for (linear layers, embeddings, the
    /// output head) to `dtype` as it loads, so a safetensors checkpoint runs on the same
    /// kernels as a GGUF file of that type. Only for safetensors weights on the CPU.
    pub fn with_quantize(mut self, dtype: GgmlDType) -> Result<Self> {
        let refuse = |msg: String| {
            Err(NnError::InvalidArgument {
                param: "quantize",
                msg,
            })
        };
        if self.is_gguf() {
            return refuse(format!(
                "{} is a GGUF file, already quantized (requantize it with `ferro quantize`)",
                self.path().display()
            ));
        }
        if !self.device.is_cpu() {
            return refuse(format!(
                "quantizing at load runs on the CPU kernels only, not on {:?}",
                self.device.location()
            ));
        }
        self.quantize = Some(dtype);
        Ok(self)
    }

    /// Linear layers loaded from here run their dense products at `precision`.
    pub fn with_matmul_precision(mut self, precision: crate::linear::MatmulPrecision) -> Self {
        self.matmul_precision = precision;
        self
    }

    /// Whether the weights come from a GGUF (llama.cpp conventions, e.g. Gemma's norms).
    pub fn is_gguf(&self) -> bool {
        matches!(self.source, Source::Gguf { .. })
    }

    /// The checkpoint file (the first shard), for messages.
    pub fn path(&self) -> PathBuf {
        match &self.source {
            Source::Safetensors { files, .. } => files.first().cloned().unwrap_or_default(),
            Source::Gguf { header, .. } => header.path.clone(),
            Source::Init { origin, .. } => origin.clone(),
        }
    }

    /// Reads a bare base model's weights under the names its task model gives them
    /// (`{prefix}.encoder...` for the stored `encoder...`), so that parameters and LoRA
    /// modules are named as transformers and PEFT name them.
    pub fn with_base_prefix(mut self, prefix: &str) -> Self {
        self.base_prefix = Some(format!("{prefix}."));
        self
    }

    /// The stored name of `name` (without the base prefix when the file has it so).
    fn stored_name<'a>(&self, name: &'a str) -> &'a str {
        if let (Some(p), Source::Safetensors { tensors, .. }) = (&self.base_prefix, &self.source) {
            if let Some(rest) = name.strip_prefix(p.as_str()) {
                if tensors.get(name).is_err() {
                    return rest;
                }
            }
        }
        name
    }

    /// Whether the checkpoint has `name`.
    pub fn contains(&self, name: &str) -> bool {
        match &self.source {
            Source::Safetensors { tensors, .. } => tensors.get(self.stored_name(name)).is_ok(),
            Source::Gguf {
                index, name_map, ..
            } => name_map(name).is_some_and(|g| index.contains_key(&g)),
            // Nothing is stored: the loaders read what the config says exists.
            Source::Init { .. } => false,
        }
    }

    fn missing(&self, name: &str) -> NnError {
        let hint = match &self.source {
            Source::Gguf { name_map, .. } => match name_map(name) {
                Some(g) => format!(" (GGUF name `{g}`)"),
                None => " (no GGUF name is known for it)".into(),
            },
            Source::Safetensors { .. } | Source::Init { .. } => String::new(),
        };
        NnError::MissingTensor {
            file: self.path(),
            name: name.into(),
            hint,
        }
    }

    fn check_shape(&self, name: &str, got: &[usize], expected: &[usize]) -> Result<()> {
        if got == expected {
            Ok(())
        } else {
            Err(NnError::ShapeMismatch {
                file: self.path(),
                name: name.into(),
                expected: expected.to_vec(),
                got: got.to_vec(),
            })
        }
    }

    /// A dense tensor of the given shape, in `self.dtype` (quantized data is dequantized);
    /// when loading for training, the parameter `Var` of that name.
    /// With LoRA, only the tensors of modules to save are parameters (under PEFT's names,
    /// starting from the adapter file's values when there is one); the rest is frozen.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.parameter(name, shape, None)
    }

    /// A tensor the checkpoint does not have (a new classification head), starting from
    /// `init`: a parameter as `tensor` would make it (with LoRA: trainable under PEFT's name
    /// when its module is to be saved, and then read from the adapter file when there is
    /// one; frozen otherwise).
    pub fn new_tensor(&self, name: &str, init: &Tensor) -> Result<Tensor> {
        self.parameter(name, init.dims(), Some(init))
    }

    /// `tensor` and `new_tensor`: the stored value, or `init` for a new one.
    fn parameter(&self, name: &str, shape: &[usize], init: Option<&Tensor>) -> Result<Tensor> {
        let stored = || -> Result<Tensor> {
            match init {
                Some(t) => Ok(t.clone()),
                None => self.stored_tensor(name, shape),
            }
        };
        if let Some(lora) = &self.lora {
            lora.note_read(name);
            return match lora.module_to_save(name, shape)? {
                Some((param, value)) => {
                    let t = match value {
                        Some(v) => v,
                        None => stored()?,
                    };
                    self.parameters().var(&param, &t.to_dtype(self.dtype)?)
                }
                None => Ok(stored()?.to_dtype(self.dtype)?),
            };
        }
        let t = stored()?.to_dtype(self.dtype)?;
        match &self.parameters {
            Some(p) => p.var(name, &t),
            None => Ok(t),
        }
    }

    /// Loads for training from here on: every dense tensor read becomes a trainable
    /// parameter (see `parameters`).
    pub fn trainable(mut self) -> Self {
        self.parameters = Some(Parameters::default());
        self
    }

    /// The trainable parameters read so far (an empty list when not training); the list
    /// is shared and grows as more of the model is read.
    pub fn parameters(&self) -> Parameters {
        self.parameters.clone().unwrap_or_default()
    }

    /// Loads with LoRA adapters from here on (PEFT's `get_peft_model`, or
    /// `PeftModel.from_pretrained` when `spec.adapter` is a folder): every linear layer
    /// whose name matches `target_modules` gets an adapter whose A and B are the trainable
    /// parameters; modules of `modules_to_save` are trainable whole; everything else is
    /// frozen (this replaces `trainable`). Call `finish_lora` once the model is loaded.
    pub fn with_lora(mut self, spec: &LoraSpec) -> Result<Self> {
        let parameters = Parameters::default();
        self.lora = Some(LoraLoad::new(spec, parameters.clone(), &self.device)?);
        self.parameters = Some(parameters);
        Ok(self)
    }

    /// The LoRA config the weights load with (as PEFT resolves it for its task).
    pub fn lora_config(&self) -> Option<&LoraConfig> {
        self.lora.as_ref().map(|l| l.config())
    }

    /// The adapter of linear layer `module`, when loading with LoRA and it is a target.
    pub(crate) fn lora_adapter(
        &self,
        module: &str,
        in_features: usize,
        out_features: usize,
        is_output: bool,
    ) -> Result<Option<LoraAdapter>> {
        match &self.lora {
            Some(l) => l.adapter(module, in_features, out_features, is_output),
            None => Ok(None),
        }
    }

    /// Whether `module` is trained whole (a module to save).
    pub(crate) fn lora_saves(&self, module: &str) -> bool {
        self.lora.as_ref().is_some_and(|l| l.saves(module))
    }

    /// After a model is loaded with LoRA: an error when `target_modules` matched no linear
    /// layer (naming it and some layers that exist), matched something that is not a
    /// linear layer, or when the adapter file has tensors no module took. Nothing to check
    /// without LoRA.
    pub fn finish_lora(&self) -> Result<()> {
        match &self.lora {
            Some(l) => l.finish(),
            None => Ok(()),
        }
    }

    /// A tensor in f32, whatever `self.dtype` (what quantizers start from).
    pub fn tensor_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        Ok(self
            .stored_tensor(name, shape)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1()?)
    }

    /// A tensor in its stored dtype (quantized data dequantized to f32).
    fn stored_tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        Ok(match &self.source {
            Source::Safetensors { tensors, .. } => {
                let stored = self.stored_name(name);
                let view = tensors.get(stored).map_err(|_| self.missing(name))?;
                self.check_shape(name, view.shape(), shape)?;
                tensors.load(stored, &self.device)?
            }
            Source::Gguf { .. } => self.qtensor(name, shape)?.dequantize(&self.device)?,
            Source::Init { make, .. } => {
                let t = make(name, shape, &self.device)?;
                self.check_shape(name, t.dims(), shape)?;
                t
            }
        })
    }

    /// Every tensor's name and shape (outermost first), in the file's order: checkpoint
    /// names for safetensors, the file's own names for a GGUF.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        match &self.source {
            Source::Safetensors { tensors, .. } => {
                let mut all: Vec<(String, Vec<usize>)> = tensors
                    .tensors()
                    .into_iter()
                    .map(|(name, view)| (name, view.shape().to_vec()))
                    .collect();
                all.sort();
                all
            }
            Source::Gguf { header, .. } => header
                .tensors
                .iter()
                .map(|t| {
                    (
                        t.name.clone(),
                        t.dims.iter().rev().map(|&d| d as usize).collect(),
                    )
                })
                .collect(),
            // Nothing is stored: tensors exist once the model reads them.
            Source::Init { .. } => Vec::new(),
        }
    }

    /// The tensor as stored in a GGUF (quantized or not), or `None` for safetensors.
    pub fn quantized(&self, name: &str, shape: &[usize]) -> Result<Option<Arc<QTensor>>> {
        if let Some(l) = &self.lora {
            l.note_read(name);
        }
        match &self.source {
            Source::Safetensors { .. } | Source::Init { .. } => Ok(None),
            Source::Gguf { .. } => Ok(Some(Arc::new(self.qtensor(name, shape)?))),
        }
    }

    /// Where a GGUF tensor is and how to read it.
    fn locate(&self, name: &str, shape: &[usize]) -> Result<Located<'_>> {
        let Source::Gguf {
            file,
            header,
            index,
            name_map,
            permuted_qk,
        } = &self.source
        else {
            return Err(self.missing(name));
        };
        let i = *name_map(name)
            .and_then(|g| index.get(&g))
            .ok_or_else(|| self.missing(name))?;
        let info = &header.tensors[i];
        // GGUF lists dimensions innermost first.
        let dims: Vec<usize> = info.dims.iter().rev().map(|&d| d as usize).collect();
        self.check_shape(name, &dims, shape)?;
        let dtype = ggml_dtype(info.ggml_type).ok_or_else(|| NnError::UnsupportedType {
            file: self.path(),
            name: format!("{name} ({})", info.name),
            ty: format!("ggml type {}", info.ggml_type),
        })?;
        let (start, size) = gguf_extent(header, i)?;
        let heads = permuted_qk.and_then(|(q, k)| {
            if name.ends_with("self_attn.q_proj.weight") {
                Some(q)
            } else if name.ends_with("self_attn.k_proj.weight") {
                Some(k)
            } else {
                None
            }
        });
        Ok(Located {
            file,
            path: &header.path,
            gguf_name: &info.name,
            dims,
            dtype,
            start,
            size,
            heads,
        })
    }

    /// The tensor's bytes in the checkpoint's row order (q/k un-permuted).
    fn read_bytes(&self, at: &Located<'_>) -> Result<Vec<u8>> {
        let mut bytes = vec![0u8; at.size as usize];
        at.file
            .read_exact_at(&mut bytes, at.start)
            .map_err(|e| ferro_core::Error::io(at.path, e))?;
        if let Some(heads) = at.heads {
            let rows = at.dims[0];
            bytes = unpermute_rows(&bytes, rows, heads).ok_or_else(|| NnError::Format {
                file: self.path(),
                msg: format!(
                    "tensor `{}`: {rows} rows do not split into {heads} heads of an even size",
                    at.gguf_name
                ),
            })?;
        }
        Ok(bytes)
    }

    fn qtensor(&self, name: &str, shape: &[usize]) -> Result<QTensor> {
        let at = self.locate(name, shape)?;
        if self.device.is_cpu() && at.heads.is_none() {
            // Read straight into the block storage: no second copy of the largest tensors
            // (the embedding table is ~150 MB) while loading.
            let storage = read_cpu_storage(at.file, at.start, at.size, at.dtype)
                .map_err(|e| ferro_core::Error::io(at.path, e))?;
            return Ok(QTensor::new(QStorage::Cpu(storage), at.dims)?);
        }
        let bytes = self.read_bytes(&at)?;
        Ok(qtensor_from_ggml(at.dtype, &bytes, at.dims, &self.device)?)
    }

    /// A quantized GGUF matrix for our CPU kernels (`QuantMatrix`), shared between the
    /// layers that use the same tensor (tied embeddings). `None` when the weights are not a
    /// GGUF on the CPU, when dequantization was asked for, or when the tensor is not
    /// quantized (f32/f16/bf16).
    pub fn quant_matrix(
        &self,
        name: &str,
        rows: usize,
        cols: usize,
    ) -> Result<Option<Arc<QuantMatrix>>> {
        if let Some(l) = &self.lora {
            l.note_read(name);
        }
        if let Some(dtype) = self.quantize {
            return self.quantize_at_load(name, rows, cols, dtype).map(Some);
        }
        if !self.is_gguf() || !self.device.is_cpu() || self.dequantize {
            return Ok(None);
        }
        let at = self.locate(name, &[rows, cols])?;
        if !QuantMatrix::supports(at.dtype) {
            return Ok(None);
        }
        let key = format!("{}#{rows}x{cols}", at.gguf_name);
        if let Some(m) = self.shared.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(Some(m));
        }
        let bad = |e: std::io::Error| NnError::from(ferro_core::Error::io(at.path, e));
        let matrix = if at.heads.is_some() {
            let bytes = self.read_bytes(&at)?;
            QuantMatrix::from_bytes(at.dtype, rows, cols, &bytes)
        } else {
            QuantMatrix::read(at.dtype, rows, cols, |buf| {
                at.file.read_exact_at(buf, at.start)
            })
            .map_err(bad)?
        };
        let matrix = Arc::new(matrix.ok_or_else(|| NnError::Format {
            file: self.path(),
            msg: format!(
                "tensor `{}`: its bytes do not form {rows} rows of {:?} blocks",
                at.gguf_name, at.dtype
            ),
        })?);
        if let Ok(mut cache) = self.shared.lock() {
            cache.insert(key, matrix.clone());
        }
        Ok(Some(matrix))
    }
}

impl Weights {
    /// A dense matrix quantized as `ferro quantize` stores it (same block type choice, same
    /// quantizer), so `--quantize` and the converted GGUF give the same logits.
    fn quantize_at_load(
        &self,
        name: &str,
        rows: usize,
        cols: usize,
        requested: GgmlDType,
    ) -> Result<Arc<QuantMatrix>> {
        let key = format!("{name}#{rows}x{cols}");
        if let Some(m) = self.shared.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(m);
        }
        let dtype = crate::quant::storage_type(requested, cols, name)?;
        let data = self.tensor_f32(name, &[rows, cols])?;
        let bytes = crate::quant::quantize_f32(&data, cols, dtype, name)?;
        let matrix =
            QuantMatrix::from_bytes(dtype, rows, cols, &bytes).ok_or_else(|| NnError::Format {
                file: self.path(),
                msg: format!("tensor `{name}`: quantized to {dtype:?} but not readable back"),
            })?;
        if dtype != requested {
            tracing::info!(
                tensor = name,
                "rows of {cols} are not whole {requested:?} blocks; quantized to {dtype:?} instead"
            );
        }
        let matrix = Arc::new(matrix);
        if let Ok(mut cache) = self.shared.lock() {
            cache.insert(key, matrix.clone());
        }
        Ok(matrix)
    }
}

/// A GGUF tensor found by `Weights::locate`.
struct Located<'a> {
    file: &'a File,
    path: &'a Path,
    gguf_name: &'a str,
    /// Outermost first.
    dims: Vec<usize>,
    dtype: GgmlDType,
    start: u64,
    size: u64,
    /// Stored permuted for llama.cpp's rotary layout, with this many heads.
    heads: Option<usize>,
}

/// Undoes llama.cpp's `permute(w, n_head)` on the rows of a row-major (quantized or not)
/// matrix: within each head, stored row `2i + j` is the checkpoint's row `j * half + i`.
/// Rows are moved whole, so quantized blocks (which never cross a row) stay valid.
fn unpermute_rows(bytes: &[u8], rows: usize, heads: usize) -> Option<Vec<u8>> {
    move_rows(bytes, rows, heads, false)
}

/// llama.cpp's converter's `permute(w, n_head)` on the rows of a row-major matrix: what
/// `ferro quantize` applies to Llama's q/k weights, and `unpermute_rows` undoes.
pub fn permute_rows<T: Copy + Default>(data: &[T], rows: usize, heads: usize) -> Option<Vec<T>> {
    move_rows(data, rows, heads, true)
}

/// Row `original = h*head_dim + j*half + i` ↔ row `stored = h*head_dim + 2i + j`;
/// `to_stored` picks the direction.
fn move_rows<T: Copy + Default>(
    data: &[T],
    rows: usize,
    heads: usize,
    to_stored: bool,
) -> Option<Vec<T>> {
    if heads == 0
        || !rows.is_multiple_of(heads)
        || !(rows / heads).is_multiple_of(2)
        || !data.len().is_multiple_of(rows)
    {
        return None;
    }
    let (head_dim, row_len) = (rows / heads, data.len() / rows);
    let half = head_dim / 2;
    let mut out = vec![T::default(); data.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let stored = h * head_dim + 2 * i + j;
                let original = h * head_dim + j * half + i;
                let (to, from) = if to_stored {
                    (stored, original)
                } else {
                    (original, stored)
                };
                out[to * row_len..(to + 1) * row_len]
                    .copy_from_slice(&data[from * row_len..(from + 1) * row_len]);
            }
        }
    }
    Some(out)
}

/// Reads `size` bytes at `start` as blocks of `dtype`.
fn read_cpu_storage(
    file: &File,
    start: u64,
    size: u64,
    dtype: GgmlDType,
) -> std::io::Result<Box<dyn QuantizedType>> {
    use candle_core::quantized::k_quants::*;
    Ok(match dtype {
        GgmlDType::F32 => Box::new(read_blocks::<f32>(file, start, size)?),
        GgmlDType::F16 => Box::new(read_blocks::<half::f16>(file, start, size)?),
        GgmlDType::BF16 => Box::new(read_blocks::<half::bf16>(file, start, size)?),
        GgmlDType::Q4_0 => Box::new(read_blocks::<BlockQ4_0>(file, start, size)?),
        GgmlDType::Q4_1 => Box::new(read_blocks::<BlockQ4_1>(file, start, size)?),
        GgmlDType::Q5_0 => Box::new(read_blocks::<BlockQ5_0>(file, start, size)?),
        GgmlDType::Q5_1 => Box::new(read_blocks::<BlockQ5_1>(file, start, size)?),
        GgmlDType::Q8_0 => Box::new(read_blocks::<BlockQ8_0>(file, start, size)?),
        GgmlDType::Q8_1 => Box::new(read_blocks::<BlockQ8_1>(file, start, size)?),
        GgmlDType::Q2K => Box::new(read_blocks::<BlockQ2K>(file, start, size)?),
        GgmlDType::Q3K => Box::new(read_blocks::<BlockQ3K>(file, start, size)?),
        GgmlDType::Q4K => Box::new(read_blocks::<BlockQ4K>(file, start, size)?),
        GgmlDType::Q5K => Box::new(read_blocks::<BlockQ5K>(file, start, size)?),
        GgmlDType::Q6K => Box::new(read_blocks::<BlockQ6K>(file, start, size)?),
        GgmlDType::Q8K => Box::new(read_blocks::<BlockQ8K>(file, start, size)?),
    })
}

/// `size` bytes of the file at `start` as a vector of `T`.
fn read_blocks<T>(file: &File, start: u64, size: u64) -> std::io::Result<Vec<T>> {
    let size = usize::try_from(size).map_err(|_| std::io::Error::other("tensor too large"))?;
    crate::quant::read_blocks(size, |buf| file.read_exact_at(buf, start))
}

/// Absolute start and byte size of tensor `i`, with overflow and type checks.
fn gguf_extent(header: &GgufFile, i: usize) -> Result<(u64, u64)> {
    let t = &header.tensors[i];
    let bad = |msg: String| NnError::Format {
        file: header.path.clone(),
        msg,
    };
    let dtype = ggml_dtype(t.ggml_type).ok_or_else(|| NnError::UnsupportedType {
        file: header.path.clone(),
        name: t.name.clone(),
        ty: format!("ggml type {}", t.ggml_type),
    })?;
    let elems = t
        .dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            bad(format!(
                "tensor `{}` has absurd dimensions {:?}",
                t.name, t.dims
            ))
        })?;
    let block = dtype.block_size() as u64;
    if elems % block != 0 {
        return Err(bad(format!(
            "tensor `{}`: {elems} elements are not a whole number of {block}-element blocks",
            t.name
        )));
    }
    let size = (elems / block)
        .checked_mul(dtype.type_size() as u64)
        .ok_or_else(|| {
            bad(format!(
                "tensor `{}` has absurd dimensions {:?}",
                t.name, t.dims
            ))
        })?;
    let start = header.data_offset.checked_add(t.offset).ok_or_else(|| {
        bad(format!(
            "tensor `{}` has an absurd offset {}",
            t.name, t.offset
        ))
    })?;
    Ok((start, size))
}

/// Checks a safetensors header before mapping: its declared length must fit the file.
fn check_safetensors_header(path: &Path) -> Result<()> {
    let file = File::open(path).map_err(|e| ferro_core::Error::io(path, e))?;
    let len = file
        .metadata()
        .map_err(|e| ferro_core::Error::io(path, e))?
        .len();
    let mut n = [0u8; 8];
    file.read_exact_at(&mut n, 0).map_err(|_| NnError::Format {
        file: path.into(),
        msg: format!("{len} bytes: too short for a safetensors header"),
    })?;
    let header_len = u64::from_le_bytes(n);
    if header_len.saturating_add(8) > len {
        return Err(NnError::Format {
            file: path.into(),
            msg: format!("the header claims {header_len} bytes but the file holds {len} (truncated or not safetensors)"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// llama.cpp's converter: `w.reshape(heads, 2, half, cols).swapaxes(1, 2)`, on row ids.
    fn llama_cpp_permute(rows: usize, heads: usize) -> Vec<usize> {
        let half = rows / heads / 2;
        let mut out = Vec::new();
        for h in 0..heads {
            for i in 0..half {
                for j in 0..2 {
                    out.push(h * 2 * half + j * half + i);
                }
            }
        }
        out
    }

    #[test]
    fn unpermute_undoes_llama_cpp_permute() {
        for (rows, heads, row_bytes) in [(16, 2, 3), (64, 4, 34), (12, 3, 1)] {
            let order = llama_cpp_permute(rows, heads);
            // Stored row r holds the checkpoint's row order[r]; each byte names its row.
            let stored: Vec<u8> = order
                .iter()
                .flat_map(|&r| std::iter::repeat_n(r as u8, row_bytes))
                .collect();
            let back = unpermute_rows(&stored, rows, heads).unwrap();
            let expected: Vec<u8> = (0..rows)
                .flat_map(|r| std::iter::repeat_n(r as u8, row_bytes))
                .collect();
            assert_eq!(back, expected, "rows {rows} heads {heads}");
        }
        assert!(unpermute_rows(&[0; 12], 6, 4).is_none());
        let data: Vec<f32> = (0..64 * 3).map(|x| x as f32).collect();
        let stored = permute_rows(&data, 64, 4).unwrap();
        let expected: Vec<f32> = llama_cpp_permute(64, 4)
            .iter()
            .flat_map(|&r| data[r * 3..r * 3 + 3].to_vec())
            .collect();
        assert_eq!(stored, expected);
        assert!(unpermute_rows(&[0; 9], 3, 1).is_none());
    }
}
