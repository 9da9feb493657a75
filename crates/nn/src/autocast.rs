//! Mixed-precision autocast, as `torch.autocast`: while it is on for a thread, dense
//! linear layers (and LoRA adapters) multiply in the autocast dtype (bf16) — their f32
//! inputs and weights cast down, the product cast back up — while everything else (norms,
//! softmax, attention, the loss) stays f32 and the parameters stay f32 masters whose
//! gradients flow back through the casts. transformers' Trainer does this with
//! `bf16=True`.
//!
//! The setting is per thread (as PyTorch's), and `quant::install` carries it onto the
//! kernels' pool thread that runs a forward pass.

use std::cell::Cell;

use candle_core::{DType, Device, Tensor};

use crate::error::{NnError, Result};

thread_local! {
    static AUTOCAST: Cell<Option<DType>> = const { Cell::new(None) };
}

/// The autocast dtype of this thread (`None`: off).
pub fn autocast_dtype() -> Option<DType> {
    AUTOCAST.with(Cell::get)
}

/// Runs `f` with autocast to `dtype` on this thread (`None`: off), then restores the
/// setting before.
pub fn with_autocast<R>(dtype: Option<DType>, f: impl FnOnce() -> R) -> R {
    let before = AUTOCAST.with(|c| c.replace(dtype));
    let out = f();
    AUTOCAST.with(|c| c.set(before));
    out
}

/// Whether `device` multiplies `dtype` matrices (checked with a tiny product): bf16 on
/// the CPU (candle widens it to f32 for the product and rounds the result), on CUDA GPUs
/// that have it, on Metal.
pub fn device_supports(dtype: DType, device: &Device) -> bool {
    let probe = || -> candle_core::Result<Tensor> {
        let a = Tensor::ones((2, 2), dtype, device)?;
        a.matmul(&a)?.to_dtype(DType::F32)
    };
    probe().is_ok()
}

/// `x · wᵀ (+ bias)` for `x (..., in)`, `w (out, in)` under autocast to `dtype`: inputs,
/// weight and bias cast to `dtype`, the product back to `x`'s dtype (so every output is a
/// `dtype` value, as PyTorch's autocast linear gives).
pub(crate) fn linear(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    dtype: DType,
) -> Result<Tensor> {
    let (out, inp) = w.dims2()?;
    let mut dims = x.dims().to_vec();
    if dims.last() != Some(&inp) {
        return Err(NnError::InvalidArgument {
            param: "x",
            msg: format!("last dimension {:?}, the weight takes {inp}", dims.last()),
        });
    }
    let rows = x.elem_count() / inp.max(1);
    let xc = x.to_dtype(dtype)?.reshape((rows, inp))?;
    let mut y = xc.matmul(&w.to_dtype(dtype)?.t()?)?;
    if let Some(b) = bias {
        y = y.broadcast_add(&b.to_dtype(dtype)?)?;
    }
    if let Some(last) = dims.last_mut() {
        *last = out;
    }
    Ok(y.reshape(dims)?.to_dtype(x.dtype())?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::linear::{Linear, LinearWeight};

    /// Under autocast a dense layer gives the bf16 product of the bf16-rounded input,
    /// weight and bias (every output a bf16 value), in f32; its f32 weight gets an f32
    /// gradient through the casts; off again, the layer is f32 as before. The setting goes
    /// along onto the kernels' pool.
    #[test]
    fn a_linear_layer_multiplies_in_bf16_under_autocast() {
        let dev = Device::Cpu;
        let vals = |n: usize, seed: u32| {
            let v: Vec<f32> = (0..n as u32)
                .map(|i| {
                    ((i.wrapping_mul(2_654_435_761).wrapping_add(seed)) % 10_007) as f32 / 3_001.0
                        - 1.6
                })
                .collect();
            v
        };
        let x = Tensor::from_vec(vals(3 * 5, 1), (3, 5), &dev).unwrap();
        let w =
            candle_core::Var::from_tensor(&Tensor::from_vec(vals(4 * 5, 2), (4, 5), &dev).unwrap())
                .unwrap();
        let b = Tensor::from_vec(vals(4, 3), 4, &dev).unwrap();
        let layer =
            Linear::new(LinearWeight::Dense(w.as_tensor().clone()), Some(b.clone())).unwrap();
        let y = crate::quant::install(|| {
            with_autocast(Some(DType::BF16), || {
                assert_eq!(autocast_dtype(), Some(DType::BF16));
                layer.forward(&x)
            })
        })
        .unwrap();
        assert_eq!(autocast_dtype(), None);
        assert_eq!(y.dtype(), DType::F32);
        let bf = |t: &Tensor| t.to_dtype(DType::BF16).unwrap();
        let want = bf(&x)
            .matmul(&bf(w.as_tensor()).t().unwrap())
            .unwrap()
            .broadcast_add(&bf(&b))
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        assert_eq!(y.to_vec2::<f32>().unwrap(), want.to_vec2::<f32>().unwrap());
        let rounded = bf(&y).to_dtype(DType::F32).unwrap();
        assert_eq!(
            y.to_vec2::<f32>().unwrap(),
            rounded.to_vec2::<f32>().unwrap()
        );
        let plain = layer.forward(&x).unwrap();
        assert!(
            crate::test_util::max_diff(&plain, &y) > 1e-4,
            "autocast changed nothing"
        );
        let grads = y.sum_all().unwrap().backward().unwrap();
        let g = grads.get(w.as_tensor()).unwrap();
        assert_eq!((g.dtype(), g.dims()), (DType::F32, &[4usize, 5][..]));
        assert!(device_supports(DType::BF16, &dev));
    }
}
