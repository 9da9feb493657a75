//! `ferro quantize`: a safetensors checkpoint (or a GGUF, requantized) written as a GGUF
//! that llama.cpp loads — its metadata keys, its tensor names, its q/k row order for
//! Llama, Gemma's norms stored as `1 + w` — with 2-D weight matrices in the chosen block
//! type and everything else in f32, as `llama-quantize` lays a file out.

use std::path::{Path, PathBuf};

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device};
use ferro_core::{GgufFile, GgufValue, GgufWriter, ModelSource, TensorDecl};
use ferro_nn::quant::{quant_type_name, quantize_f32, storage_type};
use ferro_nn::weights::ggml_type_id;
use ferro_nn::{RopeScaling, Weights};

use crate::auto::{read_causal_lm_config, safetensors_files};
use crate::config::{Architecture, CausalLmConfig};
use crate::error::{ModelError, Result};
use crate::gguf_names::{gemma3_gguf_name, llama_family_gguf_name};

/// What `quantize_to_gguf` writes besides the weights.
#[derive(Debug, Clone)]
pub struct QuantizeOptions {
    /// The block type of weight matrices (`Q8_0`, `Q4K`, `Q5K`, `Q6K`).
    pub dtype: GgmlDType,
    /// More metadata to write (the tokenizer section, from the tokenizers crate); keys
    /// already present are replaced.
    pub extra_metadata: Vec<(String, GgufValue)>,
}

/// What was written.
#[derive(Debug, Clone, Default)]
pub struct QuantizeReport {
    pub tensors: usize,
    /// Matrices stored in another type than asked (rows not whole blocks of it).
    pub fallbacks: Vec<(String, GgmlDType)>,
    pub bytes: u64,
    /// Things the caller should hear about (a checkpoint without a tokenizer, ...).
    pub warnings: Vec<String>,
}

/// One tensor to write: where its f32 values come from and what to do to them.
struct Plan {
    /// The name in the source (checkpoint name, or the GGUF's own).
    source: String,
    gguf: String,
    /// Outermost first.
    shape: Vec<usize>,
    dtype: GgmlDType,
    /// Rotary heads to permute the rows for (Llama's q/k, as llama.cpp's converter does).
    permute_heads: Option<usize>,
    /// Add this to every value (Gemma's norms are stored as `1 + w`).
    shift: f32,
}

/// llama.cpp's `general.file_type` for a file whose matrices are all `dtype`
/// (`LLAMA_FTYPE_MOSTLY_*`; the k-quants' "_S" variants are the uniform ones).
fn file_type(dtype: GgmlDType) -> u32 {
    match dtype {
        GgmlDType::Q8_0 => 7,
        GgmlDType::Q4K => 14,
        GgmlDType::Q5K => 16,
        GgmlDType::Q6K => 18,
        _ => 0,
    }
}

/// Writes `source` (a safetensors checkpoint folder or a GGUF) to `out` as a GGUF with
/// weight matrices in `opts.dtype`.
pub fn quantize_to_gguf(
    source: &ModelSource,
    out: &Path,
    opts: &QuantizeOptions,
) -> Result<QuantizeReport> {
    if !matches!(
        opts.dtype,
        GgmlDType::Q8_0 | GgmlDType::Q4K | GgmlDType::Q5K | GgmlDType::Q6K
    ) {
        return Err(ModelError::InvalidArgument {
            param: "type",
            msg: format!("{:?} is not one of q8_0, q4_k, q5_k, q6_k", opts.dtype),
        });
    }
    let (weights, metadata, plans) = match source.gguf(None)? {
        Some(path) => plan_gguf(&path, opts.dtype)?,
        None => plan_safetensors(source, opts.dtype)?,
    };
    let mut metadata = metadata;
    for (k, v) in &opts.extra_metadata {
        metadata.retain(|(key, _)| key != k);
        metadata.push((k.clone(), v.clone()));
    }
    write(&weights, metadata, &plans, out, opts.dtype)
}

/// The 2-D weights llama-quantize quantizes; norms, biases and vectors stay f32.
fn is_matrix(gguf_name: &str, shape: &[usize]) -> bool {
    shape.len() == 2 && gguf_name.ends_with(".weight") && !gguf_name.ends_with("_norm.weight")
}

fn plan(source: String, gguf: String, shape: Vec<usize>, requested: GgmlDType) -> Result<Plan> {
    let dtype = if is_matrix(&gguf, &shape) {
        storage_type(requested, shape[1], &gguf)?
    } else {
        GgmlDType::F32
    };
    Ok(Plan {
        source,
        gguf,
        shape,
        dtype,
        permute_heads: None,
        shift: 0.0,
    })
}

type Planned = (Weights, Vec<(String, GgufValue)>, Vec<Plan>);

/// Requantizing: every metadata key kept (but the file type), every tensor read back to
/// f32 and written again, in the file's order and row order.
fn plan_gguf(path: &Path, dtype: GgmlDType) -> Result<Planned> {
    let header = GgufFile::open(path)?;
    let mut metadata: Vec<(String, GgufValue)> = header
        .metadata
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "general.file_type" | "general.alignment"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    metadata.push(("general.file_type".into(), GgufValue::U32(file_type(dtype))));
    let plans = header
        .tensors
        .iter()
        .map(|t| {
            let shape = t.dims.iter().rev().map(|&d| d as usize).collect();
            plan(t.name.clone(), t.name.clone(), shape, dtype)
        })
        .collect::<Result<Vec<_>>>()?;
    fn same_name(n: &str) -> Option<String> {
        Some(n.to_string())
    }
    let weights = Weights::from_gguf(header, same_name, &Device::Cpu, DType::F32, true)?;
    Ok((weights, metadata, plans))
}

/// A safetensors checkpoint: llama.cpp's metadata from the config, its names from the
/// name table, Llama's q/k rows permuted, Gemma's norms shifted.
fn plan_safetensors(source: &ModelSource, dtype: GgmlDType) -> Result<Planned> {
    let (config, config_path) = read_causal_lm_config(source, &serde_json::Map::new())?;
    let weights = Weights::from_safetensors(&safetensors_files(source)?, &Device::Cpu, DType::F32)?;
    let metadata = llama_cpp_metadata(&config, &config_path, source, dtype)?;
    let name_map = match config.architecture {
        Architecture::Gemma3 => gemma3_gguf_name,
        _ => llama_family_gguf_name,
    };
    let mut plans = Vec::new();
    for (name, shape) in weights.tensor_shapes() {
        // Buffers transformers sometimes saves, and a tied head llama.cpp does not store.
        if name.ends_with("rotary_emb.inv_freq")
            || (config.tie_word_embeddings && name == "lm_head.weight")
        {
            continue;
        }
        let gguf = name_map(&name).ok_or_else(|| ModelError::Config {
            file: weights.path(),
            msg: format!(
                "tensor `{name}` has no GGUF name (not a {:?} weight)",
                config.architecture
            ),
        })?;
        let mut p = plan(name, gguf, shape, dtype)?;
        if matches!(
            config.architecture,
            Architecture::Llama | Architecture::Mistral
        ) {
            if p.source.ends_with("self_attn.q_proj.weight") {
                p.permute_heads = Some(config.num_attention_heads);
            } else if p.source.ends_with("self_attn.k_proj.weight") {
                p.permute_heads = Some(config.num_key_value_heads);
            }
        }
        if config.architecture == Architecture::Gemma3 && p.source.ends_with("norm.weight") {
            p.shift = 1.0;
        }
        plans.push(p);
    }
    // Layer by layer, as llama.cpp's converter orders them.
    plans.sort_by_key(|p| {
        let layer = p
            .gguf
            .strip_prefix("blk.")
            .and_then(|r| r.split_once('.'))
            .and_then(|(l, _)| l.parse::<usize>().ok());
        (layer.map_or(0, |l| l + 1), p.gguf.clone())
    });
    Ok((weights, metadata, plans))
}

/// llama.cpp's keys for a config (`{arch}.embedding_length`, ...).
fn llama_cpp_metadata(
    c: &CausalLmConfig,
    config_path: &Path,
    source: &ModelSource,
    dtype: GgmlDType,
) -> Result<Vec<(String, GgufValue)>> {
    let arch = match c.architecture {
        // llama.cpp runs Mistral (v0.1-style) as Llama, without the sliding window.
        Architecture::Llama | Architecture::Mistral => "llama",
        Architecture::Qwen2 => "qwen2",
        Architecture::Gemma3 => "gemma3",
    };
    let u = |v: usize| GgufValue::U32(v as u32);
    let f = |v: f64| GgufValue::F32(v as f32);
    let name = source
        .describe()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let mut m: Vec<(String, GgufValue)> = vec![
        (
            "general.architecture".into(),
            GgufValue::String(arch.into()),
        ),
        ("general.name".into(), GgufValue::String(name)),
        ("general.file_type".into(), GgufValue::U32(file_type(dtype))),
        ("general.quantization_version".into(), GgufValue::U32(2)),
    ];
    let mut k = |key: &str, v: GgufValue| m.push((format!("{arch}.{key}"), v));
    for (key, v) in [
        ("vocab_size", c.vocab_size),
        ("context_length", c.max_position_embeddings),
        ("embedding_length", c.hidden_size),
        ("block_count", c.num_hidden_layers),
        ("feed_forward_length", c.intermediate_size),
        ("attention.head_count", c.num_attention_heads),
        ("attention.head_count_kv", c.num_key_value_heads),
        ("attention.key_length", c.head_dim),
        ("attention.value_length", c.head_dim),
        ("rope.dimension_count", c.head_dim),
    ] {
        k(key, u(v));
    }
    k("rope.freq_base", f(c.rope_theta));
    k("attention.layer_norm_rms_epsilon", f(c.rms_norm_eps));
    match &c.rope_scaling {
        RopeScaling::None => {}
        RopeScaling::Linear { factor } => {
            k("rope.scaling.type", GgufValue::String("linear".into()));
            k("rope.scaling.factor", f(*factor));
        }
        other => {
            return Err(ModelError::Unsupported(format!(
                "{}: writing rope scaling {other:?} to GGUF is not supported yet (llama.cpp keeps Llama 3's as a `rope_freqs` tensor, YaRN as its own keys)",
                config_path.display()
            )))
        }
    }
    if let Some(g) = &c.gemma3 {
        k("attention.sliding_window", u(g.sliding_window));
        // llama.cpp assumes 5 sliding layers then a global one, a 1e4 local rope base and
        // scores scaled by head_dim^-0.5; other values are written for readers that
        // look (ours), under gguf-py's key names.
        k(
            "attention.sliding_window_pattern",
            GgufValue::Array(
                g.sliding_layers
                    .iter()
                    .map(|&b| GgufValue::Bool(b))
                    .collect(),
            ),
        );
        k("rope.freq_base_swa", f(g.rope_local_theta));
        if g.query_pre_attn_scalar != c.head_dim as f64 {
            tracing::warn!(
                "{}: query_pre_attn_scalar {} is not head_dim {}; llama.cpp scales Gemma 3's scores by head_dim^-0.5 (but for its 27B)",
                config_path.display(),
                g.query_pre_attn_scalar,
                c.head_dim
            );
        }
        if let Some(cap) = g.final_logit_softcapping {
            k("final_logit_softcapping", f(cap));
        }
    }
    if let Some(&eos) = c.eos_token_ids.first() {
        m.push(("tokenizer.ggml.eos_token_id".into(), GgufValue::U32(eos)));
    }
    Ok(m)
}

/// Streams the planned tensors into `out` (through a temporary file renamed at the end,
/// so a failure leaves no half-written GGUF behind).
fn write(
    weights: &Weights,
    metadata: Vec<(String, GgufValue)>,
    plans: &[Plan],
    out: &Path,
    requested: GgmlDType,
) -> Result<QuantizeReport> {
    if weights.path() == out {
        return Err(ModelError::InvalidArgument {
            param: "output",
            msg: format!("{} is the input file", out.display()),
        });
    }
    let decls = plans
        .iter()
        .map(|p| TensorDecl {
            name: p.gguf.clone(),
            dims: p.shape.iter().rev().map(|&d| d as u64).collect(),
            ggml_type: ggml_type_id(p.dtype),
        })
        .collect();
    let tmp = PathBuf::from(format!("{}.partial", out.display()));
    let result = (|| -> Result<QuantizeReport> {
        let mut w = GgufWriter::create(&tmp, &metadata, decls)?;
        let mut report = QuantizeReport::default();
        for p in plans {
            let mut data = weights.tensor_f32(&p.source, &p.shape)?;
            if p.shift != 0.0 {
                data.iter_mut().for_each(|x| *x += p.shift);
            }
            if let Some(heads) = p.permute_heads {
                data =
                    ferro_nn::weights::permute_rows(&data, p.shape[0], heads).ok_or_else(|| {
                        ModelError::Config {
                            file: weights.path(),
                            msg: format!(
                            "tensor `{}`: {} rows do not split into {heads} heads of an even size",
                            p.source, p.shape[0]
                        ),
                        }
                    })?;
            }
            let bytes = if p.dtype == GgmlDType::F32 {
                data.iter().flat_map(|x| x.to_le_bytes()).collect()
            } else {
                if p.dtype != requested {
                    tracing::info!(
                        tensor = p.gguf,
                        "rows of {} are not whole {} blocks; stored as {}",
                        p.shape[1],
                        quant_type_name(requested),
                        quant_type_name(p.dtype)
                    );
                    report.fallbacks.push((p.gguf.clone(), p.dtype));
                }
                quantize_f32(&data, p.shape[1], p.dtype, &p.gguf)?
            };
            w.write_tensor(&p.gguf, &bytes)?;
            report.tensors += 1;
            report.bytes += bytes.len() as u64;
        }
        w.finish()?;
        Ok(report)
    })();
    match result {
        Ok(report) => {
            std::fs::rename(&tmp, out).map_err(|e| ferro_core::Error::io(out, e))?;
            Ok(report)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}
