//! An encoder's attention in training, fused on the CPU (f32): one op from the q, k and v
//! projections `(b, t, heads · d)` to the heads' outputs, with its own backward pass.
//!
//! Through candle the same attention was a dozen graph nodes (the heads' reshapes and
//! transposes, scores, scale, mask, softmax, dropout, two products, the output's
//! transpose), and the backward pass added every one's gradient into a fresh zero tensor:
//! on MiniLM more time than the attention's arithmetic. Here each task takes one head of
//! one batch row; the backward pass recomputes its probabilities (cheap next to the
//! projections) instead of keeping them.

use std::ops::Range;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use crate::cpu_op::{f32_slice, op_error};
use crate::dropout::DropMask;
use crate::quant::{map_tasks, matmul_strided};

const NAME: &str = "cpu-encoder-attention";

/// `softmax(scale · q kᵀ)` over each batch row's span of keys (the others weigh 0), dropout
/// on the probabilities, times `v`.
#[derive(Debug, Clone)]
pub(crate) struct EncoderAttentionCpu {
    pub heads: usize,
    pub scale: f32,
    /// Per batch row, the keys its mask marks (never empty).
    pub keys: Vec<Range<usize>>,
    pub drop: Option<DropMask>,
}

/// The shapes of one call: `q (b, tq, heads · d)`, `k`, `v (b, t, heads · d)`.
#[derive(Clone, Copy)]
struct Dims {
    heads: usize,
    tq: usize,
    t: usize,
    d: usize,
}

impl Dims {
    fn width(&self) -> usize {
        self.heads * self.d
    }
}

/// One head of one batch row: its probabilities (after the softmax, before dropout) and
/// the dropout factors, both `(tq, keys)`.
struct Probs {
    p: Vec<f32>,
    drop: Option<Vec<f32>>,
}

impl EncoderAttentionCpu {
    fn dims(&self, q: &Shape, k: &Shape, v: &Shape) -> candle_core::Result<Dims> {
        let (b, tq, w) = q.dims3()?;
        let (kb, t, kw) = k.dims3()?;
        if (kb, kw) != (b, w) || v != k || self.heads == 0 || w % self.heads != 0 {
            return Err(op_error(
                NAME,
                &format!(
                    "q {q:?}, k {k:?} and v {v:?} do not fit {} heads",
                    self.heads
                ),
            ));
        }
        if self.keys.len() != b || self.keys.iter().any(|r| r.is_empty() || r.end > t) {
            return Err(op_error(
                NAME,
                &format!("key spans {:?} for {b} rows of {t} keys", self.keys),
            ));
        }
        Ok(Dims {
            heads: self.heads,
            tq,
            t,
            d: w / self.heads,
        })
    }

    /// Head `head` of batch row `row`'s probabilities over its span of keys.
    fn probs(&self, q: &[f32], k: &[f32], n: Dims, row: usize, head: usize) -> Probs {
        let (w, keys) = (n.width(), &self.keys[row]);
        let nk = keys.len();
        let q_rows = &q[row * n.tq * w + head * n.d..];
        let k_rows = &k[(row * n.t + keys.start) * w + head * n.d..];
        let none = gemm::Parallelism::None;
        let mut p = matmul_strided([n.tq, n.d, nk], (q_rows, w), (k_rows, 1, w), none);
        for s in p.chunks_exact_mut(nk) {
            crate::vec_math::softmax_scaled(s, self.scale);
        }
        // The factors of the `(b, heads, tq, t)` probabilities the tensor ops would drop.
        let drop = self.drop.map(|m| {
            let first = ((row * n.heads + head) * n.tq) * n.t + keys.start;
            (0..n.tq * nk)
                .map(|e| m.at((first + e / nk * n.t + e % nk) as u64))
                .collect()
        });
        Probs { p, drop }
    }
}

/// Writes task `(row, head)`'s `(rows, d)` block into `out (b, rows_per_batch, heads · d)`
/// from row `from` on.
fn scatter(out: &mut [f32], block: &[f32], n: Dims, rows: usize, at: (usize, usize, usize)) {
    let (row, head, from) = at;
    let w = n.width();
    for (i, src) in block.chunks_exact(n.d).enumerate() {
        let o = (row * rows + from + i) * w + head * n.d;
        out[o..o + n.d].copy_from_slice(src);
    }
}

/// `(rows, cols)` → `(cols, rows)`.
fn transposed(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    for (i, r) in x.chunks_exact(cols).enumerate() {
        for (j, &v) in r.iter().enumerate() {
            y[j * rows + i] = v;
        }
    }
    y
}

/// The contiguous f32 values of `t`.
fn values(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.contiguous()?.flatten_all()?.to_vec1::<f32>()
}

impl CustomOp3 for EncoderAttentionCpu {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let n = self.dims(ql.shape(), kl.shape(), vl.shape())?;
        let (q, k, v) = (
            f32_slice(NAME, qs, ql)?,
            f32_slice(NAME, ks, kl)?,
            f32_slice(NAME, vs, vl)?,
        );
        let b = self.keys.len();
        let w = n.width();
        let outs = map_tasks(b * n.heads, &|task| {
            let (row, head) = (task / n.heads, task % n.heads);
            let Probs { mut p, drop } = self.probs(q, k, n, row, head);
            if let Some(drop) = drop {
                p.iter_mut().zip(drop).for_each(|(p, m)| *p *= m);
            }
            let keys = &self.keys[row];
            let v_rows = &v[(row * n.t + keys.start) * w + head * n.d..];
            let none = gemm::Parallelism::None;
            matmul_strided(
                [n.tq, keys.len(), n.d],
                (&p, keys.len()),
                (v_rows, w, 1),
                none,
            )
        });
        let mut y = vec![0f32; b * n.tq * w];
        for (task, o) in outs.iter().enumerate() {
            scatter(&mut y, o, n, n.tq, (task / n.heads, task % n.heads, 0));
        }
        Ok((CpuStorage::F32(y), Shape::from((b, n.tq, w))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let n = self.dims(q.shape(), k.shape(), v.shape())?;
        let (qv, kv, vv, g) = (values(q)?, values(k)?, values(v)?, values(grad)?);
        let b = self.keys.len();
        let w = n.width();
        let none = gemm::Parallelism::None;
        let grads = map_tasks(b * n.heads, &|task| {
            let (row, head) = (task / n.heads, task % n.heads);
            let keys = &self.keys[row];
            let nk = keys.len();
            let Probs { p, drop } = self.probs(&qv, &kv, n, row, head);
            let dropped: Vec<f32> = match &drop {
                Some(m) => p.iter().zip(m).map(|(p, m)| p * m).collect(),
                None => p.clone(),
            };
            let g_rows = &g[row * n.tq * w + head * n.d..];
            let first_key = (row * n.t + keys.start) * w + head * n.d;
            // dv = dropped(p)ᵀ · g
            let dv = matmul_strided(
                [nk, n.tq, n.d],
                (&transposed(&dropped, n.tq, nk), n.tq),
                (g_rows, w, 1),
                none,
            );
            // d(dropped p) = g · vᵀ, then through dropout and the softmax (scale folded in).
            let mut ds =
                matmul_strided([n.tq, n.d, nk], (g_rows, w), (&vv[first_key..], 1, w), none);
            if let Some(m) = &drop {
                ds.iter_mut().zip(m).for_each(|(x, m)| *x *= m);
            }
            for (dp, p) in ds.chunks_exact_mut(nk).zip(p.chunks_exact(nk)) {
                let dot: f32 = dp.iter().zip(p).map(|(a, b)| a * b).sum();
                dp.iter_mut()
                    .zip(p)
                    .for_each(|(x, p)| *x = self.scale * p * (*x - dot));
            }
            let q_rows = &qv[row * n.tq * w + head * n.d..];
            let dq = matmul_strided([n.tq, nk, n.d], (&ds, nk), (&kv[first_key..], w, 1), none);
            let dk = matmul_strided(
                [nk, n.tq, n.d],
                (&transposed(&ds, n.tq, nk), n.tq),
                (q_rows, w, 1),
                none,
            );
            (dq, dk, dv)
        });
        let mut dq = vec![0f32; b * n.tq * w];
        let mut dk = vec![0f32; b * n.t * w];
        let mut dv = vec![0f32; b * n.t * w];
        for (task, (gq, gk, gv)) in grads.iter().enumerate() {
            let (row, head) = (task / n.heads, task % n.heads);
            let first = self.keys[row].start;
            scatter(&mut dq, gq, n, n.tq, (row, head, 0));
            scatter(&mut dk, gk, n, n.t, (row, head, first));
            scatter(&mut dv, gv, n, n.t, (row, head, first));
        }
        let dev = q.device();
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), dev)?),
            Some(Tensor::from_vec(dk, k.shape(), dev)?),
            Some(Tensor::from_vec(dv, v.shape(), dev)?),
        ))
    }
}
