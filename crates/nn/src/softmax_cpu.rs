//! Softmax over the last dimension with a backward pass, in one parallel pass each way on
//! the CPU. candle's fused softmax has no backward, so training took the composite form
//! (max, subtract, exp, sum, divide, each on one thread, and their backward passes).
//!
//! f32 and contiguous only; `attention::softmax` uses it for f32 CPU tensors being trained.

use crate::cpu_op::{f32_slice, op_error, rows_task_len};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};

/// Values per task: large enough that scheduling is noise.
const CHUNK: usize = 1 << 14;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice("softmax", s, l)?;
        let d = l.dims().last().copied().unwrap_or(0);
        let mut y = x.to_vec();
        if d > 0 {
            crate::quant::for_each_chunk_mut(&mut y, rows_task_len(d, CHUNK), &|_, out| {
                out.chunks_mut(d)
                    .for_each(|row| crate::vec_math::softmax_scaled(row, 1.0));
            });
        }
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let g = grad_res.contiguous()?;
        Ok(Some(res.contiguous()?.apply_op2_no_bwd(&g, &SoftmaxGrad)?))
    }
}

/// The backward pass of `Softmax`: `(y, g) → y · (g − Σ g·y)` per row.
#[derive(Debug, Clone, Copy)]
struct SoftmaxGrad;

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "softmax-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (y, g) = (f32_slice("softmax", s1, l1)?, f32_slice("softmax", s2, l2)?);
        if y.len() != g.len() {
            return Err(op_error(
                "softmax",
                "the gradient must have the output's shape",
            ));
        }
        let d = l1.dims().last().copied().unwrap_or(0);
        let mut out = vec![0f32; y.len()];
        if d > 0 {
            let per = rows_task_len(d, CHUNK);
            crate::quant::for_each_chunk_mut(&mut out, per, &|i, out| {
                let at = i * per;
                let (y, g) = (&y[at..at + out.len()], &g[at..at + out.len()]);
                for ((yr, gr), o) in y.chunks(d).zip(g.chunks(d)).zip(out.chunks_mut(d)) {
                    let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
                    for ((o, &yv), &gv) in o.iter_mut().zip(yr).zip(gr) {
                        *o = yv * (gv - dot);
                    }
                }
            });
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn forward_and_gradient_equal_the_composite_form() {
        let dev = Device::Cpu;
        let (rows, d) = (333, 77);
        let x: Vec<f32> = (0..rows * d)
            .map(|i| (i as f32 * 0.41).sin() * 6.0)
            .collect();
        let g: Vec<f32> = (0..rows * d).map(|i| (i as f32 * 0.029).cos()).collect();
        let run = |fused: bool| {
            let v = Var::from_vec(x.clone(), (rows, d), &dev).unwrap();
            let y = if fused {
                v.as_tensor().apply_op1(Softmax).unwrap()
            } else {
                candle_nn::ops::softmax(v.as_tensor(), candle_core::D::Minus1).unwrap()
            };
            let gt = Tensor::from_vec(g.clone(), (rows, d), &dev).unwrap();
            let grads = (&y * gt).unwrap().sum_all().unwrap().backward().unwrap();
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (flat(&y), flat(grads.get(v.as_tensor()).unwrap()))
        };
        let (ours, want) = (run(true), run(false));
        for (a, b) in ours.0.iter().zip(&want.0) {
            assert!((a - b).abs() <= 1e-6, "y: {a} vs {b}");
        }
        for (a, b) in ours.1.iter().zip(&want.1) {
            assert!((a - b).abs() <= 1e-5, "dx: {a} vs {b}");
        }
    }
}
