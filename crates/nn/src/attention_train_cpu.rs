//! Attention in training, fused on the CPU (f32): an encoder's (`EncoderAttentionCpu`) and
//! a decoder's causal one with its rotary embedding (`CausalAttentionCpu`), each one op
//! from the q, k and v projections `(b, t, heads · d)` to the heads' outputs, with its own
//! backward pass.
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

/// The gradients of the probabilities `dp` to those of the scores, in place: row by row
/// (`cols` each) through `p = softmax(scale · s)`.
fn softmax_backward(dp: &mut [f32], p: &[f32], cols: usize, scale: f32) {
    for (dp, p) in dp.chunks_exact_mut(cols).zip(p.chunks_exact(cols)) {
        let dot: f32 = dp.iter().zip(p).map(|(a, b)| a * b).sum();
        dp.iter_mut()
            .zip(p)
            .for_each(|(x, p)| *x = scale * p * (*x - dot));
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
            softmax_backward(&mut ds, &p, nk, self.scale);
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

const CAUSAL: &str = "cpu-causal-attention";

/// A decoder's self-attention in training from slot 0 (an empty cache), fused on the CPU
/// (f32): from the q, k and v projections `(b, t, heads · d)`, `(b, t, kv_heads · d)`
/// through the rotary embedding (rotate-half), the causal (and sliding-window) softmax of
/// `scale · q kᵀ`, dropout on the probabilities and the product with `v`, to the heads'
/// outputs `(b, t, heads · d)`, with its own backward pass.
///
/// Through candle the same attention was about twenty graph nodes per layer (reshapes,
/// transposes, the composite rotary embedding, scores, scale, mask, softmax, products),
/// whose kept scores alone were ~15 MB a layer on Qwen 0.5B. Each task takes one kv head
/// of one batch row with the query heads sharing it, so the keys' and values' gradients
/// sum over those heads without locks; the backward pass recomputes the probabilities.
#[derive(Debug, Clone)]
pub(crate) struct CausalAttentionCpu {
    pub heads: usize,
    pub kv_heads: usize,
    pub scale: f32,
    pub window: Option<usize>,
    /// cos and sin of positions `0..t`, `(t, d / 2)` each.
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
    pub drop: Option<DropMask>,
}

/// The shapes of one causal call.
#[derive(Clone, Copy)]
struct CausalDims {
    b: usize,
    t: usize,
    d: usize,
    n_rep: usize,
}

/// One query head's probabilities (after the softmax, before dropout), `(t, t)` with the
/// hidden keys 0, and the dropout factors.
struct HeadProbs {
    p: Vec<f32>,
    drop: Option<Vec<f32>>,
}

impl CausalAttentionCpu {
    fn dims(&self, q: &Shape, k: &Shape, v: &Shape) -> candle_core::Result<CausalDims> {
        let (b, t, w) = q.dims3()?;
        let (kb, kt, kw) = k.dims3()?;
        let fits = self.heads > 0
            && self.kv_heads > 0
            && self.heads.is_multiple_of(self.kv_heads)
            && w.is_multiple_of(self.heads);
        let d = if fits { w / self.heads } else { 0 };
        if !fits || (kb, kt, kw) != (b, t, self.kv_heads * d) || v != k || d % 2 != 0 {
            return Err(op_error(
                CAUSAL,
                &format!(
                    "q {q:?}, k {k:?} and v {v:?} do not fit {} heads over {} kv heads",
                    self.heads, self.kv_heads
                ),
            ));
        }
        if self.cos.len() != t * d / 2 || self.sin.len() != self.cos.len() {
            return Err(op_error(
                CAUSAL,
                &format!("{} angles for {t} positions of {d} dims", self.cos.len()),
            ));
        }
        Ok(CausalDims {
            b,
            t,
            d,
            n_rep: self.heads / self.kv_heads,
        })
    }

    /// Head `head` of batch row `row` of `x (b, t, heads · d)`, rotated: `(t, d)`.
    fn rotated(&self, x: &[f32], heads: usize, n: CausalDims, row: usize, head: usize) -> Vec<f32> {
        let (t, d, half) = (n.t, n.d, n.d / 2);
        let mut y = vec![0f32; t * d];
        for (i, out) in y.chunks_exact_mut(d).enumerate() {
            let at = (row * t + i) * heads * d + head * d;
            let (x1, x2) = x[at..at + d].split_at(half);
            let (c, s) = (&self.cos[i * half..][..half], &self.sin[i * half..][..half]);
            let (o1, o2) = out.split_at_mut(half);
            for j in 0..half {
                o1[j] = x1[j] * c[j] - x2[j] * s[j];
                o2[j] = x2[j] * c[j] + x1[j] * s[j];
            }
        }
        y
    }

    /// The rotation's backward pass in place: `(t, d)` gradients of the rotated values to
    /// those of the inputs (the rotation by the opposite angle).
    fn unrotate(&self, g: &mut [f32], n: CausalDims) {
        let half = n.d / 2;
        for (i, row) in g.chunks_exact_mut(n.d).enumerate() {
            let (c, s) = (&self.cos[i * half..][..half], &self.sin[i * half..][..half]);
            let (g1, g2) = row.split_at_mut(half);
            for j in 0..half {
                let (a, b) = (g1[j], g2[j]);
                g1[j] = a * c[j] + b * s[j];
                g2[j] = b * c[j] - a * s[j];
            }
        }
    }

    /// The keys query `i` sees.
    fn keys(&self, i: usize) -> Range<usize> {
        crate::attention_cpu::visible(i, 0, self.window)
    }

    /// Query head `head`'s (rotated `qr (t, d)`) probabilities over the rotated keys
    /// `kr (t, d)`.
    fn probs(&self, qr: &[f32], kr: &[f32], n: CausalDims, row: usize, head: usize) -> HeadProbs {
        let t = n.t;
        let none = gemm::Parallelism::None;
        let mut p = matmul_strided([t, n.d, t], (qr, n.d), (kr, 1, n.d), none);
        for (i, s) in p.chunks_exact_mut(t).enumerate() {
            let keys = self.keys(i);
            crate::vec_math::softmax_scaled(&mut s[keys.clone()], self.scale);
            s[..keys.start].fill(0.0);
            s[keys.end..].fill(0.0);
        }
        // The factors of the `(b, heads, t, t)` probabilities the tensor ops would drop.
        let drop = self.drop.map(|m| {
            let first = ((row * self.heads + head) * t * t) as u64;
            (0..(t * t) as u64).map(|e| m.at(first + e)).collect()
        });
        HeadProbs { p, drop }
    }
}

/// Writes head `head`'s `(t, d)` block into `out (b, t, heads · d)` at batch row `row`.
fn scatter_head(
    out: &mut [f32],
    block: &[f32],
    heads: usize,
    n: CausalDims,
    row: usize,
    head: usize,
) {
    for (i, src) in block.chunks_exact(n.d).enumerate() {
        let o = (row * n.t + i) * heads * n.d + head * n.d;
        out[o..o + n.d].copy_from_slice(src);
    }
}

impl CustomOp3 for CausalAttentionCpu {
    fn name(&self) -> &'static str {
        CAUSAL
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
            f32_slice(CAUSAL, qs, ql)?,
            f32_slice(CAUSAL, ks, kl)?,
            f32_slice(CAUSAL, vs, vl)?,
        );
        let (t, d) = (n.t, n.d);
        let kvw = self.kv_heads * d;
        let none = gemm::Parallelism::None;
        let outs = map_tasks(n.b * self.kv_heads, &|task| {
            let (row, g) = (task / self.kv_heads, task % self.kv_heads);
            let kr = self.rotated(k, self.kv_heads, n, row, g);
            let v_rows = &v[row * t * kvw + g * d..];
            (0..n.n_rep)
                .map(|r| {
                    let head = g * n.n_rep + r;
                    let qr = self.rotated(q, self.heads, n, row, head);
                    let HeadProbs { mut p, drop } = self.probs(&qr, &kr, n, row, head);
                    if let Some(drop) = drop {
                        p.iter_mut().zip(drop).for_each(|(p, m)| *p *= m);
                    }
                    matmul_strided([t, t, d], (&p, t), (v_rows, kvw, 1), none)
                })
                .collect::<Vec<_>>()
        });
        let mut y = vec![0f32; n.b * t * self.heads * d];
        for (task, heads) in outs.iter().enumerate() {
            let (row, g) = (task / self.kv_heads, task % self.kv_heads);
            for (r, o) in heads.iter().enumerate() {
                scatter_head(&mut y, o, self.heads, n, row, g * n.n_rep + r);
            }
        }
        Ok((CpuStorage::F32(y), Shape::from((n.b, t, self.heads * d))))
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
        let (t, d) = (n.t, n.d);
        let (w, kvw) = (self.heads * d, self.kv_heads * d);
        let none = gemm::Parallelism::None;
        let grads = map_tasks(n.b * self.kv_heads, &|task| {
            let (row, kvh) = (task / self.kv_heads, task % self.kv_heads);
            let kr = self.rotated(&kv, self.kv_heads, n, row, kvh);
            let v_rows = &vv[row * t * kvw + kvh * d..];
            let (mut dkr, mut dv) = (vec![0f32; t * d], vec![0f32; t * d]);
            let mut dqs = Vec::with_capacity(n.n_rep);
            for r in 0..n.n_rep {
                let head = kvh * n.n_rep + r;
                let qr = self.rotated(&qv, self.heads, n, row, head);
                let HeadProbs { p, drop } = self.probs(&qr, &kr, n, row, head);
                let dropped: Vec<f32> = match &drop {
                    Some(m) => p.iter().zip(m).map(|(p, m)| p * m).collect(),
                    None => p.clone(),
                };
                let g_rows = &g[row * t * w + head * d..];
                // dv += dropped(p)ᵀ · g
                let part = matmul_strided(
                    [t, t, d],
                    (&transposed(&dropped, t, t), t),
                    (g_rows, w, 1),
                    none,
                );
                dv.iter_mut().zip(part).for_each(|(a, b)| *a += b);
                // d(dropped p) = g · vᵀ, then through dropout and the softmax (scale folded
                // in; hidden keys have p = 0, so their scores get no gradient).
                let mut ds = matmul_strided([t, d, t], (g_rows, w), (v_rows, 1, kvw), none);
                if let Some(m) = &drop {
                    ds.iter_mut().zip(m).for_each(|(x, m)| *x *= m);
                }
                softmax_backward(&mut ds, &p, t, self.scale);
                let mut dq = matmul_strided([t, t, d], (&ds, t), (&kr, d, 1), none);
                self.unrotate(&mut dq, n);
                dqs.push(dq);
                let part =
                    matmul_strided([t, t, d], (&transposed(&ds, t, t), t), (&qr, d, 1), none);
                dkr.iter_mut().zip(part).for_each(|(a, b)| *a += b);
            }
            self.unrotate(&mut dkr, n);
            (dqs, dkr, dv)
        });
        let mut dq = vec![0f32; n.b * t * w];
        let mut dk = vec![0f32; n.b * t * kvw];
        let mut dv = vec![0f32; n.b * t * kvw];
        for (task, (gq, gk, gv)) in grads.iter().enumerate() {
            let (row, kvh) = (task / self.kv_heads, task % self.kv_heads);
            for (r, gq) in gq.iter().enumerate() {
                scatter_head(&mut dq, gq, self.heads, n, row, kvh * n.n_rep + r);
            }
            scatter_head(&mut dk, gk, self.kv_heads, n, row, kvh);
            scatter_head(&mut dv, gv, self.kv_heads, n, row, kvh);
        }
        let dev = q.device();
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), dev)?),
            Some(Tensor::from_vec(dk, k.shape(), dev)?),
            Some(Tensor::from_vec(dv, v.shape(), dev)?),
        ))
    }
}
