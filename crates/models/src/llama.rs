//! The Llama decoder, and the architectures that are Llama with one change:
//! Qwen2 (QKV biases) and Mistral (sliding-window attention). Reads top to bottom like
//! transformers' modeling_llama.py, built from ferro-nn blocks.

use std::sync::Arc;

use candle_core::{DType, Tensor};
use ferro_nn::checkpoint::checkpoint_layer;
use ferro_nn::dropout::DropoutStream;
use ferro_nn::{
    Activation, Attention, AttentionConfig, Caches, Embedding, GatedMlp, KvLayout, Linear, RmsNorm,
    RotaryEmbedding, Weights,
};

use crate::config::CausalLmConfig;
use crate::error::Result;

#[derive(Debug, Clone)]
struct LlamaDecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: GatedMlp,
}

impl LlamaDecoderLayer {
    fn load(w: &Weights, cfg: &CausalLmConfig, i: usize) -> Result<Self> {
        let p = format!("model.layers.{i}");
        let h = cfg.hidden_size;
        let attn = AttentionConfig {
            hidden_size: h,
            num_heads: cfg.num_attention_heads,
            num_kv_heads: cfg.num_key_value_heads,
            head_dim: cfg.head_dim,
            qkv_bias: cfg.attention_bias, // differs from Llama in Qwen2: QKV biases
            qk_norm: None,
            scale: 1.0 / (cfg.head_dim as f64).sqrt(),
            sliding_window: cfg.sliding_window, // differs from Llama in Mistral: sliding window
            dropout: cfg.attention_dropout,
        };
        Ok(Self {
            input_layernorm: RmsNorm::load(
                w,
                &format!("{p}.input_layernorm.weight"),
                h,
                cfg.rms_norm_eps,
                0.0,
            )?,
            self_attn: Attention::load(w, &format!("{p}.self_attn"), attn)?,
            post_attention_layernorm: RmsNorm::load(
                w,
                &format!("{p}.post_attention_layernorm.weight"),
                h,
                cfg.rms_norm_eps,
                0.0,
            )?,
            mlp: GatedMlp::load(
                w,
                &format!("{p}.mlp"),
                h,
                cfg.intermediate_size,
                Activation::Silu,
            )?,
        })
    }

    fn forward(&self, x: &Tensor, rope: &RotaryEmbedding, kv: &mut KvLayout<'_>) -> Result<Tensor> {
        let residual = x;
        let h = self
            .self_attn
            .forward(&self.input_layernorm.forward(x)?, rope, kv)?;
        let x = (residual + h)?;
        let h = self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&x)?)?;
        Ok((x + h)?)
    }
}

/// `LlamaForCausalLM` (and `Qwen2ForCausalLM`, `MistralForCausalLM`).
#[derive(Debug, Clone)]
pub struct LlamaForCausalLM {
    embed_tokens: Embedding,
    layers: Vec<LlamaDecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    rotary: RotaryEmbedding,
    dtype: DType,
    /// Recompute each layer in the backward pass instead of keeping its activations.
    pub(crate) gradient_checkpointing: bool,
    /// The dropout masks' stream, rewound for a recomputed layer.
    dropout: Arc<DropoutStream>,
}

impl LlamaForCausalLM {
    pub fn load(w: &Weights, cfg: &CausalLmConfig) -> Result<Self> {
        let (v, h) = (cfg.vocab_size, cfg.hidden_size);
        let embed_tokens = Embedding::load(w, "model.embed_tokens.weight", v, h)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| LlamaDecoderLayer::load(w, cfg, i))
            .collect::<Result<Vec<_>>>()?;
        let head = if cfg.tie_word_embeddings {
            "model.embed_tokens"
        } else {
            "lm_head"
        };
        Ok(Self {
            embed_tokens,
            layers,
            norm: RmsNorm::load(w, "model.norm.weight", h, cfg.rms_norm_eps, 0.0)?,
            lm_head: Linear::load_output(w, "lm_head", head, h, v, false)?,
            rotary: RotaryEmbedding::new(
                cfg.rope_theta,
                cfg.head_dim,
                cfg.max_position_embeddings,
                &cfg.rope_scaling,
                &w.device,
            )?,
            dtype: w.dtype,
            gradient_checkpointing: false,
            dropout: w.parameters().dropout_stream(),
        })
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Every linear layer (to merge LoRA adapters into them).
    pub(crate) fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut out: Vec<&mut Linear> = Vec::new();
        for l in &mut self.layers {
            out.extend(l.self_attn.linears_mut());
            out.extend(l.mlp.linears_mut());
        }
        out.push(&mut self.lm_head);
        out
    }

    /// `input_ids (b, t)` → f32 logits of the positions `which` names (see `Logits`).
    /// In `training` mode with gradient checkpointing on, each layer of a forward that
    /// starts from an empty cache keeps only its input for the backward pass (which runs
    /// it again) and leaves the cache empty (`ferro_nn::checkpoint::checkpoint_layer`).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        caches: &mut Caches<'_>,
        which: Logits<'_>,
        training: bool,
    ) -> Result<Tensor> {
        let mut x = self.embed_tokens.forward(input_ids, self.dtype)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let mut kv = caches.layer(i)?;
            x = if self.gradient_checkpointing && training {
                let (layer, rope) = (layer.clone(), self.rotary.clone());
                checkpoint_layer(&x, &mut kv, &self.dropout, move |x, kv| {
                    layer.forward(x, &rope, kv)
                })?
            } else {
                layer.forward(&x, &self.rotary, &mut kv)?
            };
        }
        lm_logits(&x, &self.norm, &self.lm_head, caches, which)
    }
}

/// The positions a forward pass computes logits for.
#[derive(Debug, Clone, Copy)]
pub enum Logits<'a> {
    /// Every position: `(b, t, vocab)`.
    All,
    /// The last position only, all generation needs: `(b, 1, vocab)`; packed sequences
    /// (`b = 1`) give each sequence's last, `(n, 1, vocab)`.
    Last,
    /// The given positions of the flattened `(b · t)`, in order: `(n, vocab)`. A training
    /// loss asks for the positions it scores, so the output head (151,936 columns on Qwen)
    /// runs on those rows alone.
    Rows(&'a [u32]),
}

/// The final norm and output head on the positions `which` names; f32.
pub(crate) fn lm_logits(
    x: &Tensor,
    norm: &RmsNorm,
    lm_head: &Linear,
    caches: &Caches<'_>,
    which: Logits<'_>,
) -> Result<Tensor> {
    let x = match (which, caches) {
        (Logits::All, _) => x.clone(),
        (Logits::Rows(rows), _) => {
            let (b, t, h) = x.dims3()?;
            let rows = Tensor::new(rows, x.device())?;
            x.reshape((b * t, h))?.index_select(&rows, 0)?
        }
        (Logits::Last, Caches::Batch(_)) => {
            let t = x.dim(1)?;
            x.narrow(1, t - 1, 1)?
        }
        (Logits::Last, Caches::Packed { lens, .. }) => {
            let ends: Vec<u32> = lens
                .iter()
                .scan(0usize, |end, &len| {
                    *end += len;
                    Some(*end as u32 - 1)
                })
                .collect();
            let ends = Tensor::new(ends.as_slice(), x.device())?;
            x.squeeze(0)?.index_select(&ends, 0)?.unsqueeze(1)?
        }
    };
    Ok(lm_head.forward(&norm.forward(&x)?)?.to_dtype(DType::F32)?)
}
