//! Products with a frozen quantized weight that gradients pass through: `y = x Wᵀ` on the
//! quantized kernels, with `dx = dy W` (W dequantized for the backward pass only). What
//! QLoRA needs: the adapters of early layers learn through the quantized later ones.
//! Used only when `x` carries gradients; inference keeps the plain kernels.

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{bail, CpuStorage, CudaStorage, CustomOp1, Layout, MetalStorage, Shape, Tensor};

use crate::quant::QuantMatrix;

/// `x (..., in) → (..., out)` on our CPU kernels (f32, contiguous `x`).
pub(crate) struct GgmlMatMul(pub Arc<QuantMatrix>);

impl CustomOp1 for GgmlMatMul {
    fn name(&self) -> &'static str {
        "ggml-matmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            bail!("ggml-matmul takes f32 input")
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            bail!("ggml-matmul takes a contiguous input")
        };
        let q = &self.0;
        let dims = layout.shape().dims();
        let k = dims.last().copied().unwrap_or(0);
        if k != q.cols() {
            bail!(
                "ggml-matmul: last dimension {k}, the weight takes {}",
                q.cols()
            )
        }
        let x = &data[start..end];
        let m = x.len() / k.max(1);
        let y = if q.prefers_dense(m) {
            crate::quant::dense_matmul(q, x, m)
        } else {
            q.matmul(x, m)
        };
        let mut out = dims.to_vec();
        if let Some(last) = out.last_mut() {
            *last = q.rows();
        }
        Ok((CpuStorage::F32(y), Shape::from(out)))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let q = &self.0;
        let w = Tensor::from_vec(q.dequantize(), (q.rows(), q.cols()), dy.device())?;
        Ok(Some(dy.broadcast_matmul(&w)?))
    }
}

/// candle's quantized product (`QMatMul` on GPUs, or block types our kernels lack), with a
/// backward pass.
pub(crate) struct QTensorMatMul(pub Arc<QTensor>);

impl CustomOp1 for QTensorMatMul {
    fn name(&self) -> &'static str {
        "qtensor-matmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        <QTensor as CustomOp1>::cpu_fwd(&self.0, storage, layout)
    }

    fn cuda_fwd(
        &self,
        storage: &CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        <QTensor as CustomOp1>::cuda_fwd(&self.0, storage, layout)
    }

    fn metal_fwd(
        &self,
        storage: &MetalStorage,
        layout: &Layout,
    ) -> candle_core::Result<(MetalStorage, Shape)> {
        <QTensor as CustomOp1>::metal_fwd(&self.0, storage, layout)
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let w = self.0.dequantize(dy.device())?.to_dtype(dy.dtype())?;
        Ok(Some(dy.broadcast_matmul(&w)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linear::{Linear, LinearWeight};
    use candle_core::quantized::GgmlDType;
    use candle_core::{Device, Var};

    /// `x`'s gradient through a quantized layer equals the one through its dequantized
    /// weights (dy = 1: dx = column sums of W), for both quantized paths.
    #[test]
    fn gradients_pass_through_frozen_quantized_weights() {
        let (rows, cols) = (8, 64);
        let data = crate::quant::test_random(rows * cols, 3);
        let dev = Device::Cpu;
        let w = Tensor::from_vec(data.clone(), (rows, cols), &dev).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        let deq = q.dequantize(&dev).unwrap();
        let bytes = crate::quant::quantize_f32(&data, cols, GgmlDType::Q8_0, "w").unwrap();
        let m = QuantMatrix::from_bytes(GgmlDType::Q8_0, rows, cols, &bytes).unwrap();
        let ggml_deq = Tensor::from_vec(m.dequantize(), (rows, cols), &dev).unwrap();
        let x = Var::from_tensor(
            &Tensor::from_vec(crate::quant::test_random(3 * cols, 5), (1, 3, cols), &dev).unwrap(),
        )
        .unwrap();
        for (layer, w) in [
            (LinearWeight::Quantized(Arc::new(q)), deq),
            (LinearWeight::Ggml(Arc::new(m)), ggml_deq),
        ] {
            let layer = Linear::new(layer, None).unwrap();
            let y = layer.forward(x.as_tensor()).unwrap();
            let dense = x.as_tensor().broadcast_matmul(&w.t().unwrap()).unwrap();
            let fwd = (&y - &dense)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(fwd < 0.05, "forward differs by {fwd}");
            let g = y.sum_all().unwrap().backward().unwrap();
            let got = g.get(x.as_tensor()).unwrap();
            let want = w.sum(0).unwrap().broadcast_as((1, 3, cols)).unwrap();
            let diff = (got - want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-5, "gradient differs by {diff}");
        }
    }
}
