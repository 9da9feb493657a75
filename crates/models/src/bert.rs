//! BERT and its family: an encoder of bidirectional attention layers. BERT itself (and the
//! models that are BERT: MiniLM, BGE), RoBERTa / XLM-R (positions counted from the padding
//! index, no token types, their own heads) and DistilBERT (other weight names, no token
//! types or pooler) run the same layers. Reads like transformers' modeling_bert.py,
//! modeling_roberta.py and modeling_distilbert.py; built from ferro-nn blocks.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use ferro_nn::{
    encoder_attention, Activation, Dropout, Embedding, LayerNorm, Linear, MatmulPrecision,
    Parameters, Weights,
};
use serde::Deserialize;

use crate::error::{ModelError, Result};

mod merge;

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
    /// Class names by index (`{"0": "negative", ...}`), for the task heads.
    #[serde(default)]
    pub id2label: std::collections::BTreeMap<String, String>,
    /// `single_label_classification`, `multi_label_classification` or `regression`.
    #[serde(default)]
    pub problem_type: Option<String>,
    /// `bert`, `roberta`, `xlm-roberta`, `distilbert`, ...
    #[serde(default = "default_model_type")]
    pub model_type: String,
    /// RoBERTa counts positions from here (its `padding_idx`).
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// The standard deviation new layers are initialised with.
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
    /// Dropout while training: after the embeddings and each sub-layer's projection
    /// (DistilBERT's `dropout`)...
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    /// ... on the attention probabilities (DistilBERT's `attention_dropout`) ...
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    /// ... and before the classifiers (`hidden_dropout_prob` when unset).
    #[serde(default)]
    pub classifier_dropout: Option<f64>,
    /// DistilBERT's own head dropouts (sequence classification, question answering).
    #[serde(default)]
    pub seq_classif_dropout: Option<f64>,
    #[serde(default)]
    pub qa_dropout: Option<f64>,
    /// config.json as read, which `save_pretrained` writes back with what changed.
    #[serde(skip)]
    pub raw: serde_json::Value,
}

/// Which member of the BERT family a checkpoint is: where its weights sit and how it
/// embeds positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BertFamily {
    Bert,
    /// RoBERTa, XLM-RoBERTa, CamemBERT.
    Roberta,
    DistilBert,
}

impl BertFamily {
    fn from_model_type(model_type: &str) -> Option<Self> {
        Some(match model_type {
            "bert" => Self::Bert,
            "roberta" | "xlm-roberta" | "camembert" => Self::Roberta,
            "distilbert" => Self::DistilBert,
            _ => return None,
        })
    }

    /// Where the encoder's weights sit inside a task checkpoint.
    fn prefix(self) -> &'static str {
        match self {
            Self::Bert => "bert",
            Self::Roberta => "roberta",
            Self::DistilBert => "distilbert",
        }
    }
}

/// DistilBERT's config.json names for BERT's fields.
const DISTILBERT_FIELDS: [(&str, &str); 7] = [
    ("dim", "hidden_size"),
    ("dropout", "hidden_dropout_prob"),
    ("attention_dropout", "attention_probs_dropout_prob"),
    ("n_layers", "num_hidden_layers"),
    ("n_heads", "num_attention_heads"),
    ("hidden_dim", "intermediate_size"),
    ("activation", "hidden_act"),
];

fn default_dropout() -> f64 {
    0.1
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
fn default_initializer_range() -> f64 {
    0.02
}
fn default_model_type() -> String {
    "bert".into()
}

impl BertConfig {
    /// The class names in index order (`LABEL_i` where the config names none).
    pub fn labels(&self) -> Result<Vec<String>> {
        let n = self.id2label.len();
        (0..n)
            .map(|i| {
                self.id2label.get(&i.to_string()).cloned().ok_or_else(|| {
                    ModelError::Unsupported(format!(
                        "id2label has {n} entries but none for index {i}"
                    ))
                })
            })
            .collect()
    }

    /// Which family member this is (checked when the config is read).
    pub fn family(&self) -> BertFamily {
        BertFamily::from_model_type(&self.model_type).unwrap_or(BertFamily::Bert)
    }

    /// The most tokens one input may hold: the position table's size, less the
    /// positions RoBERTa skips (it counts from `pad_token_id + 1`).
    pub fn max_tokens(&self) -> usize {
        match self.family() {
            BertFamily::Roberta => {
                self.max_position_embeddings - (self.pad_token_id.unwrap_or(1) as usize + 1)
            }
            _ => self.max_position_embeddings,
        }
    }

    /// Reads and checks `path` (a config.json).
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_file_with(path, &serde_json::Map::new())
    }

    /// The same with `overrides` set over config.json's fields (`LoadOptions::config_overrides`).
    pub fn from_file_with(
        path: &Path,
        overrides: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self> {
        let bad = |msg: String| ModelError::Config {
            file: path.into(),
            msg,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let mut json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("invalid: {e}")))?;
        crate::config::apply_config_overrides(&mut json, overrides, path)?;
        let raw = json.clone();
        if let Some(obj) = json.as_object_mut() {
            if obj.get("model_type").and_then(|t| t.as_str()) == Some("distilbert") {
                for (theirs, ours) in DISTILBERT_FIELDS {
                    if let Some(v) = obj.remove(theirs) {
                        obj.insert(ours.into(), v);
                    }
                }
                obj.insert("type_vocab_size".into(), 0.into());
            }
        }
        let mut cfg: Self =
            serde_json::from_value(json).map_err(|e| bad(format!("invalid: {e}")))?;
        cfg.raw = raw;
        if BertFamily::from_model_type(&cfg.model_type).is_none() {
            return Err(bad(format!(
                "model_type `{}` is not a BERT-family encoder (bert, roberta, xlm-roberta, \
                 camembert, distilbert)",
                cfg.model_type
            )));
        }
        if cfg.family() == BertFamily::Roberta
            && cfg.max_position_embeddings <= cfg.pad_token_id.unwrap_or(1) as usize + 1
        {
            return Err(bad(format!(
                "max_position_embeddings {} leaves no positions after pad_token_id {:?}",
                cfg.max_position_embeddings, cfg.pad_token_id
            )));
        }
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
    /// DistilBERT has none.
    token_type_embeddings: Option<Embedding>,
    layer_norm: LayerNorm,
    dropout: Dropout,
    /// RoBERTa's positions start after this (its padding index); BERT's at 0.
    roberta_padding: Option<u32>,
}

impl BertEmbeddings {
    fn load(w: &Weights, p: &str, cfg: &BertConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        let token_type_embeddings = if cfg.type_vocab_size > 0 {
            Some(Embedding::load(
                w,
                &format!("{p}.token_type_embeddings.weight"),
                cfg.type_vocab_size,
                h,
            )?)
        } else {
            None
        };
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
            token_type_embeddings,
            layer_norm: LayerNorm::load(w, &format!("{p}.LayerNorm"), h, cfg.layer_norm_eps)?,
            dropout: Dropout::new(
                cfg.hidden_dropout_prob,
                "hidden_dropout_prob",
                &w.parameters(),
            )?,
            roberta_padding: (cfg.family() == BertFamily::Roberta)
                .then(|| cfg.pad_token_id.unwrap_or(1)),
        })
    }

    /// Position ids `(b, t)`: 0.. for BERT; for RoBERTa, padding_idx + 1.. over the
    /// non-padding tokens and padding_idx on padding (transformers'
    /// `create_position_ids_from_input_ids`).
    fn positions(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let Some(pad) = self.roberta_padding else {
            return Ok(Tensor::arange(0u32, t as u32, ids.device())?
                .unsqueeze(0)?
                .broadcast_as((b, t))?
                .contiguous()?);
        };
        let rows: Vec<Vec<u32>> = ids.to_vec2()?;
        let mut pos = Vec::with_capacity(b * t);
        for row in rows {
            let mut seen = 0;
            for id in row {
                if id == pad {
                    pos.push(pad);
                } else {
                    seen += 1;
                    pos.push(pad + seen);
                }
            }
        }
        Ok(Tensor::from_vec(pos, (b, t), ids.device())?)
    }

    fn forward(&self, ids: &Tensor, token_types: &Tensor, dtype: DType) -> Result<Tensor> {
        let mut x = (self.word_embeddings.forward(ids, dtype)?
            + self
                .position_embeddings
                .forward(&self.positions(ids)?, dtype)?)?;
        if let Some(types) = &self.token_type_embeddings {
            x = (x + types.forward(token_types, dtype)?)?;
        }
        Ok(self.dropout.forward(&self.layer_norm.forward(&x)?)?)
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
    attention_dropout: Dropout,
    /// After the attention's output projection (none in DistilBERT) and after the MLP.
    attention_output_dropout: Dropout,
    output_dropout: Dropout,
}

/// Where a layer's weights sit, by family.
struct LayerNames {
    query: &'static str,
    key: &'static str,
    value: &'static str,
    attention_output: &'static str,
    attention_norm: &'static str,
    intermediate: &'static str,
    output: &'static str,
    output_norm: &'static str,
}

const BERT_LAYER: LayerNames = LayerNames {
    query: "attention.self.query",
    key: "attention.self.key",
    value: "attention.self.value",
    attention_output: "attention.output.dense",
    attention_norm: "attention.output.LayerNorm",
    intermediate: "intermediate.dense",
    output: "output.dense",
    output_norm: "output.LayerNorm",
};

const DISTILBERT_LAYER: LayerNames = LayerNames {
    query: "attention.q_lin",
    key: "attention.k_lin",
    value: "attention.v_lin",
    attention_output: "attention.out_lin",
    attention_norm: "sa_layer_norm",
    intermediate: "ffn.lin1",
    output: "ffn.lin2",
    output_norm: "output_layer_norm",
};

impl BertLayer {
    fn load(w: &Weights, p: &str, cfg: &BertConfig) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let names = match cfg.family() {
            BertFamily::DistilBert => &DISTILBERT_LAYER,
            _ => &BERT_LAYER,
        };
        let lin = |name: &str, inp, out| Linear::load(w, &format!("{p}.{name}"), inp, out, true);
        let norm = |name: &str| LayerNorm::load(w, &format!("{p}.{name}"), h, cfg.layer_norm_eps);
        let params = w.parameters();
        let hidden = || Dropout::new(cfg.hidden_dropout_prob, "hidden_dropout_prob", &params);
        Ok(Self {
            attention_dropout: Dropout::new(
                cfg.attention_probs_dropout_prob,
                "attention_probs_dropout_prob",
                &params,
            )?,
            attention_output_dropout: match cfg.family() {
                BertFamily::DistilBert => Dropout::new(0.0, "dropout", &params)?,
                _ => hidden()?,
            },
            output_dropout: hidden()?,
            query: lin(names.query, h, h)?,
            key: lin(names.key, h, h)?,
            value: lin(names.value, h, h)?,
            attention_output: lin(names.attention_output, h, h)?,
            attention_norm: norm(names.attention_norm)?,
            intermediate: lin(names.intermediate, h, i)?,
            output: lin(names.output, i, h)?,
            output_norm: norm(names.output_norm)?,
            heads: cfg.num_attention_heads,
            act: Activation::from_name(&cfg.hidden_act).unwrap_or(Activation::Gelu),
        })
    }

    fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        self.forward_at(x, x, mask)
    }

    /// The layer's output at the positions `queries (b, tq, hidden)` holds (`x`'s first
    /// `tq`), attending over all of `x (b, t, hidden)`. Other positions' outputs are
    /// never computed: a classifier's last layer needs only the first token's.
    fn forward_at(&self, queries: &Tensor, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let q = self.query.forward(queries)?;
        let k = self.key.forward(x)?;
        let v = self.value.forward(x)?;
        let attn = self.attend(&q, &k, &v, mask)?;
        self.after_attention(attn, queries)
    }

    /// The layer on a batch's tokens without its padding (`Packing`): `x (tokens,
    /// hidden)`. Only the attention sees the batch padded.
    fn forward_packed(&self, x: &Tensor, packing: &Packing, mask: &Tensor) -> Result<Tensor> {
        let q = packing.pad(&self.query.forward(x)?)?;
        let k = packing.pad(&self.key.forward(x)?)?;
        let v = packing.pad(&self.value.forward(x)?)?;
        let attn = self.attend(&q, &k, &v, mask)?;
        self.after_attention(packing.pack(&attn)?, x)
    }

    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let d = k.dim(2)? / self.heads;
        let scale = 1.0 / (d as f64).sqrt();
        Ok(encoder_attention(
            q,
            k,
            v,
            self.heads,
            mask,
            scale,
            &self.attention_dropout,
        )?)
    }

    /// The attention's output projection, then the MLP, each with its residual and norm.
    fn after_attention(&self, attn: Tensor, queries: &Tensor) -> Result<Tensor> {
        let hidden = |y: Tensor, residual: &Tensor, layer: &Linear, dropout: &Dropout| {
            Ok::<_, ModelError>(if dropout.is_active() {
                (dropout.forward(&layer.forward(&y)?)? + residual)?
            } else {
                layer.forward_add(&y, residual)?
            })
        };
        let x = hidden(
            attn,
            queries,
            &self.attention_output,
            &self.attention_output_dropout,
        )?;
        let x = self.attention_norm.forward(&x)?;
        let y = self.act.apply(&self.intermediate.forward(&x)?)?;
        let y = hidden(y, &x, &self.output, &self.output_dropout)?;
        Ok(self.output_norm.forward(&y)?)
    }
}

/// Where a right-padded batch's tokens sit, to run the per-token parts of a layer (every
/// linear layer, norm and activation) on its tokens only: a batch of sorted sentences is
/// still ~15 % padding, and sentence-transformers' ~40 %.
struct Packing {
    /// The `tokens` real positions among the `b · t`.
    keep: Tensor,
    /// For each of the `b · t` positions its token's row, and row 0 for padding (which
    /// the attention masks, and `pack` drops).
    spread: Tensor,
    /// For each position its token's row, and `tokens` for padding (a zero row).
    spread_zeroed: Tensor,
    shape: (usize, usize),
}

impl Packing {
    /// `None` unless every mask row is ones then zeros (right padding) and some are zeros.
    fn new(mask: &Tensor) -> Result<Option<Self>> {
        let (b, t) = mask.dims2()?;
        let mut lens = Vec::with_capacity(b);
        for row in mask.to_dtype(DType::U32)?.to_vec2::<u32>()? {
            let len = row.iter().take_while(|&&m| m != 0).count();
            if row[len..].iter().any(|&m| m != 0) {
                return Ok(None);
            }
            lens.push(len);
        }
        let tokens: usize = lens.iter().sum();
        if tokens == b * t || tokens == 0 {
            return Ok(None);
        }
        let mut keep = Vec::with_capacity(tokens);
        let (mut spread, mut spread_zeroed) =
            (Vec::with_capacity(b * t), Vec::with_capacity(b * t));
        for (i, &len) in lens.iter().enumerate() {
            for j in 0..t {
                if j < len {
                    spread.push(keep.len() as u32);
                    spread_zeroed.push(keep.len() as u32);
                    keep.push((i * t + j) as u32);
                } else {
                    spread.push(0);
                    spread_zeroed.push(tokens as u32);
                }
            }
        }
        let dev = mask.device();
        Ok(Some(Self {
            keep: Tensor::new(keep.as_slice(), dev)?,
            spread: Tensor::new(spread.as_slice(), dev)?,
            spread_zeroed: Tensor::new(spread_zeroed.as_slice(), dev)?,
            shape: (b, t),
        }))
    }

    /// `(b, t, h)` → the tokens' rows `(tokens, h)`.
    fn pack(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t) = self.shape;
        Ok(x.reshape((b * t, ()))?.index_select(&self.keep, 0)?)
    }

    /// `(tokens, h)` → `(b, t, h)`, padding holding some token's values.
    fn pad(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t) = self.shape;
        Ok(x.index_select(&self.spread, 0)?.reshape((b, t, ()))?)
    }

    /// `(tokens, h)` → `(b, t, h)`, padding zeros.
    fn pad_zeroed(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t) = self.shape;
        let zero = Tensor::zeros((1, x.dim(1)?), x.dtype(), x.device())?;
        Ok(Tensor::cat(&[x, &zero], 0)?
            .index_select(&self.spread_zeroed, 0)?
            .reshape((b, t, ()))?)
    }
}

/// `BertModel`: token-level hidden states.
#[derive(Debug, Clone)]
pub struct BertModel {
    embeddings: BertEmbeddings,
    layers: Vec<BertLayer>,
    /// `pooler.dense` (tanh of a projection of the first token), when the checkpoint has it.
    pooler: Option<Linear>,
    pub config: BertConfig,
    pub device: Device,
    dtype: DType,
    /// Every trainable parameter of the checkpoint, head included (empty unless loaded
    /// with `LoadOptions::trainable`).
    pub parameters: Parameters,
    /// Where the encoder's weights sat in the checkpoint (`""`: a bare encoder).
    prefix: String,
}

impl BertModel {
    /// A BERT checkpoint (folder, or Hub id through `opts.hub`): config.json and its
    /// safetensors weights, bare or inside a task model (`bert.` prefix).
    pub fn from_source(
        source: &ferro_core::ModelSource,
        opts: &crate::LoadOptions,
    ) -> Result<Self> {
        let (w, config, prefix) = checkpoint(source, opts)?;
        let model = Self::load(&w, prefix, config)?;
        w.finish_lora()?;
        Ok(model)
    }

    /// The pooler's output for each sequence, `(b, hidden)`: tanh(dense(first token)).
    pub fn pool(&self, states: &Tensor) -> Result<Tensor> {
        let Some(dense) = &self.pooler else {
            return Err(ModelError::Unsupported(
                "this checkpoint has no pooler (bert.pooler.dense)".into(),
            ));
        };
        Ok(dense
            .forward(&states.narrow(1, 0, 1)?.squeeze(1)?)?
            .tanh()?)
    }

    /// Loads the encoder; `prefix` is where its weights sit (`""` for a bare `BertModel`,
    /// `"bert"`, `"roberta"` or `"distilbert"` inside the task models).
    pub fn load(w: &Weights, prefix: &str, config: BertConfig) -> Result<Self> {
        let p = |name: &str| {
            if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}.{name}")
            }
        };
        let pooler = if w.contains(&p("pooler.dense.weight")) {
            let h = config.hidden_size;
            Some(Linear::load(w, &p("pooler.dense"), h, h, true)?)
        } else {
            None
        };
        let layers = match config.family() {
            BertFamily::DistilBert => "transformer.layer",
            _ => "encoder.layer",
        };
        Ok(Self {
            pooler,
            embeddings: BertEmbeddings::load(w, &p("embeddings"), &config)?,
            layers: (0..config.num_hidden_layers)
                .map(|i| BertLayer::load(w, &p(&format!("{layers}.{i}")), &config))
                .collect::<Result<_>>()?,
            device: w.device.clone(),
            dtype: w.dtype,
            parameters: w.parameters(),
            prefix: prefix.to_string(),
            config,
        })
    }

    fn check_length(&self, input_ids: &Tensor) -> Result<()> {
        let (_, t) = input_ids.dims2()?;
        if t > self.config.max_tokens() {
            return Err(ModelError::InvalidArgument {
                param: "input_ids",
                msg: format!(
                    "{t} tokens; the model takes at most {}",
                    self.config.max_tokens()
                ),
            });
        }
        Ok(())
    }

    /// `input_ids`, `token_type_ids`, `attention_mask (b, t)` → `last_hidden_state
    /// (b, t, hidden)`; padding positions (mask 0) are seen by no token.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<Tensor> {
        self.states_after(&self.layers, input_ids, token_type_ids, attention_mask)
    }

    /// How the encoder's linear layers run for inference: `High` where
    /// `LoadOptions::matmul_precision` asked for it and it applies (see `MatmulPrecision`).
    pub fn matmul_precision(&self) -> MatmulPrecision {
        match self.layers.first() {
            Some(l) => l.query.matmul_precision(),
            None => MatmulPrecision::Highest,
        }
    }

    /// `forward`'s states at the tokens (mask 1), zeros at the padding, computed without
    /// the padding where it is on the right: each linear layer, norm and activation runs on
    /// the tokens only (`Packing`), the attention on the padded batch. A left-padded batch
    /// runs as `forward` does.
    pub fn forward_unpadded(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<Tensor> {
        let Some(packing) = Packing::new(attention_mask)? else {
            return self.forward(input_ids, token_type_ids, attention_mask);
        };
        self.check_length(input_ids)?;
        let x = self
            .embeddings
            .forward(input_ids, token_type_ids, self.dtype)?;
        let mut x = packing.pack(&x)?;
        for layer in &self.layers {
            x = layer.forward_packed(&x, &packing, attention_mask)?;
        }
        packing.pad_zeroed(&x)
    }

    /// The hidden states after the embeddings and `layers` (the first of the model's).
    fn states_after(
        &self,
        layers: &[BertLayer],
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<Tensor> {
        self.check_length(input_ids)?;
        let mut x = self
            .embeddings
            .forward(input_ids, token_type_ids, self.dtype)?;
        for layer in layers {
            x = layer.forward(&x, attention_mask)?;
        }
        Ok(x)
    }

    /// The last hidden state of the first token only, `(b, 1, hidden)`: what the
    /// classification heads read. The last layer runs its query, output projection and
    /// MLP on that one position (its keys and values still cover every token), the same
    /// values as `forward`'s first position for a sixth less work on MiniLM (and in
    /// training the backward pass too).
    pub fn forward_first_token(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<Tensor> {
        let Some((last, rest)) = self.layers.split_last() else {
            return Ok(self
                .forward(input_ids, token_type_ids, attention_mask)?
                .narrow(1, 0, 1)?);
        };
        let x = self.states_after(rest, input_ids, token_type_ids, attention_mask)?;
        last.forward_at(&x.narrow(1, 0, 1)?, &x, attention_mask)
    }
}

/// A BERT checkpoint's weights and config, and where the encoder's weights sit.
fn checkpoint(
    source: &ferro_core::ModelSource,
    opts: &crate::LoadOptions,
) -> Result<(Weights, BertConfig, &'static str)> {
    let config = BertConfig::from_file_with(
        &source.required_file("config.json")?,
        &opts.config_overrides,
    )?;
    let files = crate::auto::safetensors_files(source)?;
    let mut w = Weights::from_safetensors(&files, &opts.device, opts.dtype)?
        .with_matmul_precision(opts.matmul_precision);
    if let Some(spec) = crate::auto::lora_spec(opts, &config.model_type) {
        w = w.with_lora(&spec)?;
    } else if opts.trainable {
        w = w.trainable();
    }
    let family = config.family().prefix();
    let prefix = if w.contains(&format!("{family}.embeddings.word_embeddings.weight")) {
        family
    } else {
        ""
    };
    Ok((w, config, prefix))
}

/// The encoder of a checkpoint loaded for fine-tuning on `labels` (trainable, the
/// config's labels replaced; a bare encoder is fine).
fn fine_tuning_encoder(
    source: &ferro_core::ModelSource,
    opts: &crate::LoadOptions,
    labels: &[String],
) -> Result<(Weights, BertModel)> {
    if labels.is_empty() {
        return Err(ModelError::InvalidArgument {
            param: "labels",
            msg: "a classifier needs at least one label".into(),
        });
    }
    let opts = crate::LoadOptions {
        trainable: true,
        ..opts.clone()
    };
    let (mut w, mut config, mut prefix) = checkpoint(source, &opts)?;
    if prefix.is_empty() {
        // A bare encoder becomes the task model's `bert` (`roberta`, ...): its parameters
        // and LoRA modules take the names transformers and PEFT give them.
        prefix = config.family().prefix();
        w = w.with_base_prefix(prefix);
    }
    config.id2label = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (i.to_string(), l.clone()))
        .collect();
    let bert = BertModel::load(&w, prefix, config)?;
    Ok((w, bert))
}

/// A head layer of the checkpoint, or a new one (weights normal(0, `std`) from `seed`,
/// bias 0) added to the parameters, as transformers initialises a head it did not find
/// (with LoRA: trained whole when the head is a module to save, as PEFT's SEQ_CLS does).
fn head_layer(
    w: &Weights,
    std: f64,
    name: &str,
    inp: usize,
    out: usize,
    seed: u64,
) -> Result<Linear> {
    let shape = w
        .tensor_shapes()
        .into_iter()
        .find(|(t, _)| *t == format!("{name}.weight"))
        .map(|(_, s)| s);
    match shape {
        Some(s) if s == [out, inp] => Ok(Linear::load(w, name, inp, out, true)?),
        Some(s) => Err(ModelError::Unsupported(format!(
            "the checkpoint's `{name}.weight` is {s:?}, not [{out}, {inp}]: its head was made \
             for other labels"
        ))),
        None => {
            let device = &w.device;
            let weight = ferro_nn::init::normal(&[out, inp], std, seed, device)?;
            let weight = w.new_tensor(&format!("{name}.weight"), &weight)?;
            let bias = w.new_tensor(
                &format!("{name}.bias"),
                &ferro_nn::init::zeros(&[out], device)?,
            )?;
            Ok(Linear::new(
                ferro_nn::LinearWeight::Dense(weight),
                Some(bias),
            )?)
        }
    }
}

/// `save_pretrained` of a task model (`task`: `ForSequenceClassification`, ...):
/// config.json with its architecture and labels, and every parameter under transformers'
/// names (a bare encoder's go under the family prefix, as in a task model).
fn save_task_model(bert: &BertModel, task: &str, dir: &Path) -> Result<()> {
    let family = bert.config.family();
    let base = match family {
        BertFamily::Bert => "Bert",
        BertFamily::Roberta if bert.config.model_type == "xlm-roberta" => "XLMRoberta",
        BertFamily::Roberta => "Roberta",
        BertFamily::DistilBert => "DistilBert",
    };
    let labels = bert.config.labels()?;
    let mut config = bert.config.raw.clone();
    if let Some(obj) = config.as_object_mut() {
        obj.insert(
            "architectures".into(),
            serde_json::json!([format!("{base}{task}")]),
        );
        if !labels.is_empty() {
            let id2label: serde_json::Map<String, serde_json::Value> = labels
                .iter()
                .enumerate()
                .map(|(i, l)| (i.to_string(), l.clone().into()))
                .collect();
            let label2id: serde_json::Map<String, serde_json::Value> = labels
                .iter()
                .enumerate()
                .map(|(i, l)| (l.clone(), i.into()))
                .collect();
            obj.insert("id2label".into(), id2label.into());
            obj.insert("label2id".into(), label2id.into());
        }
        if let Some(p) = &bert.config.problem_type {
            obj.insert("problem_type".into(), p.clone().into());
        }
    }
    let prefix = family.prefix();
    let rename = |name: &str| {
        let head = [
            "classifier.",
            "pre_classifier.",
            "qa_outputs.",
            "cls.",
            "lm_head.",
            "vocab_",
        ]
        .iter()
        .any(|h| name.starts_with(h));
        if bert.prefix.is_empty() && !head {
            format!("{prefix}.{name}")
        } else {
            name.to_string()
        }
    };
    let tensors: Vec<(String, Tensor)> = bert
        .parameters
        .named()
        .into_iter()
        .map(|(name, var)| (rename(&name), var.as_tensor().detach()))
        .collect();
    if tensors.is_empty() {
        return Err(ModelError::InvalidArgument {
            param: "model",
            msg: "loaded for inference: load it with LoadOptions::trainable (or for_fine_tuning) \
                  to save its weights"
                .into(),
        });
    }
    crate::save::save_checkpoint(dir, &config, &tensors)
}

/// What a task head needs: the checkpoint with its encoder under `bert.`, its labels.
fn task_checkpoint(
    source: &ferro_core::ModelSource,
    opts: &crate::LoadOptions,
    head: &str,
) -> Result<(Weights, BertModel)> {
    let (w, config, prefix) = checkpoint(source, opts)?;
    if prefix.is_empty() {
        return Err(ModelError::NoWeights {
            model: source.describe(),
            reason: format!(
                "a bare encoder checkpoint has no {head} head (no `{}.` weights)",
                config.family().prefix()
            ),
        });
    }
    let bert = BertModel::load(&w, prefix, config)?;
    Ok((w, bert))
}

/// The number of labels a classification head was saved with, checked against id2label.
fn num_labels(w: &Weights, name: &str, bert: &BertModel) -> Result<usize> {
    let shapes = w.tensor_shapes();
    let n = shapes
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, s)| s.first().copied())
        .ok_or_else(|| ModelError::NoWeights {
            model: w.path().display().to_string(),
            reason: format!("no `{name}`"),
        })?;
    let labels = bert.config.id2label.len();
    if labels != 0 && labels != n {
        return Err(ModelError::Unsupported(format!(
            "id2label has {labels} labels but `{name}` has {n} rows"
        )));
    }
    Ok(n)
}

/// The dropout before a head, as each family's head draws it: `classifier_dropout`, else
/// `hidden_dropout_prob`; DistilBERT: `seq_classif_dropout` (0.2) before its sequence
/// classifier, `dropout` before its token classifier, `qa_dropout` (0.1) before its span
/// scorer; BERT and RoBERTa have none before question answering.
fn head_dropout(bert: &BertModel, task: &str) -> Result<Dropout> {
    let cfg = &bert.config;
    let distil = cfg.family() == BertFamily::DistilBert;
    let (p, name) = match task {
        "sequence-classification" if distil => (
            cfg.seq_classif_dropout.unwrap_or(0.2),
            "seq_classif_dropout",
        ),
        "token-classification" if distil => (cfg.hidden_dropout_prob, "dropout"),
        "question-answering" if distil => (cfg.qa_dropout.unwrap_or(0.1), "qa_dropout"),
        "question-answering" => (0.0, "qa_dropout"),
        _ => match cfg.classifier_dropout {
            Some(p) => (p, "classifier_dropout"),
            None => (cfg.hidden_dropout_prob, "hidden_dropout_prob"),
        },
    };
    Ok(Dropout::new(p, name, &bert.parameters)?)
}

/// How a family turns the encoder's states into class logits.
#[derive(Debug, Clone)]
enum ClassifierHead {
    /// BERT: the pooler's output through `classifier`.
    Pooled(Linear),
    /// RoBERTa: the first token through `classifier.dense`, tanh, `classifier.out_proj`.
    Roberta { dense: Linear, out_proj: Linear },
    /// DistilBERT: the first token through `pre_classifier`, ReLU, `classifier`.
    DistilBert { pre: Linear, classifier: Linear },
}

/// `BertForSequenceClassification` (and RoBERTa's and DistilBERT's): class logits from
/// the first token.
#[derive(Debug, Clone)]
pub struct BertForSequenceClassification {
    pub bert: BertModel,
    head: ClassifierHead,
    /// Before the head (RoBERTa's: also between its two layers).
    dropout: Dropout,
    num_labels: usize,
}

impl BertForSequenceClassification {
    pub fn from_source(
        source: &ferro_core::ModelSource,
        opts: &crate::LoadOptions,
    ) -> Result<Self> {
        let (w, bert) = task_checkpoint(source, opts, "sequence-classification")?;
        let h = bert.config.hidden_size;
        let (head, num_labels) = match bert.config.family() {
            BertFamily::Bert => {
                let n = num_labels(&w, "classifier.weight", &bert)?;
                (
                    ClassifierHead::Pooled(Linear::load(&w, "classifier", h, n, true)?),
                    n,
                )
            }
            BertFamily::Roberta => {
                let n = num_labels(&w, "classifier.out_proj.weight", &bert)?;
                let head = ClassifierHead::Roberta {
                    dense: Linear::load(&w, "classifier.dense", h, h, true)?,
                    out_proj: Linear::load(&w, "classifier.out_proj", h, n, true)?,
                };
                (head, n)
            }
            BertFamily::DistilBert => {
                let n = num_labels(&w, "classifier.weight", &bert)?;
                let head = ClassifierHead::DistilBert {
                    pre: Linear::load(&w, "pre_classifier", h, h, true)?,
                    classifier: Linear::load(&w, "classifier", h, n, true)?,
                };
                (head, n)
            }
        };
        w.finish_lora()?;
        Ok(Self {
            dropout: head_dropout(&bert, "sequence-classification")?,
            bert,
            head,
            num_labels,
        })
    }

    /// Number of classes the head scores.
    pub fn num_labels(&self) -> usize {
        self.num_labels
    }

    /// For fine-tuning on `labels`: the checkpoint's encoder (a bare one too, such as a
    /// sentence-transformers model) with its classification head when it has one of that
    /// size, else a new head initialised as transformers does (weights normal(0,
    /// initializer_range) drawn from `seed`, biases 0). Every weight is trainable.
    pub fn for_fine_tuning(
        source: &ferro_core::ModelSource,
        opts: &crate::LoadOptions,
        labels: &[String],
        seed: u64,
    ) -> Result<Self> {
        let (w, mut bert) = fine_tuning_encoder(source, opts, labels)?;
        if bert.config.problem_type.is_none() {
            // What transformers records at the first forward with integer labels.
            bert.config.problem_type = Some("single_label_classification".into());
        }
        let (h, n) = (bert.config.hidden_size, labels.len());
        let mut k = seed;
        let mut layer = |name: &str, inp: usize, out: usize| {
            k += 1;
            head_layer(&w, bert.config.initializer_range, name, inp, out, k)
        };
        let head = match bert.config.family() {
            BertFamily::Bert => {
                let classifier = layer("classifier", h, n)?;
                if bert.pooler.is_none() {
                    let name = if bert.prefix.is_empty() {
                        "pooler.dense".to_string()
                    } else {
                        format!("{}.pooler.dense", bert.prefix)
                    };
                    bert.pooler = Some(layer(&name, h, h)?);
                }
                ClassifierHead::Pooled(classifier)
            }
            BertFamily::Roberta => ClassifierHead::Roberta {
                dense: layer("classifier.dense", h, h)?,
                out_proj: layer("classifier.out_proj", h, n)?,
            },
            BertFamily::DistilBert => ClassifierHead::DistilBert {
                pre: layer("pre_classifier", h, h)?,
                classifier: layer("classifier", h, n)?,
            },
        };
        w.finish_lora()?;
        Ok(Self {
            dropout: head_dropout(&bert, "sequence-classification")?,
            bert,
            head,
            num_labels: n,
        })
    }

    /// transformers' `save_pretrained`: config.json (architectures, labels) and
    /// model.safetensors with transformers' weight names, each written whole or not at all.
    pub fn save_pretrained(&self, dir: &Path) -> Result<()> {
        save_task_model(&self.bert, "ForSequenceClassification", dir)
    }

    /// Logits `(b, num_labels)`.
    pub fn forward(&self, ids: &Tensor, types: &Tensor, mask: &Tensor) -> Result<Tensor> {
        // Every head reads the first token only.
        let states = self.bert.forward_first_token(ids, types, mask)?;
        let first = || states.squeeze(1);
        let drop = |x: &Tensor| self.dropout.forward(x);
        let logits = match &self.head {
            ClassifierHead::Pooled(classifier) => {
                classifier.forward(&drop(&self.bert.pool(&states)?)?)?
            }
            ClassifierHead::Roberta { dense, out_proj } => {
                let x = dense.forward(&drop(&first()?)?)?.tanh()?;
                out_proj.forward(&drop(&x)?)?
            }
            ClassifierHead::DistilBert { pre, classifier } => {
                classifier.forward(&drop(&pre.forward(&first()?)?.relu()?)?)?
            }
        };
        Ok(logits.to_dtype(DType::F32)?)
    }
}

/// `BertForTokenClassification`: `classifier` on every token.
#[derive(Debug, Clone)]
pub struct BertForTokenClassification {
    pub bert: BertModel,
    classifier: Linear,
    dropout: Dropout,
}

impl BertForTokenClassification {
    pub fn from_source(
        source: &ferro_core::ModelSource,
        opts: &crate::LoadOptions,
    ) -> Result<Self> {
        let (w, bert) = task_checkpoint(source, opts, "token-classification")?;
        let n = num_labels(&w, "classifier.weight", &bert)?;
        let classifier = Linear::load(&w, "classifier", bert.config.hidden_size, n, true)?;
        w.finish_lora()?;
        Ok(Self {
            dropout: head_dropout(&bert, "token-classification")?,
            bert,
            classifier,
        })
    }

    /// For fine-tuning on `labels` (BIO tags, ...): the checkpoint's encoder with its
    /// token classifier when it has one of that size, else a new one (see
    /// `BertForSequenceClassification::for_fine_tuning`).
    pub fn for_fine_tuning(
        source: &ferro_core::ModelSource,
        opts: &crate::LoadOptions,
        labels: &[String],
        seed: u64,
    ) -> Result<Self> {
        let (w, bert) = fine_tuning_encoder(source, opts, labels)?;
        let (h, n) = (bert.config.hidden_size, labels.len());
        let classifier = head_layer(
            &w,
            bert.config.initializer_range,
            "classifier",
            h,
            n,
            seed + 1,
        )?;
        w.finish_lora()?;
        Ok(Self {
            dropout: head_dropout(&bert, "token-classification")?,
            bert,
            classifier,
        })
    }

    /// transformers' `save_pretrained` (config.json and model.safetensors).
    pub fn save_pretrained(&self, dir: &Path) -> Result<()> {
        save_task_model(&self.bert, "ForTokenClassification", dir)
    }

    /// Logits `(b, t, num_labels)`.
    pub fn forward(&self, ids: &Tensor, types: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let states = self
            .dropout
            .forward(&self.bert.forward(ids, types, mask)?)?;
        Ok(self.classifier.forward(&states)?.to_dtype(DType::F32)?)
    }
}

/// `BertForQuestionAnswering`: start and end logits from `qa_outputs`.
#[derive(Debug, Clone)]
pub struct BertForQuestionAnswering {
    pub bert: BertModel,
    qa_outputs: Linear,
    dropout: Dropout,
}

impl BertForQuestionAnswering {
    pub fn from_source(
        source: &ferro_core::ModelSource,
        opts: &crate::LoadOptions,
    ) -> Result<Self> {
        let (w, bert) = task_checkpoint(source, opts, "question-answering")?;
        let qa_outputs = Linear::load(&w, "qa_outputs", bert.config.hidden_size, 2, true)?;
        w.finish_lora()?;
        Ok(Self {
            dropout: head_dropout(&bert, "question-answering")?,
            bert,
            qa_outputs,
        })
    }

    /// Start and end logits, each `(b, t)`.
    pub fn forward(&self, ids: &Tensor, types: &Tensor, mask: &Tensor) -> Result<(Tensor, Tensor)> {
        let states = self
            .dropout
            .forward(&self.bert.forward(ids, types, mask)?)?;
        let logits = self.qa_outputs.forward(&states)?.to_dtype(DType::F32)?;
        Ok((
            logits.narrow(2, 0, 1)?.squeeze(2)?,
            logits.narrow(2, 1, 1)?.squeeze(2)?,
        ))
    }
}

/// `BertForMaskedLM` (and RoBERTa's and DistilBERT's): a transform (dense, activation,
/// LayerNorm), then the decoder tied to the word embeddings, plus a bias.
#[derive(Debug, Clone)]
pub struct BertForMaskedLM {
    pub bert: BertModel,
    transform: Linear,
    transform_norm: LayerNorm,
    decoder: Linear,
    bias: Tensor,
    act: Activation,
}

/// Where a family keeps its masked-LM head: transform, its norm, decoder, bias (or the
/// decoder's own bias).
const MLM_HEADS: [(BertFamily, [&str; 5]); 3] = [
    (
        BertFamily::Bert,
        [
            "cls.predictions.transform.dense",
            "cls.predictions.transform.LayerNorm",
            "cls.predictions.decoder",
            "cls.predictions.bias",
            "cls.predictions.decoder.bias",
        ],
    ),
    (
        BertFamily::Roberta,
        [
            "lm_head.dense",
            "lm_head.layer_norm",
            "lm_head.decoder",
            "lm_head.bias",
            "lm_head.decoder.bias",
        ],
    ),
    (
        BertFamily::DistilBert,
        [
            "vocab_transform",
            "vocab_layer_norm",
            "vocab_projector",
            "vocab_projector.bias",
            "vocab_projector.bias",
        ],
    ),
];

impl BertForMaskedLM {
    pub fn from_source(
        source: &ferro_core::ModelSource,
        opts: &crate::LoadOptions,
    ) -> Result<Self> {
        let (w, bert) = task_checkpoint(source, opts, "masked-LM")?;
        let cfg = &bert.config;
        let (h, v) = (cfg.hidden_size, cfg.vocab_size);
        let family = cfg.family();
        let [transform, norm, decoder, bias, decoder_bias] = MLM_HEADS
            .iter()
            .find(|(f, _)| *f == family)
            .map(|(_, names)| *names)
            .unwrap_or(MLM_HEADS[0].1);
        let tied = format!("{}.embeddings.word_embeddings", family.prefix());
        let decoder_weights = if w.contains(&format!("{decoder}.weight")) {
            decoder.to_string()
        } else {
            tied // tied, as transformers ties them
        };
        let bias = if w.contains(bias) { bias } else { decoder_bias };
        // RoBERTa's head always uses GELU; BERT's and DistilBERT's the config's activation.
        let act = match family {
            BertFamily::Roberta => Activation::Gelu,
            _ => Activation::from_name(&cfg.hidden_act).unwrap_or(Activation::Gelu),
        };
        let model = Self {
            transform: Linear::load(&w, transform, h, h, true)?,
            transform_norm: LayerNorm::load(&w, norm, h, cfg.layer_norm_eps)?,
            decoder: Linear::load_output(&w, decoder, &decoder_weights, h, v, false)?,
            bias: w.tensor(bias, &[v])?.to_dtype(DType::F32)?,
            act,
            bert,
        };
        w.finish_lora()?;
        Ok(model)
    }

    /// transformers' `save_pretrained` (config.json and model.safetensors; the decoder tied
    /// to the word embeddings is stored once, as transformers stores it).
    pub fn save_pretrained(&self, dir: &Path) -> Result<()> {
        save_task_model(&self.bert, "ForMaskedLM", dir)
    }

    /// Logits over the vocabulary, `(b, t, vocab)`.
    pub fn forward(&self, ids: &Tensor, types: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let states = self.bert.forward(ids, types, mask)?;
        let x = self
            .transform_norm
            .forward(&self.act.apply(&self.transform.forward(&states)?)?)?;
        Ok(self
            .decoder
            .forward(&x)?
            .to_dtype(DType::F32)?
            .broadcast_add(&self.bias)?)
    }
}
