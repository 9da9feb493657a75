//! Gemma 3 (text): the Llama layout with Gemma's changes — embeddings scaled by
//! sqrt(hidden), RMSNorm by (1 + w), q/k norms, norms after attention and after the MLP,
//! GELU-tanh MLP, attention scaled by query_pre_attn_scalar^-0.5, and sliding-window
//! layers with their own rope base between global layers. Reads like modeling_gemma3.py.

use std::sync::Arc;

use candle_core::{DType, Tensor};
use ferro_nn::checkpoint::checkpoint_layer;
use ferro_nn::dropout::DropoutStream;
use ferro_nn::{
    Activation, Attention, AttentionConfig, Caches, Embedding, GatedMlp, KvLayout, Linear, RmsNorm,
    RopeScaling, RotaryEmbedding, Weights,
};

use crate::config::{CausalLmConfig, Gemma3Params};
use crate::error::{ModelError, Result};
use crate::llama::{lm_logits, Logits};

#[derive(Debug, Clone)]
struct Gemma3DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    pre_feedforward_layernorm: RmsNorm,
    mlp: GatedMlp,
    post_feedforward_layernorm: RmsNorm,
    sliding: bool,
}

impl Gemma3DecoderLayer {
    fn load(
        w: &Weights,
        cfg: &CausalLmConfig,
        g: &Gemma3Params,
        i: usize,
        offset: f64,
    ) -> Result<Self> {
        let p = format!("model.layers.{i}");
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        let sliding = g.sliding_layers.get(i).copied().unwrap_or(false);
        let attn = AttentionConfig {
            hidden_size: h,
            num_heads: cfg.num_attention_heads,
            num_kv_heads: cfg.num_key_value_heads,
            head_dim: cfg.head_dim,
            qkv_bias: cfg.attention_bias,
            qk_norm: Some((eps, offset)),
            scale: 1.0 / g.query_pre_attn_scalar.sqrt(),
            sliding_window: sliding.then_some(g.sliding_window),
            dropout: cfg.attention_dropout,
        };
        let norm = |name: &str| RmsNorm::load(w, &format!("{p}.{name}.weight"), h, eps, offset);
        Ok(Self {
            input_layernorm: norm("input_layernorm")?,
            self_attn: Attention::load(w, &format!("{p}.self_attn"), attn)?,
            post_attention_layernorm: norm("post_attention_layernorm")?,
            pre_feedforward_layernorm: norm("pre_feedforward_layernorm")?,
            mlp: GatedMlp::load(
                w,
                &format!("{p}.mlp"),
                h,
                cfg.intermediate_size,
                Activation::GeluTanh,
            )?,
            post_feedforward_layernorm: norm("post_feedforward_layernorm")?,
            sliding,
        })
    }

    fn forward(&self, x: &Tensor, rope: &RotaryEmbedding, kv: &mut KvLayout<'_>) -> Result<Tensor> {
        let h = self
            .self_attn
            .forward(&self.input_layernorm.forward(x)?, rope, kv)?;
        let x = (x + self.post_attention_layernorm.forward(&h)?)?;
        let h = self
            .mlp
            .forward(&self.pre_feedforward_layernorm.forward(&x)?)?;
        Ok((&x + self.post_feedforward_layernorm.forward(&h)?)?)
    }
}

/// `Gemma3ForCausalLM`.
#[derive(Debug, Clone)]
pub struct Gemma3ForCausalLM {
    embed_tokens: Embedding,
    embed_scale: f64,
    layers: Vec<Gemma3DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    rotary_global: RotaryEmbedding,
    rotary_local: RotaryEmbedding,
    final_logit_softcapping: Option<f64>,
    dtype: DType,
    /// Recompute each layer in the backward pass instead of keeping its activations.
    pub(crate) gradient_checkpointing: bool,
    /// The dropout masks' stream, rewound for a recomputed layer.
    dropout: Arc<DropoutStream>,
}

impl Gemma3ForCausalLM {
    pub fn load(w: &Weights, cfg: &CausalLmConfig) -> Result<Self> {
        let g = cfg.gemma3.as_ref().ok_or_else(|| {
            ModelError::Unsupported("a Gemma 3 config without its Gemma 3 fields".into())
        })?;
        let (v, h) = (cfg.vocab_size, cfg.hidden_size);
        // llama.cpp stores Gemma's norm weights with the 1 already added.
        let offset = if w.is_gguf() { 0.0 } else { 1.0 };
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Gemma3DecoderLayer::load(w, cfg, g, i, offset))
            .collect::<Result<Vec<_>>>()?;
        let head = if cfg.tie_word_embeddings {
            "model.embed_tokens"
        } else {
            "lm_head"
        };
        let max = cfg.max_position_embeddings;
        Ok(Self {
            embed_tokens: Embedding::load(w, "model.embed_tokens.weight", v, h)?,
            // transformers multiplies by the scale cast to the weights' dtype.
            embed_scale: f64::from((h as f32).sqrt()),
            layers,
            norm: RmsNorm::load(w, "model.norm.weight", h, cfg.rms_norm_eps, offset)?,
            lm_head: Linear::load_output(w, "lm_head", head, h, v, false)?,
            rotary_global: RotaryEmbedding::new(
                cfg.rope_theta,
                cfg.head_dim,
                max,
                &cfg.rope_scaling,
                &w.device,
            )?,
            rotary_local: RotaryEmbedding::new(
                g.rope_local_theta,
                cfg.head_dim,
                max,
                &RopeScaling::None,
                &w.device,
            )?,
            final_logit_softcapping: g.final_logit_softcapping,
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

    /// `input_ids (b, t)` → f32 logits `(b, t_out, vocab)`; see `LlamaForCausalLM::forward`.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        caches: &mut Caches<'_>,
        which: Logits<'_>,
        training: bool,
    ) -> Result<Tensor> {
        let mut x = (self.embed_tokens.forward(input_ids, self.dtype)? * self.embed_scale)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let rope = if layer.sliding {
                &self.rotary_local
            } else {
                &self.rotary_global
            };
            let mut kv = caches.layer(i)?;
            x = if self.gradient_checkpointing && training {
                let (layer, rope) = (layer.clone(), rope.clone());
                checkpoint_layer(&x, &mut kv, &self.dropout, move |x, kv| {
                    layer.forward(x, &rope, kv)
                })?
            } else {
                layer.forward(&x, rope, &mut kv)?
            };
        }
        let logits = lm_logits(&x, &self.norm, &self.lm_head, caches, which)?;
        Ok(match self.final_logit_softcapping {
            Some(cap) => ((logits / cap)?.tanh()? * cap)?,
            None => logits,
        })
    }
}
