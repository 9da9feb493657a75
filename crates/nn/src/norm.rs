//! RMSNorm and LayerNorm, computed in f32 whatever the activations' dtype.

use candle_core::{DType, Tensor, D};

use crate::error::Result;
use crate::weights::Weights;

#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(weight: Tensor, eps: f64) -> Self {
        Self { weight, eps }
    }

    /// Loads `{name}`; `offset` is added to the weight (Gemma scales by `1 + w`).
    pub fn load(w: &Weights, name: &str, size: usize, eps: f64, offset: f64) -> Result<Self> {
        let weight = w.tensor(name, &[size])?.to_dtype(DType::F32)?;
        let weight = if offset != 0.0 {
            (weight + offset)?
        } else {
            weight
        };
        Ok(Self::new(weight, eps))
    }

    /// Normalizes over the last dimension.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.track_op() && x.device().is_cpu() && x.dtype() == DType::F32 {
            // Training: one parallel pass each way (see layer_norm_cpu); inference keeps
            // the composite form.
            let op = crate::layer_norm_cpu::LayerNormOp {
                eps: self.eps as f32,
                center: false,
            };
            let zeros = self.weight.zeros_like()?;
            return Ok(x.contiguous()?.apply_op3(&self.weight, &zeros, op)?);
        }
        if x.device().is_cpu()
            && x.dtype() == DType::F32
            && x.is_contiguous()
            && self.weight.dtype() == DType::F32
            && crate::rms_norm_cpu::RmsNormInference::available()
        {
            // One op with the composite form's bits (see rms_norm_cpu).
            let op = crate::rms_norm_cpu::RmsNormInference { eps: self.eps };
            return Ok(x.apply_op2_no_bwd(&self.weight, &op)?);
        }
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        let var = x.sqr()?.mean_keepdim(D::Minus1)?;
        let x = x.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        Ok(x.broadcast_mul(&self.weight)?.to_dtype(dtype)?)
    }
}

/// LayerNorm with weight and bias (BERT's).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Loads `{prefix}.weight` and `{prefix}.bias`.
    pub fn load(w: &Weights, prefix: &str, size: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: w
                .tensor(&format!("{prefix}.weight"), &[size])?
                .to_dtype(DType::F32)?,
            bias: w
                .tensor(&format!("{prefix}.bias"), &[size])?
                .to_dtype(DType::F32)?,
            eps,
        })
    }

    /// Normalizes over the last dimension.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // One parallel pass each way on the CPU (see layer_norm_cpu).
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            let op = crate::layer_norm_cpu::LayerNormOp {
                eps: self.eps as f32,
                center: true,
            };
            return Ok(x.contiguous()?.apply_op3(&self.weight, &self.bias, op)?);
        }
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        let mean = x.mean_keepdim(D::Minus1)?;
        let x = x.broadcast_sub(&mean)?;
        let var = x.sqr()?.mean_keepdim(D::Minus1)?;
        let x = x.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        Ok(x.broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)?
            .to_dtype(dtype)?)
    }
}
