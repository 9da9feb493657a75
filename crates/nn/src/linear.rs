//! `Linear`: one layer type whatever the weight's storage — dense (trainable, and the
//! base a LoRA adapter wraps) or quantized (GGUF blocks multiplied by quantized kernels:
//! ours on the CPU, candle's on GPUs) — optionally with a LoRA adapter (`crate::lora`).
//! A frozen quantized base passes gradients to its input (QLoRA).

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Module, Tensor};

use crate::error::Result;
use crate::frozen_matmul::{GgmlMatMul, QTensorMatMul};
use crate::int16_matmul::Int16Weight;
use crate::lora::LoraAdapter;
use crate::quant::QuantMatrix;
use crate::weights::Weights;

#[derive(Debug, Clone)]
pub enum LinearWeight {
    /// `(out_features, in_features)`, as transformers stores it.
    Dense(Tensor),
    /// GGUF blocks for candle's kernels (GPUs).
    Quantized(Arc<QTensor>),
    /// GGUF blocks for our CPU kernels.
    Ggml(Arc<QuantMatrix>),
}

/// How dense f32 products run for inference, as PyTorch's
/// `torch.set_float32_matmul_precision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MatmulPrecision {
    /// f32 products.
    #[default]
    Highest,
    /// 16-bit integer products with f32 scales (`crate::int16_matmul`), about twice as
    /// fast: each operand keeps 14 bits of its block's (input) or row's (weight) largest
    /// value. For inference on CPUs with AVX-512 VNNI, in layers whose dense f32 weight is
    /// neither trainable nor adapted (LoRA); f32 everywhere else.
    High,
}

impl MatmulPrecision {
    pub const ALL: [Self; 2] = [Self::Highest, Self::High];

    /// `highest` or `high` (PyTorch's names).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Highest => "highest",
            Self::High => "high",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Linear {
    weight: LinearWeight,
    matmul: LinearImpl,
    bias: Option<Tensor>,
    lora: Option<LoraAdapter>,
    /// The weight as 16-bit integers, when `MatmulPrecision::High` applies to the layer.
    int16: Option<Arc<Int16Weight>>,
}

#[derive(Debug, Clone)]
enum LinearImpl {
    Dense(candle_nn::Linear),
    Quantized(QMatMul),
    Ggml(Arc<QuantMatrix>),
}

impl Linear {
    pub fn new(weight: LinearWeight, bias: Option<Tensor>) -> Result<Self> {
        let matmul = match &weight {
            LinearWeight::Dense(w) => LinearImpl::Dense(candle_nn::Linear::new(w.clone(), None)),
            LinearWeight::Quantized(q) => LinearImpl::Quantized(QMatMul::from_arc(q.clone())?),
            LinearWeight::Ggml(q) => LinearImpl::Ggml(q.clone()),
        };
        Ok(Self {
            weight,
            matmul,
            bias,
            lora: None,
            int16: None,
        })
    }

    /// Sets how the layer's products run for inference (`MatmulPrecision`). `High` takes
    /// effect only where it applies (see there); `matmul_precision` says whether it did.
    pub fn set_matmul_precision(&mut self, precision: MatmulPrecision) -> Result<()> {
        self.int16 = None;
        if precision == MatmulPrecision::Highest
            || !crate::int16_matmul::supported()
            || self.lora.is_some()
        {
            return Ok(());
        }
        let LinearWeight::Dense(w) = &self.weight else {
            return Ok(());
        };
        if w.dtype() != DType::F32 || !w.device().is_cpu() || w.is_variable() || w.rank() != 2 {
            return Ok(());
        }
        let (n, k) = w.dims2()?;
        let bias = match &self.bias {
            Some(b) if b.dtype() != DType::F32 || b.is_variable() => return Ok(()),
            Some(b) => Some(b.flatten_all()?.to_vec1::<f32>()?),
            None => None,
        };
        let values = w.flatten_all()?.to_vec1::<f32>()?;
        self.int16 = Some(Arc::new(Int16Weight::new(&values, n, k, bias.as_deref())));
        Ok(())
    }

    /// How the layer's products run for inference.
    pub fn matmul_precision(&self) -> MatmulPrecision {
        if self.int16.is_some() {
            MatmulPrecision::High
        } else {
            MatmulPrecision::Highest
        }
    }

    /// The layer with a LoRA adapter added to its output.
    pub fn with_lora(mut self, lora: LoraAdapter) -> Self {
        self.lora = Some(lora);
        // An adapted layer runs in f32 (its base products are what the adapter learns on).
        self.int16 = None;
        self
    }

    /// Loads `{prefix}.weight` (and `{prefix}.bias`), quantized when the checkpoint is and
    /// dequantization was not asked for.
    /// When loading with LoRA (`Weights::with_lora`), a layer whose name matches
    /// `target_modules` gets its adapter, and one of `modules_to_save` is read dense and
    /// trainable.
    pub fn load(
        w: &Weights,
        prefix: &str,
        in_features: usize,
        out_features: usize,
        bias: bool,
    ) -> Result<Self> {
        Self::load_module(w, prefix, prefix, in_features, out_features, bias, false)
    }

    /// The model's output layer, called `module`, whose weight is `{weights}.weight`
    /// (`lm_head`, or a head tied to the input embeddings: `lm_head` reading
    /// `model.embed_tokens.weight`). LoRA sees it as `module`, and `"all-linear"` leaves it
    /// out as PEFT does.
    pub fn load_output(
        w: &Weights,
        module: &str,
        weights: &str,
        in_features: usize,
        out_features: usize,
        bias: bool,
    ) -> Result<Self> {
        Self::load_module(w, module, weights, in_features, out_features, bias, true)
    }

    fn load_module(
        w: &Weights,
        module: &str,
        prefix: &str,
        in_features: usize,
        out_features: usize,
        bias: bool,
        is_output: bool,
    ) -> Result<Self> {
        let name = format!("{prefix}.weight");
        let shape = [out_features, in_features];
        // A module trained whole is read dense, whatever the checkpoint stores.
        let dense = w.lora_saves(module);
        let weight = if dense {
            LinearWeight::Dense(w.tensor(&name, &shape)?)
        } else {
            match w.quant_matrix(&name, out_features, in_features)? {
                Some(q) => LinearWeight::Ggml(q),
                None => match w.quantized(&name, &shape)? {
                    Some(q) if !w.dequantize => LinearWeight::Quantized(q),
                    Some(q) => LinearWeight::Dense(q.dequantize(&w.device)?.to_dtype(w.dtype)?),
                    None => LinearWeight::Dense(w.tensor(&name, &shape)?),
                },
            }
        };
        let bias = if bias {
            Some(w.tensor(&format!("{prefix}.bias"), &[out_features])?)
        } else {
            None
        };
        let mut layer = Self::new(weight, bias)?;
        layer.set_matmul_precision(w.matmul_precision)?;
        Ok(
            match w.lora_adapter(module, in_features, out_features, is_output)? {
                Some(a) => layer.with_lora(a),
                None => layer,
            },
        )
    }

    /// The layer's LoRA adapter, if it has one.
    pub fn lora(&self) -> Option<&LoraAdapter> {
        self.lora.as_ref()
    }

    /// Whether `merge_and_unload` can fold the adapter in (no adapter, or a dense base).
    pub fn can_merge(&self) -> bool {
        self.lora.is_none() || matches!(self.weight, LinearWeight::Dense(_))
    }

    /// Folds the adapter into the base weight, `W + scaling · B A`, and drops it (PEFT's
    /// `merge_and_unload` for one layer). A quantized base is refused: merging would
    /// change the kernels the model runs (load the GGUF dequantized to merge).
    pub fn merge_and_unload(&mut self) -> Result<()> {
        let Some(lora) = &self.lora else {
            return Ok(());
        };
        let LinearWeight::Dense(w) = &self.weight else {
            return Err(crate::error::NnError::InvalidArgument {
                param: "merge_and_unload",
                msg: format!(
                    "`{}` has a quantized base weight; load it dequantized to merge",
                    lora.module()
                ),
            });
        };
        let merged = (w.detach() + lora.delta_weight()?.to_dtype(w.dtype())?)?;
        *self = Self::new(LinearWeight::Dense(merged), self.bias.clone())?;
        Ok(())
    }

    pub fn weight(&self) -> &LinearWeight {
        &self.weight
    }

    /// The weight, when the layer is only a dense f32 product (no bias, no LoRA, no
    /// autocast), for ops that fuse it with what comes before.
    pub(crate) fn plain_f32_weight(&self) -> Option<&Tensor> {
        if crate::autocast::autocast_dtype().is_some() {
            return None;
        }
        match (&self.weight, &self.bias, &self.lora) {
            (LinearWeight::Dense(w), None, None) if w.dtype() == DType::F32 => Some(w),
            _ => None,
        }
    }

    /// Several layers on the same input (q, k, v; gate, up): quantized ones in one parallel
    /// loop when the input is a few rows (decoding), each on its own otherwise.
    pub fn forward_many(layers: &[&Linear], x: &Tensor) -> Result<Vec<Tensor>> {
        let mats: Option<Vec<&QuantMatrix>> = layers
            .iter()
            .map(|l| match &l.matmul {
                LinearImpl::Ggml(q) => Some(q.as_ref()),
                _ => None,
            })
            .collect();
        let (k, m) = row_shape(x);
        // With gradients to carry, each layer runs its own differentiable product.
        let Some(mats) = mats
            .filter(|ms| !x.track_op() && ms.iter().all(|q| q.cols() == k && !q.prefers_dense(m)))
        else {
            return layers.iter().map(|l| l.forward(x)).collect();
        };
        let outs = with_f32_values(x, |input| QuantMatrix::matmul_many(&mats, input, m))?;
        layers
            .iter()
            .zip(mats)
            .zip(outs)
            .map(|((l, q), y)| l.add_lora(x, l.add_bias(rows_like(y, x, q.rows())?)?))
            .collect()
    }

    fn add_lora(&self, x: &Tensor, y: Tensor) -> Result<Tensor> {
        Ok(match &self.lora {
            Some(lora) => (y + lora.forward(x)?)?,
            None => y,
        })
    }

    fn add_bias(&self, y: Tensor) -> Result<Tensor> {
        Ok(match &self.bias {
            Some(b)
                if y.device().is_cpu() && y.dtype() == DType::F32 && b.dtype() == DType::F32 =>
            {
                // One parallel pass each way (see bias_cpu).
                y.contiguous()?.apply_op2(b, crate::bias_cpu::BiasAdd)?
            }
            Some(b) => y.broadcast_add(&b.to_dtype(y.dtype())?)?,
            None => y,
        })
    }

    /// `x (..., in) -> (..., out)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(y) = self.int16_forward(x, None)? {
            return Ok(y);
        }
        if let (Some(dtype), LinearImpl::Dense(l)) =
            (crate::autocast::autocast_dtype(), &self.matmul)
        {
            if dtype != x.dtype() {
                let y = crate::autocast::linear(x, l.weight(), self.bias.as_ref(), dtype)?;
                return self.add_lora(x, y);
            }
        }
        let y = match &self.matmul {
            LinearImpl::Dense(l)
                if x.device().is_cpu()
                    && x.dtype() == DType::F32
                    && l.weight().dtype() == DType::F32 =>
            {
                // Product and bias in one op (see matmul_cpu::linear).
                let bias = self.bias.as_ref().filter(|b| b.dtype() == DType::F32);
                let y = crate::matmul_cpu::linear(x, l.weight(), bias)?;
                let y = if bias.is_some() { y } else { self.add_bias(y)? };
                return self.add_lora(x, y);
            }
            LinearImpl::Dense(l) => l.forward(x)?,
            // Frozen quantized weights that pass gradients on to `x`.
            LinearImpl::Quantized(QMatMul::QTensor(q)) if x.track_op() => {
                x.apply_op1(QTensorMatMul(q.clone()))?
            }
            LinearImpl::Ggml(q) if x.track_op() => x
                .to_dtype(candle_core::DType::F32)?
                .contiguous()?
                .apply_op1(GgmlMatMul(q.clone()))?
                .to_dtype(x.dtype())?,
            LinearImpl::Quantized(q) => q.forward(x)?,
            LinearImpl::Ggml(q) => quant_forward(q, x)?,
        };
        let y = self.add_bias(y)?;
        self.add_lora(x, y)
    }
}

impl Linear {
    /// `forward(x) + residual` (a residual connection), the sum made as the outputs are
    /// stored where the layer runs 16-bit products.
    pub fn forward_add(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        if let Some(y) = self.int16_forward(x, Some(residual))? {
            return Ok(y);
        }
        Ok((self.forward(x)? + residual)?)
    }

    /// The product on the 16-bit weights (plus `residual`), when they apply to `x` (no
    /// gradients, f32 on the CPU, no autocast).
    fn int16_forward(&self, x: &Tensor, residual: Option<&Tensor>) -> Result<Option<Tensor>> {
        let Some(q) = &self.int16 else {
            return Ok(None);
        };
        if x.track_op()
            || x.dtype() != DType::F32
            || !x.device().is_cpu()
            || crate::autocast::autocast_dtype().is_some()
            || residual.is_some_and(|r| {
                r.track_op() || r.dtype() != DType::F32 || r.dims() != out_dims(x, q.rows())
            })
        {
            return Ok(None);
        }
        let m = rows_taking(x, q.cols())?;
        let y = with_f32_values(x, |input| match residual {
            Some(r) => with_f32_values(r, |res| q.forward_add(input, m, Some(res))),
            None => Ok(q.forward(input, m)),
        })??;
        Ok(Some(rows_like(y, x, q.rows())?))
    }
}

/// `x (..., in) -> (..., out)` with our kernels (f32 in and out).
fn quant_forward(q: &QuantMatrix, x: &Tensor) -> Result<Tensor> {
    let m = rows_taking(x, q.cols())?;
    let y = with_f32_values(x, |input| {
        if q.prefers_dense(m) {
            // A prompt: expand the weights once and run an f32 GEMM over all its rows.
            crate::quant::dense_matmul(q, input, m)
        } else {
            q.matmul(input, m)
        }
    })?;
    rows_like(y, x, q.rows())
}

/// `x (..., k)` as `(k, m)`: its row length and number of rows.
fn row_shape(x: &Tensor) -> (usize, usize) {
    let k = x.dims().last().copied().unwrap_or(0);
    (k, x.elem_count() / k.max(1))
}

/// The number of rows of `x (..., k)` for a weight taking `cols` inputs; an error when
/// `k` is not `cols`.
fn rows_taking(x: &Tensor, cols: usize) -> Result<usize> {
    let (k, m) = row_shape(x);
    if k != cols {
        return Err(crate::error::NnError::InvalidArgument {
            param: "x",
            msg: format!("last dimension {k}, the weight takes {cols}"),
        });
    }
    Ok(m)
}

/// `f` of `x`'s values in f32, row-major, for our kernels: borrowed where `x` is a
/// contiguous f32 tensor on the CPU (a decode step's inputs were copied ~100 times), else
/// converted.
fn with_f32_values<R>(x: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    if x.dtype() == DType::F32 && x.is_contiguous() {
        let (storage, layout) = x.storage_and_layout();
        if let candle_core::Storage::Cpu(cpu) = &*storage {
            let start = layout.start_offset();
            if let Some(values) = cpu.as_slice::<f32>()?.get(start..start + x.elem_count()) {
                return Ok(f(values));
            }
        }
    }
    let values = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    Ok(f(&values))
}

/// `x`'s shape with the last dimension `n`.
fn out_dims(x: &Tensor, n: usize) -> Vec<usize> {
    let mut dims = x.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = n;
    }
    dims
}

/// Output rows `y` (`n` values per input row of `x`) as a tensor shaped and typed like `x`.
fn rows_like(y: Vec<f32>, x: &Tensor, n: usize) -> Result<Tensor> {
    Ok(Tensor::from_vec(y, out_dims(x, n), x.device())?.to_dtype(x.dtype())?)
}
