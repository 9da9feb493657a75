//! The gated MLP of Llama-family models: `down(act(gate(x)) * up(x))`.

use candle_core::{DType, Tensor};

use crate::error::Result;
use crate::linear::Linear;
use crate::weights::Weights;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// SiLU (Llama, Qwen, Mistral).
    Silu,
    /// GELU, tanh approximation (Gemma's `gelu_pytorch_tanh`).
    GeluTanh,
    /// GELU with the exact erf (BERT's `gelu`).
    Gelu,
}

impl Activation {
    /// transformers' `hidden_act` name.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "silu" | "swish" => Activation::Silu,
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Activation::GeluTanh,
            "gelu" => Activation::Gelu,
            _ => return None,
        })
    }

    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Silu => candle_nn::ops::silu(x)?,
            Activation::GeluTanh => x.gelu()?,
            Activation::Gelu if x.device().is_cpu() && x.dtype() == DType::F32 => {
                x.contiguous()?.apply_op1(crate::gelu_cpu::GeluErf)?
            }
            Activation::Gelu => x.gelu_erf()?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct GatedMlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
    act: Activation,
}

impl GatedMlp {
    pub fn load(
        w: &Weights,
        prefix: &str,
        hidden: usize,
        intermediate: usize,
        act: Activation,
    ) -> Result<Self> {
        Ok(Self {
            gate_proj: Linear::load(
                w,
                &format!("{prefix}.gate_proj"),
                hidden,
                intermediate,
                false,
            )?,
            up_proj: Linear::load(w, &format!("{prefix}.up_proj"), hidden, intermediate, false)?,
            down_proj: Linear::load(
                w,
                &format!("{prefix}.down_proj"),
                intermediate,
                hidden,
                false,
            )?,
            act,
        })
    }

    /// The gate, up and down projections (to merge LoRA adapters into them).
    pub fn linears_mut(&mut self) -> [&mut Linear; 3] {
        [&mut self.gate_proj, &mut self.up_proj, &mut self.down_proj]
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let [gate, up]: [Tensor; 2] = Linear::forward_many(&[&self.gate_proj, &self.up_proj], x)?
            .try_into()
            .map_err(|_| crate::error::NnError::InvalidArgument {
                param: "mlp",
                msg: "gate and up projections gave no output".into(),
            })?;
        let fused =
            gate.device().is_cpu() && gate.dtype() == DType::F32 && up.dtype() == DType::F32;
        if let (Activation::Silu, true, Some(w)) =
            (self.act, fused, self.down_proj.plain_f32_weight())
        {
            if gate.track_op() || up.track_op() || w.track_op() {
                // Training: the gated product never becomes a graph node (see gated_cpu).
                return Ok(gate.contiguous()?.apply_op3(
                    &up.contiguous()?,
                    &w.contiguous()?,
                    crate::gated_cpu::SiluMulDown,
                )?);
            }
        }
        let gated = match self.act {
            Activation::Silu if fused => gate
                .contiguous()?
                .apply_op2(&up.contiguous()?, crate::gated_cpu::SiluMul)?,
            act => (act.apply(&gate)? * up)?,
        };
        self.down_proj.forward(&gated)
    }
}
