//! Prompts through attention on the CPU: each task takes a block of one head's queries,
//! multiplies it by the keys those queries can see (a GEMM), takes the softmax of each row
//! over its visible keys and multiplies by the values (a second GEMM), writing straight
//! into the output. Through candle the scores covered every key for every query (half of
//! them masked on a causal prompt), with a mask added, a softmax and a transposed copy,
//! each a new tensor.

use std::ops::Range;

use crate::attention_cpu::View;
use crate::quant::matmul_strided;

/// Queries per task: blocks along the diagonal waste little on masked keys, and a block's
/// scores (32 × keys) stay in cache.
const QUERY_BLOCK: usize = 32;

/// The shapes of one call.
pub(crate) struct Dims {
    pub b: usize,
    pub heads: usize,
    pub kv_heads: usize,
    /// Query positions (the keys each sees come from `seen`).
    pub t: usize,
    pub d: usize,
}

/// `(b, t, heads · d)`: `softmax(scale · q kᵀ) v` over the keys each query sees,
/// `seen(batch row, query) → key slots` (a range that is never empty).
pub(crate) fn attend(
    q: &View<'_>,
    k: &View<'_>,
    v: &View<'_>,
    n: &Dims,
    scale: f32,
    seen: &(dyn Fn(usize, usize) -> Range<usize> + Sync),
) -> Vec<f32> {
    let (heads, t, d) = (n.heads, n.t, n.d);
    let n_rep = heads / n.kv_heads;
    let blocks = t.div_ceil(QUERY_BLOCK);
    // Task `i` is query block `i % blocks` of head `i / blocks % heads` of batch row
    // `i / (heads · blocks)`.
    let split = |task: usize| {
        (
            task / (heads * blocks),
            task / blocks % heads,
            task % blocks,
        )
    };
    let run = |task: usize| -> Vec<f32> {
        let (row, head, block) = split(task);
        let kv = head / n_rep;
        let queries = block * QUERY_BLOCK..((block + 1) * QUERY_BLOCK).min(t);
        let m = queries.len();
        let seen: Vec<Range<usize>> = queries.clone().map(|i| seen(row, i)).collect();
        // The keys any query of the block sees.
        let first = seen.iter().map(|r| r.start).min().unwrap_or(0);
        let keys = first..seen.iter().map(|r| r.end).max().unwrap_or(first);
        let nk = keys.len();
        let (qs, ks, vs) = (q.row_stride(), k.row_stride(), v.row_stride());
        let none = gemm::Parallelism::None;
        // q (m, d) · kᵀ: key `j`'s element `i` at `i + j · ks`.
        let q_rows = q.rows(row, head, queries.start, m, d);
        let k_rows = k.rows(row, kv, keys.start, nk, d);
        let mut scores = matmul_strided([m, d, nk], (q_rows, qs), (k_rows, 1, ks), none);
        for (s, range) in scores.chunks_exact_mut(nk).zip(&seen) {
            let (lo, hi) = (range.start - first, range.end - first);
            crate::vec_math::softmax_scaled(&mut s[lo..hi], scale);
            s[..lo].fill(0.0);
            s[hi..].fill(0.0);
        }
        let v_rows = v.rows(row, kv, keys.start, nk, d);
        matmul_strided([m, nk, d], (&scores, nk), (v_rows, vs, 1), none)
    };
    let tasks = n.b * heads * blocks;
    let parts = crate::quant::map_tasks(tasks, &run);
    let mut y = vec![0f32; n.b * t * heads * d];
    for (task, part) in parts.iter().enumerate() {
        let (row, head, block) = split(task);
        for (ii, o) in part.chunks_exact(d).enumerate() {
            let i = block * QUERY_BLOCK + ii;
            let at = ((row * t + i) * heads + head) * d;
            y[at..at + d].copy_from_slice(o);
        }
    }
    y
}
