//! Prompts through attention on the CPU: each task takes a block of one head's queries,
//! multiplies it by the keys those queries can see (a GEMM), takes the softmax of each row
//! over its visible keys and multiplies by the values (a second GEMM), writing straight
//! into the output. Through candle the scores covered every key for every query (half of
//! them masked on a causal prompt), with a mask added, a softmax and a transposed copy,
//! each a new tensor.

use crate::attention_cpu::{visible, CpuAttention, View};

/// Queries per task: blocks along the diagonal waste little on masked keys, and a block's
/// scores (32 × keys) stay in cache.
const QUERY_BLOCK: usize = 32;

/// The shapes of one call.
pub(crate) struct Dims {
    pub b: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub t: usize,
    pub d: usize,
}

/// `(b, t, heads · d)`: `softmax(scale · q kᵀ) v` over the keys each query sees.
pub(crate) fn attend(
    op: &CpuAttention<'_>,
    q: &View<'_>,
    k: &View<'_>,
    v: &View<'_>,
    n: &Dims,
) -> Vec<f32> {
    let (heads, t, d) = (n.heads, n.t, n.d);
    let n_rep = heads / n.kv_heads;
    let blocks = t.div_ceil(QUERY_BLOCK);
    let run = |task: usize| -> Vec<f32> {
        let (row, head, block) = (
            task / (heads * blocks),
            task / blocks % heads,
            task % blocks,
        );
        let kv = head / n_rep;
        let pad = op.left_pad.get(row).copied().unwrap_or(0);
        let queries = block * QUERY_BLOCK..((block + 1) * QUERY_BLOCK).min(t);
        let m = queries.len();
        let seen: Vec<std::ops::Range<usize>> = queries
            .clone()
            .map(|i| visible(op.offset + i, pad, op.window))
            .collect();
        // The keys any query of the block sees.
        let first = seen.iter().map(|r| r.start).min().unwrap_or(0);
        let keys = first..seen.iter().map(|r| r.end).max().unwrap_or(first);
        let nk = keys.len();
        let mut scores = vec![0f32; m * nk];
        let (qs, ks, vs) = (q.row_stride(), k.row_stride(), v.row_stride());
        // SAFETY (both calls): each operand is read within its slice (`View::rows` spans
        // exactly the rows read, at the strides passed), and `scores` (m × nk) and `out`
        // (m × d) are written within their lengths.
        #[allow(unsafe_code)]
        unsafe {
            let (qp, kp) = (
                q.rows(row, head, queries.start, m, d),
                k.rows(row, kv, keys.start, nk, d),
            );
            gemm::gemm(
                m,
                nk,
                d,
                scores.as_mut_ptr(),
                1,
                nk as isize,
                false,
                qp.as_ptr(),
                1,
                qs as isize,
                kp.as_ptr(),
                ks as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        for (s, range) in scores.chunks_exact_mut(nk).zip(&seen) {
            let (lo, hi) = (range.start - first, range.end - first);
            crate::vec_math::softmax_scaled(&mut s[lo..hi], op.scale);
            s[..lo].fill(0.0);
            s[hi..].fill(0.0);
        }
        let mut out = vec![0f32; m * d];
        #[allow(unsafe_code)]
        unsafe {
            let vp = v.rows(row, kv, keys.start, nk, d);
            gemm::gemm(
                m,
                d,
                nk,
                out.as_mut_ptr(),
                1,
                d as isize,
                false,
                scores.as_ptr(),
                1,
                nk as isize,
                vp.as_ptr(),
                1,
                vs as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        out
    };
    let tasks = n.b * heads * blocks;
    let parts = crate::quant::map_tasks(tasks, &run);
    let mut y = vec![0f32; n.b * t * heads * d];
    for (task, part) in parts.iter().enumerate() {
        let (row, head, block) = (
            task / (heads * blocks),
            task / blocks % heads,
            task % blocks,
        );
        for (ii, o) in part.chunks_exact(d).enumerate() {
            let i = block * QUERY_BLOCK + ii;
            let at = ((row * t + i) * heads + head) * d;
            y[at..at + d].copy_from_slice(o);
        }
    }
    y
}
