//! BERT (and the models that are BERT: MiniLM, BGE): an encoder of bidirectional
//! attention layers. Reads like transformers' modeling_bert.py; built from ferro-nn blocks.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use ferro_nn::{bidirectional_attention, Activation, Embedding, LayerNorm, Linear, Weights};
use serde::Deserialize;

use crate::error::{ModelError, Result};

/// config.json of a BERT model, with transformers' defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    #[serde(default = "default_hidden")]
    pub hidden_size: usize,
    #[serde(default = "default_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "default_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "default_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_position_type")]
    pub position_embedding_type: String,
}

fn default_hidden() -> usize {
    768
}
fn default_layers() -> usize {
    12
}
fn default_heads() -> usize {
    12
}
fn default_intermediate() -> usize {
    3072
}
fn default_act() -> String {
    "gelu".into()
}
fn default_positions() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_position_type() -> String {
    "absolute".into()
}

impl BertConfig {
    /// Reads and checks `path` (a config.json).
    pub fn from_file(path: &Path) -> Result<Self> {
        let bad = |msg: String| ModelError::Config {
            file: path.into(),
            msg,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let cfg: Self = serde_json::from_str(&text).map_err(|e| bad(format!("invalid: {e}")))?;
        if cfg.hidden_size == 0
            || cfg.num_attention_heads == 0
            || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads)
        {
            return Err(bad(format!(
                "hidden_size {} is not a positive multiple of num_attention_heads {}",
                cfg.hidden_size, cfg.num_attention_heads
            )));
        }
        if cfg.vocab_size == 0 || cfg.vocab_size > 10_000_000 || cfg.num_hidden_layers > 1000 {
            return Err(bad(format!(
                "vocab_size {} / num_hidden_layers {} out of range",
                cfg.vocab_size, cfg.num_hidden_layers
            )));
        }
        if Activation::from_name(&cfg.hidden_act).is_none() {
            return Err(bad(format!(
                "hidden_act `{}` is not supported",
                cfg.hidden_act
            )));
        }
        if cfg.position_embedding_type != "absolute" {
            return Err(bad(format!(
                "position_embedding_type `{}` is not supported (only absolute)",
                cfg.position_embedding_type
            )));
        }
        Ok(cfg)
    }
}

#[derive(Debug, Clone)]
struct BertEmbeddings {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    token_type_embeddings: Embedding,
    layer_norm: LayerNorm,
}

impl BertEmbeddings {
    fn load(w: &Weights, p: &str, cfg: &BertConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            word_embeddings: Embedding::load(
                w,
                &format!("{p}.word_embeddings.weight"),
                cfg.vocab_size,
                h,
            )?,
            position_embeddings: Embedding::load(
                w,
                &format!("{p}.position_embeddings.weight"),
                cfg.max_position_embeddings,
                h,
            )?,
            token_type_embeddings: Embedding::load(
                w,
                &format!("{p}.token_type_embeddings.weight"),
                cfg.type_vocab_size,
                h,
            )?,
            layer_norm: LayerNorm::load(w, &format!("{p}.LayerNorm"), h, cfg.layer_norm_eps)?,
        })
    }

    fn forward(&self, ids: &Tensor, token_types: &Tensor, dtype: DType) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let positions = Tensor::arange(0u32, t as u32, ids.device())?
            .unsqueeze(0)?
            .broadcast_as((b, t))?
            .contiguous()?;
        let x = ((self.word_embeddings.forward(ids, dtype)?
            + self.token_type_embeddings.forward(token_types, dtype)?)?
            + self.position_embeddings.forward(&positions, dtype)?)?;
        Ok(self.layer_norm.forward(&x)?)
    }
}

#[derive(Debug, Clone)]
struct BertLayer {
    query: Linear,
    key: Linear,
    value: Linear,
    /// attention.output.dense and its LayerNorm.
    attention_output: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
    heads: usize,
    act: Activation,
}

impl BertLayer {
    fn load(w: &Weights, p: &str, cfg: &BertConfig) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let lin = |name: &str, inp, out| Linear::load(w, &format!("{p}.{name}"), inp, out, true);
        let norm = |name: &str| LayerNorm::load(w, &format!("{p}.{name}"), h, cfg.layer_norm_eps);
        Ok(Self {
            query: lin("attention.self.query", h, h)?,
            key: lin("attention.self.key", h, h)?,
            value: lin("attention.self.value", h, h)?,
            attention_output: lin("attention.output.dense", h, h)?,
            attention_norm: norm("attention.output.LayerNorm")?,
            intermediate: lin("intermediate.dense", h, i)?,
            output: lin("output.dense", i, h)?,
            output_norm: norm("output.LayerNorm")?,
            heads: cfg.num_attention_heads,
            act: Activation::from_name(&cfg.hidden_act).unwrap_or(Activation::Gelu),
        })
    }

    fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let d = h / self.heads;
        let heads = |y: Tensor| -> Result<Tensor> {
            Ok(y.reshape((b, t, self.heads, d))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = heads(self.query.forward(x)?)?;
        let k = heads(self.key.forward(x)?)?;
        let v = heads(self.value.forward(x)?)?;
        let attn = bidirectional_attention(&q, &k, &v, mask, 1.0 / (d as f64).sqrt())?;
        let x = self
            .attention_norm
            .forward(&(self.attention_output.forward(&attn)? + x)?)?;
        let y = self
            .output
            .forward(&self.act.apply(&self.intermediate.forward(&x)?)?)?;
        Ok(self.output_norm.forward(&(y + x)?)?)
    }
}

/// `BertModel`: token-level hidden states.
#[derive(Debug, Clone)]
pub struct BertModel {
    embeddings: BertEmbeddings,
    layers: Vec<BertLayer>,
    pub config: BertConfig,
    pub device: Device,
    dtype: DType,
}

impl BertModel {
    /// A BERT checkpoint (folder, or Hub id through `opts.hub`): config.json and its
    /// safetensors weights, bare or inside a task model (`bert.` prefix).
    pub fn from_source(
        source: &ferro_core::ModelSource,
        opts: &crate::LoadOptions,
    ) -> Result<Self> {
        let config = BertConfig::from_file(&source.required_file("config.json")?)?;
        let files = crate::auto::safetensors_files(source)?;
        let w = Weights::from_safetensors(&files, &opts.device, opts.dtype)?;
        let prefix = if w.contains("bert.embeddings.word_embeddings.weight") {
            "bert"
        } else {
            ""
        };
        Self::load(&w, prefix, config)
    }

    /// Loads the encoder; `prefix` is where its weights sit (`""` for a bare `BertModel`,
    /// `"bert"` inside the task models).
    pub fn load(w: &Weights, prefix: &str, config: BertConfig) -> Result<Self> {
        let p = |name: &str| {
            if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}.{name}")
            }
        };
        Ok(Self {
            embeddings: BertEmbeddings::load(w, &p("embeddings"), &config)?,
            layers: (0..config.num_hidden_layers)
                .map(|i| BertLayer::load(w, &p(&format!("encoder.layer.{i}")), &config))
                .collect::<Result<_>>()?,
            device: w.device.clone(),
            dtype: w.dtype,
            config,
        })
    }

    /// `input_ids`, `token_type_ids`, `attention_mask (b, t)` → `last_hidden_state
    /// (b, t, hidden)`; padding positions (mask 0) are seen by no token.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<Tensor> {
        let (_, t) = input_ids.dims2()?;
        if t > self.config.max_position_embeddings {
            return Err(ModelError::InvalidArgument {
                param: "input_ids",
                msg: format!(
                    "{t} tokens; the model takes at most {}",
                    self.config.max_position_embeddings
                ),
            });
        }
        let mut x = self
            .embeddings
            .forward(input_ids, token_type_ids, self.dtype)?;
        for layer in &self.layers {
            x = layer.forward(&x, attention_mask)?;
        }
        Ok(x)
    }
}
