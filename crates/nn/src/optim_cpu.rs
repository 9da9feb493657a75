//! The optimizers' updates on the CPU in place: AdamW's moments and parameter step as
//! three passes over the values, split over the kernels' pool, allocating nothing.
//! Written as tensor ops, one AdamW step on MiniLM's 22.7 M parameters made about fifteen
//! new parameter-sized tensors (each faulted in, filled and copied back by `Var::set`).
//!
//! Each value is computed with the same f32 operations, in the same order, as the tensor
//! formula (candle's `x * f64` is `x * (f as f32) + 0`), so the results are the same bits.

use candle_core::{CpuStorage, DType, InplaceOp2, InplaceOp3, Layout, Tensor};

use crate::cpu_op::{f32_slice, f32_slice_mut, op_error};

/// Values per task.
const CHUNK: usize = 1 << 15;

/// One AdamW step's constants (torch.optim.AdamW's, with the bias corrections of step t).
#[derive(Debug, Clone, Copy)]
pub struct AdamWStep {
    pub lr: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// `1 - beta1^t`.
    pub bias1: f64,
    /// `sqrt(1 - beta2^t)`.
    pub bias2_sqrt: f64,
}

/// Whether `adamw_step` takes these tensors: f32, contiguous, on the CPU, one shape.
pub fn fused_adamw_fits(p: &Tensor, g: &Tensor, m: &Tensor, v: &Tensor) -> bool {
    [p, g, m, v].iter().all(|t| {
        t.device().is_cpu()
            && t.dtype() == DType::F32
            && t.is_contiguous()
            && t.shape() == p.shape()
    })
}

/// `m ← β1·m + (1-β1)·g`, `v ← β2·v + (1-β2)·g²`, then (decay first) `p ← p·(1-lr·wd)
/// - lr/bias1 · m / (sqrt(v)/bias2_sqrt + eps)`, all in place. Tensors that do not fit
/// (`fused_adamw_fits`) are an error.
pub fn adamw_step(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    h: &AdamWStep,
) -> candle_core::Result<()> {
    if !fused_adamw_fits(p, g, m, v) {
        return Err(op_error(
            "adamw",
            "parameter, gradient and moments must be contiguous f32 CPU tensors of one shape",
        ));
    }
    m.inplace_op2(
        g,
        &Moment {
            beta: h.beta1,
            square: false,
        },
    )?;
    v.inplace_op2(
        g,
        &Moment {
            beta: h.beta2,
            square: true,
        },
    )?;
    p.inplace_op3(m, v, &Update(*h))
}

/// `x ← β·x + (1-β)·g` (or `g²`).
struct Moment {
    beta: f64,
    square: bool,
}

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "adamw-moment"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        g: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<()> {
        let g = f32_slice(self.name(), g, gl)?;
        let x = f32_slice_mut(self.name(), dst, dst_l)?;
        let (beta, rest) = (self.beta as f32, (1.0 - self.beta) as f32);
        let square = self.square;
        crate::quant::for_each_chunk_mut(x, CHUNK, &|i, x| {
            let g = &g[i * CHUNK..i * CHUNK + x.len()];
            for (x, &g) in x.iter_mut().zip(g) {
                let g = if square { g * g } else { g };
                *x = (*x * beta + 0.0) + (g * rest + 0.0);
            }
        });
        Ok(())
    }
}

/// The parameter step from the updated moments.
struct Update(AdamWStep);

impl InplaceOp3 for Update {
    fn name(&self) -> &'static str {
        "adamw-update"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        m: &CpuStorage,
        ml: &Layout,
        v: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<()> {
        let h = &self.0;
        let (m, v) = (
            f32_slice(self.name(), m, ml)?,
            f32_slice(self.name(), v, vl)?,
        );
        let p = f32_slice_mut(self.name(), dst, dst_l)?;
        let decay = (h.weight_decay != 0.0).then_some((1.0 - h.lr * h.weight_decay) as f32);
        let inv_bias2 = (1.0 / h.bias2_sqrt) as f32;
        let eps = h.eps as f32;
        let step = (h.lr / h.bias1) as f32;
        crate::quant::for_each_chunk_mut(p, CHUNK, &|i, p| {
            let at = i * CHUNK..i * CHUNK + p.len();
            for ((p, &m), &v) in p.iter_mut().zip(&m[at.clone()]).zip(&v[at]) {
                let x = match decay {
                    Some(d) => *p * d + 0.0,
                    None => *p,
                };
                let denom = (v.sqrt() * inv_bias2 + 0.0) * 1.0 + eps;
                *p = x - ((m / denom) * step + 0.0);
            }
        });
        Ok(())
    }
}

/// `Σ g²` over `g`'s values (f32 CPU), in f64 per task, without a temporary tensor; other
/// tensors through tensor ops.
pub fn sum_of_squares(g: &Tensor) -> candle_core::Result<f64> {
    if !(g.device().is_cpu() && g.dtype() == DType::F32) {
        return Ok(f64::from(
            g.sqr()?
                .sum_all()?
                .to_dtype(DType::F32)?
                .to_scalar::<f32>()?,
        ));
    }
    let g = g.contiguous()?;
    let (storage, layout) = g.storage_and_layout();
    let values = match &*storage {
        candle_core::Storage::Cpu(CpuStorage::F32(v)) => match layout.contiguous_offsets() {
            Some((a, b)) => &v[a..b],
            None => return Err(op_error("sum-of-squares", "a non-contiguous tensor")),
        },
        _ => return Err(op_error("sum-of-squares", "the input must be f32")),
    };
    let tasks = values.len().div_ceil(CHUNK);
    let parts = crate::quant::map_tasks(tasks, &|i| {
        let end = ((i + 1) * CHUNK).min(values.len());
        values[i * CHUNK..end]
            .iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
    });
    Ok(parts.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(n: usize, seed: u64, scale: f32) -> Tensor {
        let v: Vec<f32> = (0..n as u64)
            .map(|i| ((((i + seed) * 2_654_435_761) % 10_007) as f32 / 5_003.5 - 1.0) * scale)
            .collect();
        Tensor::from_vec(v, n, &Device::Cpu).unwrap()
    }

    fn bits(x: &Tensor) -> Vec<u32> {
        x.to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    }

    /// The fused step gives the tensor formula's bits, over several steps and chunks.
    #[test]
    fn adamw_equals_the_tensor_formula_bit_for_bit() {
        let n = 3 * CHUNK + 17;
        let (b1, b2, eps, lr, wd) = (0.9f64, 0.999f64, 1e-8f64, 1e-3f64, 0.01f64);
        let p = t(n, 1, 1.0);
        let (m, v) = (p.zeros_like().unwrap(), p.zeros_like().unwrap());
        let (mut rp, mut rm, mut rv) = (p.copy().unwrap(), m.copy().unwrap(), v.copy().unwrap());
        for step in 1..=3 {
            let g = t(n, 10 + step, 0.1);
            let h = AdamWStep {
                lr,
                weight_decay: wd,
                beta1: b1,
                beta2: b2,
                eps,
                bias1: 1.0 - b1.powi(step as i32),
                bias2_sqrt: (1.0 - b2.powi(step as i32)).sqrt(),
            };
            adamw_step(&p, &g, &m, &v, &h).unwrap();
            rp = (rp * (1.0 - lr * wd)).unwrap();
            rm = ((rm * b1).unwrap() + (&g * (1.0 - b1)).unwrap()).unwrap();
            rv = ((rv * b2).unwrap() + (g.sqr().unwrap() * (1.0 - b2)).unwrap()).unwrap();
            let denom = ((rv.sqrt().unwrap() / h.bias2_sqrt).unwrap() + eps).unwrap();
            rp = (&rp - ((&rm / denom).unwrap() * (lr / h.bias1)).unwrap()).unwrap();
            assert_eq!(bits(&m), bits(&rm), "m, step {step}");
            assert_eq!(bits(&v), bits(&rv), "v, step {step}");
            assert_eq!(bits(&p), bits(&rp), "p, step {step}");
        }
        let odd = Tensor::zeros(3, DType::F64, &Device::Cpu).unwrap();
        assert!(adamw_step(
            &odd,
            &odd,
            &odd,
            &odd,
            &AdamWStep {
                lr,
                weight_decay: 0.0,
                beta1: b1,
                beta2: b2,
                eps,
                bias1: 0.1,
                bias2_sqrt: 0.1
            }
        )
        .is_err());
    }

    #[test]
    fn sum_of_squares_equals_the_tensor_formula() {
        let g = t(2 * CHUNK + 5, 3, 0.5);
        let want = f64::from(
            g.sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
        );
        let got = sum_of_squares(&g).unwrap();
        assert!((got - want).abs() <= 1e-5 * want, "{got} vs {want}");
    }
}
