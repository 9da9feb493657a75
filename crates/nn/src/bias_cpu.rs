//! A linear layer's bias added to each row on the CPU, with a parallel backward pass:
//! the bias's gradient is the column sums of the output's gradient, which candle computes
//! as a strided reduction over the rows on one thread (the largest element-wise cost of a
//! BERT training step after the norms).
//!
//! f32 and contiguous only; `Linear` uses it for f32 CPU tensors and `broadcast_add`
//! otherwise.

use crate::cpu_op::{f32_slice, op_error, rows_and_vectors, rows_task_len};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};

/// Values per task: large enough that scheduling is noise.
const CHUNK: usize = 1 << 15;

/// `(y (..., d), bias (d)) → y + bias` on every row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BiasAdd;

impl CustomOp2 for BiasAdd {
    fn name(&self) -> &'static str {
        "bias-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (y, [b], d) = rows_and_vectors(
            "bias-add",
            (s1, l1),
            [(s2, l2)],
            "the bias must have the output's last dimension",
        )?;
        let mut out = y.to_vec();
        crate::quant::for_each_chunk_mut(&mut out, rows_task_len(d, CHUNK), &|_, out| {
            for row in out.chunks_mut(d) {
                row.iter_mut().zip(b).for_each(|(o, &bv)| *o += bv);
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _y: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let db = column_sums(&grad.reshape(((), bias.elem_count()))?)?.reshape(bias.shape())?;
        Ok((Some(grad.clone()), Some(db)))
    }
}

/// The sums over the rows of `g (rows, d)`: `(d)`.
pub(crate) fn column_sums(g: &Tensor) -> candle_core::Result<Tensor> {
    g.contiguous()?.apply_op1_no_bwd(&ColumnSums(g.dim(1)?))
}

/// The sums over the rows of `g (..., d)`: `(d)`.
#[derive(Debug, Clone, Copy)]
struct ColumnSums(usize);

impl CustomOp1 for ColumnSums {
    fn name(&self) -> &'static str {
        "column-sums"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = f32_slice("bias-add", s, l)?;
        let d = self.0;
        if d == 0 || !g.len().is_multiple_of(d) {
            return Err(op_error(
                "bias-add",
                "the gradient's rows are not of the bias's size",
            ));
        }
        let per = rows_task_len(d, CHUNK);
        let tasks = g.len().div_ceil(per);
        let partial = crate::quant::map_tasks(tasks, &|i| {
            let mut acc = vec![0f32; d];
            for row in g[i * per..((i + 1) * per).min(g.len())].chunks(d) {
                acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
            }
            acc
        });
        let mut sums = vec![0f32; d];
        for p in &partial {
            sums.iter_mut().zip(p).for_each(|(s, v)| *s += v);
        }
        Ok((CpuStorage::F32(sums), Shape::from(d)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn forward_and_gradients_equal_broadcast_add() {
        let dev = Device::Cpu;
        let (b, t, d) = (3, 211, 96);
        let vals =
            |n: usize, k: f32| -> Vec<f32> { (0..n).map(|i| (i as f32 * k).sin()).collect() };
        let run = |fused: bool| {
            let y = Var::from_vec(vals(b * t * d, 0.3), (b, t, d), &dev).unwrap();
            let bias = Var::from_vec(vals(d, 0.7), d, &dev).unwrap();
            let out = if fused {
                y.as_tensor().apply_op2(bias.as_tensor(), BiasAdd).unwrap()
            } else {
                y.as_tensor().broadcast_add(bias.as_tensor()).unwrap()
            };
            let g = Tensor::from_vec(vals(b * t * d, 0.011), (b, t, d), &dev).unwrap();
            let grads = (&out * g).unwrap().sum_all().unwrap().backward().unwrap();
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (
                flat(&out),
                flat(grads.get(y.as_tensor()).unwrap()),
                flat(grads.get(bias.as_tensor()).unwrap()),
            )
        };
        let (ours, want) = (run(true), run(false));
        assert_eq!(ours.0, want.0);
        assert_eq!(ours.1, want.1);
        for (a, b) in ours.2.iter().zip(&want.2) {
            assert!(
                (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                "dbias: {a} vs {b}"
            );
        }
    }
}
