//! `AutoConfig`: config.json (raw serde struct with transformers' defaults, then a validated
//! config with no `Option`s) or GGUF metadata, into one typed config.

use std::path::Path;

use ferro_core::GgufFile;
use ferro_nn::RopeScaling;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{ModelError, Result};

/// The architectures we implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Qwen2,
    Mistral,
    Gemma3,
}

impl Architecture {
    /// From config.json's `model_type`.
    pub fn from_model_type(t: &str) -> Option<Self> {
        Some(match t {
            "llama" => Architecture::Llama,
            "qwen2" => Architecture::Qwen2,
            "mistral" => Architecture::Mistral,
            "gemma3_text" => Architecture::Gemma3,
            _ => return None,
        })
    }
}

/// A decoder-only transformer's configuration, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct CausalLmConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Attention sees at most this many past positions (Mistral; Qwen2 when enabled).
    pub sliding_window: Option<usize>,
    pub attention_bias: bool,
    /// Token ids that end generation, from generation_config.json or the GGUF.
    pub eos_token_ids: Vec<u32>,
    /// Dropout on the attention probabilities while training (transformers'
    /// `attention_dropout`, 0 in every released checkpoint of these families).
    pub attention_dropout: f64,
    /// What only Gemma 3 has.
    pub gemma3: Option<Gemma3Params>,
}

/// Gemma 3's extras: sliding and global layers with their own rope bases.
#[derive(Debug, Clone, PartialEq)]
pub struct Gemma3Params {
    /// Per layer: true for sliding-window attention, false for global attention.
    pub sliding_layers: Vec<bool>,
    pub sliding_window: usize,
    /// Rope base of the sliding layers (the global ones use `rope_theta`).
    pub rope_local_theta: f64,
    /// Scores are scaled by `query_pre_attn_scalar^-0.5`.
    pub query_pre_attn_scalar: f64,
    pub final_logit_softcapping: Option<f64>,
}

impl Gemma3Params {
    /// transformers' default layer pattern: every `pattern`-th layer is global.
    fn default_layers(n: usize, pattern: usize) -> Vec<bool> {
        (0..n).map(|i| (i + 1) % pattern.max(1) != 0).collect()
    }
}

/// config.json as transformers writes it; absent fields take transformers' defaults.
#[derive(Debug, Clone, Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    #[serde(default)]
    architectures: Vec<String>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    rope_parameters: Option<Value>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
    attention_bias: Option<bool>,
    eos_token_id: Option<Value>,
    layer_types: Option<Vec<String>>,
    sliding_window_pattern: Option<usize>,
    rope_local_base_freq: Option<f64>,
    query_pre_attn_scalar: Option<f64>,
    final_logit_softcapping: Option<f64>,
    attention_dropout: Option<f64>,
}

/// transformers' `from_pretrained(..., **kwargs)` on a config: each override replaces the
/// field of its name in `json` (config.json of `path`, named in errors).
pub fn apply_config_overrides(
    json: &mut Value,
    overrides: &serde_json::Map<String, Value>,
    path: &Path,
) -> Result<()> {
    if overrides.is_empty() {
        return Ok(());
    }
    let Some(obj) = json.as_object_mut() else {
        return Err(ModelError::Config {
            file: path.into(),
            msg: "not a JSON object, so config_overrides cannot apply".into(),
        });
    };
    for (k, v) in overrides {
        obj.insert(k.clone(), v.clone());
    }
    Ok(())
}

fn field<T>(path: &Path, name: &str, v: Option<T>) -> Result<T> {
    v.ok_or_else(|| ModelError::Config {
        file: path.into(),
        msg: format!("missing `{name}`"),
    })
}

fn ids(v: &Option<Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_u64)
            .map(|x| x as u32)
            .collect(),
        _ => Vec::new(),
    }
}

fn positive(path: &Path, name: &str, v: usize) -> Result<usize> {
    if v == 0 || v > 1 << 24 {
        return Err(ModelError::Config {
            file: path.into(),
            msg: format!("`{name}` = {v} is out of range"),
        });
    }
    Ok(v)
}

/// `rope_scaling` (or v5's `rope_parameters`) of config.json.
fn rope_scaling(
    path: &Path,
    v: Option<&Value>,
    max_positions: usize,
) -> Result<(RopeScaling, Option<f64>)> {
    let Some(Value::Object(o)) = v else {
        return Ok((RopeScaling::None, None));
    };
    let theta = o.get("rope_theta").and_then(Value::as_f64);
    let kind = o
        .get("rope_type")
        .or_else(|| o.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |k: &str| -> Result<f64> {
        o.get(k)
            .and_then(Value::as_f64)
            .ok_or_else(|| ModelError::Config {
                file: path.into(),
                msg: format!("rope scaling `{kind}` needs `{k}`"),
            })
    };
    let scaling = match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: num("factor")?,
        },
        "yarn" => RopeScaling::Yarn {
            factor: num("factor")?,
            // transformers standardizes a missing value to max_position_embeddings.
            original_max_position_embeddings: o
                .get("original_max_position_embeddings")
                .and_then(Value::as_u64)
                .map(|v| v as usize)
                .unwrap_or(max_positions),
            beta_fast: o.get("beta_fast").and_then(Value::as_f64).unwrap_or(32.0),
            beta_slow: o.get("beta_slow").and_then(Value::as_f64).unwrap_or(1.0),
            attention_factor: o
                .get("attention_factor")
                .and_then(Value::as_f64)
                .or_else(|| {
                    // DeepSeek-style: the ratio of two log-scaled factors.
                    let factor = o.get("factor").and_then(Value::as_f64)?;
                    let m = o
                        .get("mscale")
                        .and_then(Value::as_f64)
                        .filter(|m| *m != 0.0)?;
                    let all = o
                        .get("mscale_all_dim")
                        .and_then(Value::as_f64)
                        .filter(|m| *m != 0.0)?;
                    let get = |s: f64| {
                        if factor <= 1.0 {
                            1.0
                        } else {
                            0.1 * s * factor.ln() + 1.0
                        }
                    };
                    Some(get(m) / get(all))
                }),
            truncate: o.get("truncate").and_then(Value::as_bool).unwrap_or(true),
        },
        "llama3" => RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")? as usize,
        },
        other => {
            return Err(ModelError::Unsupported(format!(
                "{}: rope scaling type `{other}` is not supported yet",
                path.display()
            )))
        }
    };
    Ok((scaling, theta))
}

impl CausalLmConfig {
    /// Reads config.json; `generation_eos` (from generation_config.json) wins over its eos ids.
    pub fn from_config_json(path: &Path, generation_eos: Vec<u32>) -> Result<Self> {
        Self::from_config_json_with(path, generation_eos, &serde_json::Map::new())
    }

    /// The same with `overrides` set over config.json's fields (`LoadOptions::config_overrides`).
    pub fn from_config_json_with(
        path: &Path,
        generation_eos: Vec<u32>,
        overrides: &serde_json::Map<String, Value>,
    ) -> Result<Self> {
        let bad = |msg: String| ModelError::Config {
            file: path.into(),
            msg,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let mut json: Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        apply_config_overrides(&mut json, overrides, path)?;
        let raw: RawConfig =
            serde_json::from_value(json).map_err(|e| bad(format!("invalid: {e}")))?;
        let model_type = field(path, "model_type", raw.model_type.clone())?;
        let architecture = Architecture::from_model_type(&model_type).ok_or_else(|| {
            ModelError::Unsupported(format!(
                "{}: architecture `{model_type}` ({}) is not supported (supported: llama, qwen2, mistral, gemma3_text)",
                path.display(),
                raw.architectures.join(", ")
            ))
        })?;
        let hidden = positive(
            path,
            "hidden_size",
            field(path, "hidden_size", raw.hidden_size)?,
        )?;
        let heads = positive(
            path,
            "num_attention_heads",
            field(path, "num_attention_heads", raw.num_attention_heads)?,
        )?;
        let kv_heads = positive(
            path,
            "num_key_value_heads",
            raw.num_key_value_heads.unwrap_or(heads),
        )?;
        // Gemma 3 keeps one rope_parameters entry per layer type.
        let per_type = |t: &str| raw.rope_parameters.as_ref().and_then(|p| p.get(t));
        let global_rope = per_type("full_attention")
            .or(raw.rope_scaling.as_ref())
            .or(raw.rope_parameters.as_ref());
        let (rope_scaling, rope_theta) = rope_scaling(
            path,
            global_rope,
            raw.max_position_embeddings.unwrap_or(2048),
        )?;
        let sliding_window = match architecture {
            Architecture::Mistral => raw.sliding_window,
            Architecture::Qwen2 if raw.use_sliding_window == Some(true) => raw.sliding_window,
            _ => None,
        };
        let eos = if generation_eos.is_empty() {
            ids(&raw.eos_token_id)
        } else {
            generation_eos
        };
        let cfg = Self {
            architecture,
            vocab_size: positive(
                path,
                "vocab_size",
                field(path, "vocab_size", raw.vocab_size)?,
            )?,
            hidden_size: hidden,
            intermediate_size: positive(
                path,
                "intermediate_size",
                field(path, "intermediate_size", raw.intermediate_size)?,
            )?,
            num_hidden_layers: positive(
                path,
                "num_hidden_layers",
                field(path, "num_hidden_layers", raw.num_hidden_layers)?,
            )?,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim: positive(path, "head_dim", raw.head_dim.unwrap_or(hidden / heads))?,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta: raw.rope_theta.or(rope_theta).unwrap_or(10000.0),
            rope_scaling,
            max_position_embeddings: positive(
                path,
                "max_position_embeddings",
                raw.max_position_embeddings.unwrap_or(2048),
            )?,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            sliding_window,
            attention_bias: raw
                .attention_bias
                .unwrap_or(architecture == Architecture::Qwen2),
            eos_token_ids: eos,
            attention_dropout: raw.attention_dropout.unwrap_or(0.0),
            gemma3: None,
        };
        let cfg = if architecture == Architecture::Gemma3 {
            let n = cfg.num_hidden_layers;
            let sliding_layers = match &raw.layer_types {
                Some(types) => types.iter().map(|t| t == "sliding_attention").collect(),
                None => Gemma3Params::default_layers(n, raw.sliding_window_pattern.unwrap_or(6)),
            };
            let local_theta = per_type("sliding_attention")
                .and_then(|p| p.get("rope_theta"))
                .and_then(Value::as_f64)
                .or(raw.rope_local_base_freq)
                .unwrap_or(10_000.0);
            Self {
                rope_theta: raw.rope_theta.or(rope_theta).unwrap_or(1_000_000.0),
                gemma3: Some(Gemma3Params {
                    sliding_layers,
                    sliding_window: raw.sliding_window.unwrap_or(4096),
                    rope_local_theta: local_theta,
                    query_pre_attn_scalar: raw.query_pre_attn_scalar.unwrap_or(256.0),
                    final_logit_softcapping: raw.final_logit_softcapping,
                }),
                tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(true),
                sliding_window: None,
                ..cfg
            }
        } else {
            cfg
        };
        cfg.validate(path)
    }

    /// The same config from GGUF metadata (`{arch}.embedding_length`, ...).
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let path = g.path.as_path();
        let arch = g.architecture()?.unwrap_or_default().to_string();
        let architecture = match arch.as_str() {
            "llama" => Architecture::Llama,
            "qwen2" => Architecture::Qwen2,
            "gemma3" => Architecture::Gemma3,
            other => {
                return Err(ModelError::Unsupported(format!(
                "{}: GGUF architecture `{other}` is not supported yet (supported: qwen2, gemma3)",
                path.display()
            )))
            }
        };
        let int = |key: &str| -> Result<Option<usize>> {
            Ok(g.get_i64(&format!("{arch}.{key}"))?
                .map(|v| usize::try_from(v).unwrap_or(0)))
        };
        let req = |key: &str| -> Result<usize> {
            let v = int(key)?.ok_or_else(|| ModelError::Config {
                file: path.into(),
                msg: format!("missing `{arch}.{key}`"),
            })?;
            positive(path, key, v)
        };
        let hidden = req("embedding_length")?;
        let heads = req("attention.head_count")?;
        let vocab = match int("vocab_size")? {
            Some(v) => v,
            None => g.array_len("tokenizer.ggml.tokens").unwrap_or(0),
        };
        let eos = g
            .get_i64("tokenizer.ggml.eos_token_id")?
            .map(|v| v as u32)
            .into_iter()
            .collect();
        let scaling = match g.get_str(&format!("{arch}.rope.scaling.type"))? {
            None | Some("none") => RopeScaling::None,
            Some("linear") => RopeScaling::Linear {
                factor: g
                    .get_f64(&format!("{arch}.rope.scaling.factor"))?
                    .unwrap_or(1.0),
            },
            Some(other) => {
                return Err(ModelError::Unsupported(format!(
                    "{}: rope scaling `{other}`",
                    path.display()
                )))
            }
        };
        let cfg = Self {
            architecture,
            vocab_size: positive(path, "vocab_size", vocab)?,
            hidden_size: hidden,
            intermediate_size: req("feed_forward_length")?,
            num_hidden_layers: req("block_count")?,
            num_attention_heads: heads,
            num_key_value_heads: int("attention.head_count_kv")?.unwrap_or(heads),
            head_dim: int("attention.key_length")?.unwrap_or(hidden / heads),
            rms_norm_eps: g
                .get_f64(&format!("{arch}.attention.layer_norm_rms_epsilon"))?
                .unwrap_or(1e-6),
            rope_theta: g
                .get_f64(&format!("{arch}.rope.freq_base"))?
                .unwrap_or(10000.0),
            rope_scaling: scaling,
            max_position_embeddings: int("context_length")?.unwrap_or(2048),
            // A GGUF without a separate output head ties it to the embeddings.
            tie_word_embeddings: !g.tensors.iter().any(|t| t.name == "output.weight"),
            sliding_window: None,
            attention_bias: architecture == Architecture::Qwen2,
            eos_token_ids: eos,
            attention_dropout: 0.0,
            gemma3: None,
        };
        let cfg = if architecture == Architecture::Gemma3 {
            // transformers' GGUF mapping sets these; the rest are Gemma3TextConfig's defaults.
            let sliding_window = int("attention.sliding_window")?.unwrap_or(4096);
            // gguf-py's per-layer pattern and local rope base when a file has them (ours
            // do); else llama.cpp's fixed ones.
            let pattern_key = format!("{arch}.attention.sliding_window_pattern");
            let sliding_layers = match g.get(&pattern_key) {
                Some(v) => v
                    .as_array()
                    .and_then(|a| a.iter().map(|b| b.as_bool()).collect::<Option<Vec<_>>>())
                    .filter(|a| a.len() == cfg.num_hidden_layers)
                    .ok_or_else(|| ModelError::Config {
                        file: path.into(),
                        msg: format!("`{pattern_key}` should be one bool per layer"),
                    })?,
                None => Gemma3Params::default_layers(cfg.num_hidden_layers, 6),
            };
            let rope_local_theta = g
                .get_f64(&format!("{arch}.rope.freq_base_swa"))?
                .unwrap_or(10_000.0);
            Self {
                rope_theta: g
                    .get_f64(&format!("{arch}.rope.freq_base"))?
                    .unwrap_or(1_000_000.0),
                eos_token_ids: if cfg.eos_token_ids.is_empty() {
                    vec![1]
                } else {
                    cfg.eos_token_ids
                },
                gemma3: Some(Gemma3Params {
                    sliding_layers,
                    sliding_window,
                    rope_local_theta,
                    // llama.cpp scales scores by head_dim^-0.5 (256 for the released
                    // models but the 27B).
                    query_pre_attn_scalar: cfg.head_dim as f64,
                    final_logit_softcapping: None,
                }),
                ..cfg
            }
        } else {
            cfg
        };
        cfg.validate(path)
    }

    /// `LoadOptions::config_overrides` on a GGUF's config, which comes from its header
    /// rather than a config.json: only the training-time `attention_dropout` can be set.
    pub fn apply_gguf_overrides(
        &mut self,
        overrides: &serde_json::Map<String, Value>,
        path: &Path,
    ) -> Result<()> {
        for (k, v) in overrides {
            match (k.as_str(), v.as_f64()) {
                ("attention_dropout", Some(p)) => self.attention_dropout = p,
                _ => {
                    return Err(ModelError::Config {
                        file: path.into(),
                        msg: format!(
                            "config_overrides `{k}` = {v}: a GGUF's config comes from its \
                             header; only attention_dropout (a number) can be overridden"
                        ),
                    })
                }
            }
        }
        Ok(())
    }

    fn validate(self, path: &Path) -> Result<Self> {
        let bad = |msg: String| {
            Err(ModelError::Config {
                file: path.into(),
                msg,
            })
        };
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return bad(format!(
                "num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) || self.head_dim == 0 {
            return bad(format!("head_dim {} must be even", self.head_dim));
        }
        if self.rms_norm_eps.is_nan()
            || self.rms_norm_eps <= 0.0
            || self.rope_theta.is_nan()
            || self.rope_theta <= 0.0
        {
            return bad("rms_norm_eps and rope_theta must be positive".into());
        }
        Ok(self)
    }
}
