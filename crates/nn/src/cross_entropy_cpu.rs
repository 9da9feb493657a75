//! Mean cross-entropy of logits against class ids in one parallel pass each way on the
//! CPU. candle's `cross_entropy` is log-softmax, gather and mean written out of
//! single-threaded element-wise ops: over a causal LM's 152k-word vocabulary each of them
//! walks hundreds of megabytes, forward and backward, and several copies stay alive.
//!
//! f32 and contiguous only; `cross_entropy` falls back to candle's elsewhere.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use crate::cpu_op::{f32_slice, op_error};
use crate::error::Result;

/// Rows per task: each is a whole vocabulary.
const ROWS: usize = 4;

/// A contiguous f32 `(n, classes)` slice of a storage, and `classes`.
fn rows<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<(&'a [f32], usize)> {
    let classes = l.dims().last().copied().unwrap_or(0);
    Ok((f32_slice("cross-entropy", s, l)?, classes))
}

/// `log Σ exp(row)`.
fn log_sum_exp(row: &[f32]) -> f32 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let sum: f32 = row.iter().map(|&v| (v - max).exp()).sum();
    max + sum.ln()
}

/// `mean_i (logsumexp(row_i) − row_i[target_i])`, a scalar.
#[derive(Debug, Clone)]
struct CrossEntropy {
    targets: Vec<u32>,
}

impl CustomOp1 for CrossEntropy {
    fn name(&self) -> &'static str {
        "cross-entropy"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, classes) = rows(s, l)?;
        let n = self.targets.len();
        if classes == 0 || x.len() != n * classes {
            return Err(op_error("cross-entropy", "one target per row of logits"));
        }
        let tasks = n.div_ceil(ROWS);
        let parts = crate::quant::map_tasks(tasks, &|i| {
            (i * ROWS..((i + 1) * ROWS).min(n))
                .map(|r| {
                    let row = &x[r * classes..(r + 1) * classes];
                    f64::from(log_sum_exp(row) - row[self.targets[r] as usize])
                })
                .sum::<f64>()
        });
        let loss = parts.iter().sum::<f64>() / n as f64;
        Ok((CpuStorage::F32(vec![loss as f32]), Shape::from(())))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let scale = grad.to_scalar::<f32>()? / self.targets.len() as f32;
        let g = arg.contiguous()?.apply_op1_no_bwd(&CrossEntropyGrad {
            targets: self.targets.clone(),
            scale,
        })?;
        Ok(Some(g))
    }
}

/// The backward pass: `scale · (softmax(row) − onehot(target))` per row.
#[derive(Debug, Clone)]
struct CrossEntropyGrad {
    targets: Vec<u32>,
    scale: f32,
}

impl CustomOp1 for CrossEntropyGrad {
    fn name(&self) -> &'static str {
        "cross-entropy-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, classes) = rows(s, l)?;
        if classes == 0 || x.len() != self.targets.len() * classes {
            return Err(op_error("cross-entropy", "one target per row of logits"));
        }
        let mut out = x.to_vec();
        crate::quant::for_each_chunk_mut(&mut out, ROWS * classes, &|i, out| {
            for (k, row) in out.chunks_mut(classes).enumerate() {
                crate::vec_math::softmax_scaled(row, 1.0);
                row[self.targets[i * ROWS + k] as usize] -= 1.0;
                row.iter_mut().for_each(|v| *v *= self.scale);
            }
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

/// The mean cross-entropy of `logits (n, classes)` against `targets` (each below
/// `classes`; the caller checks them), as candle's `cross_entropy`: fused on the CPU in
/// f32, candle's composite form elsewhere.
pub fn cross_entropy(logits: &Tensor, targets: &[u32]) -> Result<Tensor> {
    if logits.device().is_cpu() && logits.dtype() == candle_core::DType::F32 {
        return Ok(logits.contiguous()?.apply_op1(CrossEntropy {
            targets: targets.to_vec(),
        })?);
    }
    let t = Tensor::new(targets, logits.device())?;
    Ok(candle_nn::loss::cross_entropy(logits, &t)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn loss_and_gradient_equal_candles() {
        let dev = Device::Cpu;
        let (n, classes) = (11, 1003);
        let x: Vec<f32> = (0..n * classes)
            .map(|i| (i as f32 * 0.37).sin() * 5.0)
            .collect();
        let targets: Vec<u32> = (0..n as u32).map(|i| (i * 97) % classes as u32).collect();
        let run = |fused: bool| {
            let v = Var::from_vec(x.clone(), (n, classes), &dev).unwrap();
            let loss = if fused {
                v.as_tensor()
                    .apply_op1(CrossEntropy {
                        targets: targets.clone(),
                    })
                    .unwrap()
            } else {
                let t = Tensor::new(targets.as_slice(), &dev).unwrap();
                candle_nn::loss::cross_entropy(v.as_tensor(), &t).unwrap()
            };
            let grads = (&loss * 3.0).unwrap().backward().unwrap();
            let g: Vec<f32> = grads
                .get(v.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            (loss.to_scalar::<f32>().unwrap(), g)
        };
        let (ours, want) = (run(true), run(false));
        assert!((ours.0 - want.0).abs() < 1e-5, "{} vs {}", ours.0, want.0);
        for (a, b) in ours.1.iter().zip(&want.1) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }
}
