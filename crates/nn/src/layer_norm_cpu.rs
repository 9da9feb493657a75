//! LayerNorm (and RMSNorm, its uncentred form without a bias) over the last dimension
//! in one parallel pass on the CPU, forward and backward. Written out of candle's element-wise ops it costs nine passes forward (mean,
//! subtract, square, mean, add, sqrt, divide, scale, shift), each on one thread, and
//! about twice that backward: a fifth of a MiniLM training step.
//!
//! f32 and contiguous only; `LayerNorm::forward` uses it for f32 CPU tensors,
//! `RmsNorm::forward` for f32 CPU tensors being trained, and the composite form otherwise.

use std::sync::Mutex;

use crate::cpu_op::{f32_slice, op_error, rows_and_vectors, rows_task_len};
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

/// Values per task: large enough that scheduling is noise.
const CHUNK: usize = 1 << 14;

/// `y = (x − mean) / √(var + eps) · weight + bias` for each row of `x (..., d)`; with
/// `center` false (RMSNorm) the mean is taken as 0 (and the bias is zeros).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayerNormOp {
    pub eps: f32,
    pub center: bool,
}

/// A row's mean (0 when not centring) and 1/√(var + eps).
fn moments(row: &[f32], eps: f32, center: bool) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = if center {
        row.iter().sum::<f32>() / n
    } else {
        0.0
    };
    let var = row.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, [w, b], d) = rows_and_vectors(
            "layer-norm",
            (s1, l1),
            [(s2, l2), (s3, l3)],
            "weight and bias must have the input's last dimension",
        )?;
        let (eps, center) = (self.eps, self.center);
        let mut y = vec![0f32; x.len()];
        let per = rows_task_len(d, CHUNK);
        crate::quant::for_each_chunk_mut(&mut y, per, &|i, out| {
            let at = i * per;
            for (xr, yr) in x[at..at + out.len()].chunks(d).zip(out.chunks_mut(d)) {
                let (mean, rstd) = moments(xr, eps, center);
                for (((o, &v), &wv), &bv) in yr.iter_mut().zip(xr).zip(w).zip(b) {
                    *o = (v - mean) * rstd * wv + bv;
                }
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = w.elem_count();
        let n = x.elem_count();
        let packed = x.contiguous()?.apply_op3_no_bwd(
            &w.contiguous()?,
            &grad.contiguous()?,
            &LayerNormGrad {
                eps: self.eps,
                center: self.center,
            },
        )?;
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let dw = packed.narrow(0, n, d)?.reshape(w.shape())?;
        let db = packed.narrow(0, n + d, d)?.reshape(w.shape())?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// The backward pass of `LayerNormOp`: `(x, weight, g)` → `[dx, dweight, dbias]` packed
/// in one vector (`x.len() + 2d` values). Per row, with x̂ the normalized row and
/// `gy = g · weight`: `dx = rstd · (gy − mean(gy) − x̂ · mean(gy · x̂))`; the weight's and
/// bias's gradients are `Σ g · x̂` and `Σ g` over the rows. Uncentred (RMSNorm), the
/// `mean(gy)` term is not there.
#[derive(Debug, Clone, Copy)]
struct LayerNormGrad {
    eps: f32,
    center: bool,
}

impl CustomOp3 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "layer-norm-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w, g) = (
            f32_slice("layer-norm", s1, l1)?,
            f32_slice("layer-norm", s2, l2)?,
            f32_slice("layer-norm", s3, l3)?,
        );
        let d = w.len();
        if d == 0 || !x.len().is_multiple_of(d) || g.len() != x.len() {
            return Err(op_error(
                "layer-norm",
                "the gradient must have the input's shape",
            ));
        }
        let (eps, center) = (self.eps, self.center);
        let per = rows_task_len(d, CHUNK);
        let mut out = vec![0f32; x.len() + 2 * d];
        let (dx, sums) = out.split_at_mut(x.len());
        let tasks = x.len().div_ceil(per);
        // Each task's share of Σ g · x̂ and Σ g, added up in task order afterwards.
        let partial: Vec<Mutex<Vec<f32>>> = (0..tasks).map(|_| Mutex::new(Vec::new())).collect();
        crate::quant::for_each_chunk_mut(dx, per, &|i, out| {
            let at = i * per;
            let mut acc = vec![0f32; 2 * d];
            let (dw, db) = acc.split_at_mut(d);
            let mut xhat = vec![0f32; d];
            for ((xr, gr), dxr) in x[at..at + out.len()]
                .chunks(d)
                .zip(g[at..at + out.len()].chunks(d))
                .zip(out.chunks_mut(d))
            {
                let (mean, rstd) = moments(xr, eps, center);
                let (mut sum_gy, mut sum_gy_xhat) = (0f32, 0f32);
                for j in 0..d {
                    xhat[j] = (xr[j] - mean) * rstd;
                    let gy = gr[j] * w[j];
                    sum_gy += gy;
                    sum_gy_xhat += gy * xhat[j];
                    dw[j] += gr[j] * xhat[j];
                    db[j] += gr[j];
                }
                let m1 = if center { sum_gy / d as f32 } else { 0.0 };
                let m2 = sum_gy_xhat / d as f32;
                for j in 0..d {
                    dxr[j] = rstd * (gr[j] * w[j] - m1 - xhat[j] * m2);
                }
            }
            if let Ok(mut p) = partial[i].lock() {
                *p = acc;
            }
        });
        for p in &partial {
            if let Ok(p) = p.lock() {
                for (s, v) in sums.iter_mut().zip(p.iter()) {
                    *s += v;
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(x.len() + 2 * d)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    /// The composite LayerNorm (RMSNorm uncentred) that autograd differentiates op by op.
    fn composite(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64, center: bool) -> Tensor {
        let xc = if center {
            x.broadcast_sub(&x.mean_keepdim(D::Minus1).unwrap())
                .unwrap()
        } else {
            x.clone()
        };
        let var = xc.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        xc.broadcast_div(&(var + eps).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(w)
            .unwrap()
            .broadcast_add(b)
            .unwrap()
    }

    #[test]
    fn forward_and_gradients_equal_the_composite_form() {
        check(true);
        check(false);
    }

    fn check(center: bool) {
        let dev = Device::Cpu;
        let (rows, d) = (97, 384); // several tasks, a ragged last one
        let vals = |n: usize, k: f32| -> Vec<f32> {
            (0..n).map(|i| (i as f32 * k).sin() * 2.0 + 0.3).collect()
        };
        let x = Var::from_vec(vals(rows * d, 0.37), (rows, d), &dev).unwrap();
        let w = Var::from_vec(vals(d, 0.11), d, &dev).unwrap();
        let b = Var::from_vec(vals(d, 0.07), d, &dev).unwrap();
        let g = Tensor::from_vec(vals(rows * d, 0.013), (rows, d), &dev).unwrap();
        let eps = 1e-12;
        let run = |fused: bool| {
            let y = if fused {
                x.as_tensor()
                    .apply_op3(
                        w.as_tensor(),
                        b.as_tensor(),
                        LayerNormOp {
                            eps: eps as f32,
                            center,
                        },
                    )
                    .unwrap()
            } else {
                composite(x.as_tensor(), w.as_tensor(), b.as_tensor(), eps, center)
            };
            let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
            let get = |v: &Var| -> Vec<f32> {
                grads
                    .get(v.as_tensor())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            };
            (
                y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                get(&x),
                get(&w),
                get(&b),
            )
        };
        let (ours, want) = (run(true), run(false));
        let close = |a: &[f32], b: &[f32], tol: f32, what: &str| {
            assert_eq!(a.len(), b.len());
            for (i, (p, q)) in a.iter().zip(b).enumerate() {
                assert!(
                    (p - q).abs() <= tol * q.abs().max(1.0),
                    "{what}[{i}]: {p} vs {q}"
                );
            }
        };
        close(&ours.0, &want.0, 1e-5, "y");
        close(&ours.1, &want.1, 1e-4, "dx");
        close(&ours.2, &want.2, 1e-4, "dweight");
        close(&ours.3, &want.3, 1e-4, "dbias");
    }
}
