//! Attention on the CPU in one pass per (batch row, head): scores, mask, softmax and the
//! weighted sum of values, reading the KV cache buffers in place. Decoding one token this
//! way costs a few microseconds per head; through candle it was two GEMM calls per layer,
//! each asking the system for the CPU count, plus a mask, a softmax and four temporary
//! tensors.
//!
//! f32 only, inference only (no backward): `Attention::forward` uses it for f32 CPU
//! tensors that are not being trained and candle's ops otherwise.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape};

/// The attention of `q (b, heads, t, d)` over `k`, `v (b, kv_heads, total, d)`, giving
/// `(b, t, heads · d)`: query `i` sits at slot `offset + i`.
#[derive(Debug, Clone)]
pub(crate) struct CpuAttention<'a> {
    /// Query slot of the first row of `q` (cached slots before this call).
    pub offset: usize,
    pub scale: f32,
    /// Keys further back than this many slots are hidden.
    pub window: Option<usize>,
    /// Padding slots at the start of each batch row (empty: none).
    pub left_pad: &'a [usize],
}

/// Calls with more queries (prompts) go through GEMMs over blocks of queries
/// (`attention_prompt.rs`), which reuse each key across queries far better than one dot
/// product per pair.
pub(crate) const MAX_QUERIES: usize = 16;

/// Below this many multiply-adds a call runs on the calling thread.
const PARALLEL_MIN_WORK: usize = 1 << 16;

/// A 4-d tensor's storage offset and strides, its last dimension contiguous.
fn strides4(l: &Layout, what: &str) -> candle_core::Result<(usize, [usize; 3])> {
    match l.stride() {
        [s0, s1, s2, 1] => Ok((l.start_offset(), [*s0, *s1, *s2])),
        s => Err(candle_core::Error::Msg(format!(
            "cpu attention: {what} needs 4 dimensions with a contiguous last one, got strides {s:?}"
        ))),
    }
}

impl CustomOp3 for CpuAttention<'_> {
    fn name(&self) -> &'static str {
        "cpu-attention"
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
        let (q, k, v) = f32_qkv(qs, ks, vs)?;
        let (b, heads, t, d) = ql.shape().dims4()?;
        let (kb, kv_heads, total, kd) = kl.shape().dims4()?;
        if kb != b || kd != d || vl.shape() != kl.shape() || kv_heads == 0 {
            return Err(candle_core::Error::Msg(format!(
                "cpu attention: q {:?} does not fit k {:?} / v {:?}",
                ql.shape(),
                kl.shape(),
                vl.shape()
            )));
        }
        if !heads.is_multiple_of(kv_heads) || total != self.offset + t {
            return Err(candle_core::Error::Msg(format!(
                "cpu attention: {heads} heads over {kv_heads} kv heads, {total} keys for \
                 {t} queries after {}",
                self.offset
            )));
        }
        let (q, k, v) = (
            View::new(q, ql, "q")?,
            View::new(k, kl, "k")?,
            View::new(v, vl, "v")?,
        );
        if t > MAX_QUERIES {
            let dims = crate::attention_prompt::Dims {
                b,
                heads,
                kv_heads,
                t,
                d,
            };
            let seen = |row: usize, i: usize| {
                let pad = self.left_pad.get(row).copied().unwrap_or(0);
                visible(self.offset + i, pad, self.window)
            };
            let y = crate::attention_prompt::attend(&q, &k, &v, &dims, self.scale, &seen);
            return Ok((CpuStorage::F32(y), Shape::from((b, t, heads * d))));
        }
        let n_rep = heads / kv_heads;
        // One task per (row, kv head): the query heads sharing a kv head read each key
        // and value once between them.
        let run = |task: usize| -> Vec<f32> {
            let group = Group {
                q: &q,
                k: &k,
                v: &v,
                row: task / kv_heads,
                kv_head: task % kv_heads,
                n_rep,
                t,
                d,
            };
            let pad = self.left_pad.get(group.row).copied().unwrap_or(0);
            group.attend_fastest(self, pad)
        };
        let tasks = b * kv_heads;
        let parts: Vec<Vec<f32>> = if tasks * n_rep * t * total * d < PARALLEL_MIN_WORK {
            (0..tasks).map(run).collect()
        } else {
            crate::quant::map_tasks(tasks, &run)
        };
        // (t, n_rep, d) pieces of each (row, kv head) into (b, t, heads · d).
        let mut y = vec![0f32; b * t * heads * d];
        for (task, part) in parts.iter().enumerate() {
            let (row, g) = (task / kv_heads, task % kv_heads);
            for (i, o) in part.chunks_exact(n_rep * d).enumerate() {
                let at = ((row * t + i) * heads + g * n_rep) * d;
                y[at..at + n_rep * d].copy_from_slice(o);
            }
        }
        Ok((CpuStorage::F32(y), Shape::from((b, t, heads * d))))
    }
}

/// The attention of a packed row (a serving engine's step): `q (1, heads, Σ lens, d)`
/// holds several sequences' queries end to end, sequence `s` has `lens[s]` of them
/// (at most `MAX_QUERIES`) and attends over its own cache's keys and values `kvs[s]`,
/// `(1, kv_heads, slots, d)` views whose last `lens[s]` slots are its queries'. Gives
/// `(1, Σ lens, heads · d)`. One parallel loop over every (sequence, kv head), each the
/// same computation as `CpuAttention` on that sequence alone (so a decoded token gets the
/// bits it gets alone), instead of a small op and a pool wake-up per sequence.
pub(crate) fn packed_attention(
    q: &candle_core::Tensor,
    kvs: &[(candle_core::Tensor, candle_core::Tensor)],
    lens: &[usize],
    scale: f32,
    window: Option<usize>,
) -> candle_core::Result<candle_core::Tensor> {
    use candle_core::Storage;
    let err = |msg: String| candle_core::Error::Msg(format!("packed attention: {msg}"));
    let (qb, heads, total, d) = q.dims4()?;
    if qb != 1 || kvs.len() != lens.len() || lens.iter().sum::<usize>() != total {
        return Err(err(format!(
            "q {:?} with {} caches and lengths {lens:?}",
            q.shape(),
            kvs.len()
        )));
    }
    if let Some(&len) = lens.iter().find(|&&len| len == 0 || len > MAX_QUERIES) {
        return Err(err(format!(
            "a sequence of {len} queries (1 to {MAX_QUERIES})"
        )));
    }
    let (qs, ql) = q.storage_and_layout();
    let guards: Vec<_> = kvs
        .iter()
        .map(|(k, v)| (k.storage_and_layout(), v.storage_and_layout()))
        .collect();
    fn f32s(s: &Storage) -> candle_core::Result<&[f32]> {
        match s {
            Storage::Cpu(CpuStorage::F32(v)) => Ok(v.as_slice()),
            _ => Err(candle_core::Error::Msg(
                "packed attention: q, k and v must be f32 CPU tensors".into(),
            )),
        }
    }
    let qv = View::new(f32s(&qs)?, ql, "q")?;
    let mut views = Vec::with_capacity(kvs.len());
    let (mut kv_heads, mut starts, mut start) = (0, Vec::with_capacity(lens.len()), 0);
    for (((ks, kl), (vs, vl)), &len) in guards.iter().zip(lens) {
        let (kb, kh, slots, kd) = kl.shape().dims4()?;
        if kb != 1 || kd != d || vl.shape() != kl.shape() || kh == 0 || slots < len {
            return Err(err(format!(
                "q {:?} does not fit k {:?} / v {:?}",
                ql.shape(),
                kl.shape(),
                vl.shape()
            )));
        }
        if !heads.is_multiple_of(kh) || (kv_heads != 0 && kh != kv_heads) {
            return Err(err(format!("{heads} heads over {kh} kv heads")));
        }
        kv_heads = kh;
        views.push((
            View::new(f32s(ks)?, kl, "k")?,
            View::new(f32s(vs)?, vl, "v")?,
            slots,
        ));
        starts.push(start);
        start += len;
    }
    let n_rep = heads / kv_heads.max(1);
    // Sequence `s`'s queries: `q` from its first token on (their own `t` rows).
    let queries: Vec<View<'_>> = starts
        .iter()
        .map(|&at| View {
            offset: qv.offset + at * qv.strides[2],
            ..qv
        })
        .collect();
    let run = |task: usize| -> Vec<f32> {
        let (s, kv_head) = (task / kv_heads, task % kv_heads);
        let (k, v, slots) = &views[s];
        let op = CpuAttention {
            offset: slots - lens[s],
            scale,
            window,
            left_pad: &[],
        };
        let group = Group {
            q: &queries[s],
            k,
            v,
            row: 0,
            kv_head,
            n_rep,
            t: lens[s],
            d,
        };
        group.attend_fastest(&op, 0)
    };
    let parts = crate::quant::map_tasks(lens.len() * kv_heads, &run);
    // (t, n_rep, d) pieces of each (sequence, kv head) into (1, Σ lens, heads · d).
    let mut y = vec![0f32; total * heads * d];
    for (task, part) in parts.iter().enumerate() {
        let (s, g) = (task / kv_heads, task % kv_heads);
        for (i, o) in part.chunks_exact(n_rep * d).enumerate() {
            let at = ((starts[s] + i) * heads + g * n_rep) * d;
            y[at..at + n_rep * d].copy_from_slice(o);
        }
    }
    drop((qs, guards));
    candle_core::Tensor::from_vec(y, (1, total, heads * d), q.device())
}

/// An encoder's attention over `q`, `k`, `v (b, heads, t, d)` (last dimension contiguous;
/// transposed views are read in place), giving `(b, t, heads · d)`: every query of batch
/// row `r` sees the keys `keys[r]`, the span its attention mask marks. What
/// `bidirectional_attention` computes (masked keys weigh exactly 0 there too), without the
/// scores tensor, the mask added to it and the transposed copies.
#[derive(Debug, Clone)]
pub(crate) struct BidirectionalCpuAttention {
    pub scale: f32,
    pub keys: Vec<std::ops::Range<usize>>,
}

impl CustomOp3 for BidirectionalCpuAttention {
    fn name(&self) -> &'static str {
        "cpu-bidirectional-attention"
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
        let (q, k, v) = f32_qkv(qs, ks, vs)?;
        // Fewer queries than keys when only some positions' outputs are wanted.
        let (b, heads, t, d) = ql.shape().dims4()?;
        let (kb, kh, keys, kd) = kl.shape().dims4()?;
        if (kb, kh, kd) != (b, heads, d) || vl.shape() != kl.shape() {
            return Err(candle_core::Error::Msg(format!(
                "cpu attention: q {:?}, k {:?} and v {:?} do not fit together",
                ql.shape(),
                kl.shape(),
                vl.shape()
            )));
        }
        if self.keys.len() != b || self.keys.iter().any(|r| r.is_empty() || r.end > keys) {
            return Err(candle_core::Error::Msg(format!(
                "cpu attention: key spans {:?} for {b} rows of {keys} keys",
                self.keys
            )));
        }
        let (q, k, v) = (
            View::new(q, ql, "q")?,
            View::new(k, kl, "k")?,
            View::new(v, vl, "v")?,
        );
        let dims = crate::attention_prompt::Dims {
            b,
            heads,
            kv_heads: heads,
            t,
            d,
        };
        let seen = |row: usize, _query: usize| self.keys[row].clone();
        let y = crate::attention_prompt::attend(&q, &k, &v, &dims, self.scale, &seen);
        Ok((CpuStorage::F32(y), Shape::from((b, t, heads * d))))
    }
}

/// q, k and v's f32 values.
fn f32_qkv<'a>(
    qs: &'a CpuStorage,
    ks: &'a CpuStorage,
    vs: &'a CpuStorage,
) -> candle_core::Result<(&'a [f32], &'a [f32], &'a [f32])> {
    match (qs, ks, vs) {
        (CpuStorage::F32(q), CpuStorage::F32(k), CpuStorage::F32(v)) => Ok((q, k, v)),
        _ => Err(candle_core::Error::Msg(
            "cpu attention: q, k and v must be f32".into(),
        )),
    }
}

/// The key slots query slot `slot` sees: causal, within the window, past the padding (a
/// padding query sees only itself, so its softmax stays finite).
pub(crate) fn visible(slot: usize, pad: usize, window: Option<usize>) -> std::ops::Range<usize> {
    if slot < pad {
        return slot..slot + 1;
    }
    let from_window = window.map_or(0, |w| (slot + 1).saturating_sub(w));
    pad.max(from_window)..slot + 1
}

/// A 4-d f32 tensor read in place.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    data: &'a [f32],
    offset: usize,
    strides: [usize; 3],
}

impl<'a> View<'a> {
    fn new(data: &'a [f32], l: &Layout, what: &str) -> candle_core::Result<Self> {
        let (offset, strides) = strides4(l, what)?;
        Ok(Self {
            data,
            offset,
            strides,
        })
    }

    /// The `d` values at `[a, b, c, ..]`.
    fn row(&self, a: usize, b: usize, c: usize, d: usize) -> &'a [f32] {
        self.rows(a, b, c, 1, d)
    }

    /// The values from `[a, b, c, 0]` to the end of `count ≥ 1` rows of `d` (rows
    /// `row_stride` apart).
    pub(crate) fn rows(&self, a: usize, b: usize, c: usize, count: usize, d: usize) -> &'a [f32] {
        let at = self.offset + a * self.strides[0] + b * self.strides[1] + c * self.strides[2];
        &self.data[at..at + count.saturating_sub(1) * self.strides[2] + d]
    }

    pub(crate) fn row_stride(&self) -> usize {
        self.strides[2]
    }
}

/// The query heads of one batch row sharing one kv head.
struct Group<'a, 'v> {
    q: &'v View<'a>,
    k: &'v View<'a>,
    v: &'v View<'a>,
    row: usize,
    kv_head: usize,
    n_rep: usize,
    t: usize,
    d: usize,
}

impl Group<'_, '_> {
    /// `(t, n_rep, d)`: for each query and head, `softmax(scale · q·k) · v` over the keys
    /// it sees.
    #[inline(always)]
    fn attend<L: lanes::Lanes>(&self, op: &CpuAttention<'_>, pad: usize) -> Vec<f32> {
        let (n_rep, d) = (self.n_rep, self.d);
        let mut out = vec![0f32; self.t * n_rep * d];
        let mut scores = vec![0f32; n_rep * (op.offset + self.t)];
        for (i, o) in out.chunks_exact_mut(n_rep * d).enumerate() {
            let keys = visible(op.offset + i, pad, op.window);
            let n = keys.len();
            let qs: Vec<&[f32]> = (0..n_rep)
                .map(|r| self.q.row(self.row, self.kv_head * n_rep + r, i, d))
                .collect();
            // Head by head: a head's query (and below its output row) stays in registers
            // while the keys stream past; the sums are the ones `dot` and `axpy` make.
            let first = keys.start;
            for (r, qr) in qs.iter().enumerate() {
                let key = |jj: usize| self.k.row(self.row, self.kv_head, first + jj, d);
                L::scaled_dots(qr, key, op.scale, &mut scores[r * n..(r + 1) * n]);
            }
            for s in scores[..n_rep * n].chunks_exact_mut(n) {
                let max = s.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                let mut sum = 0f32;
                for x in s.iter_mut() {
                    *x = (*x - max).exp();
                    sum += *x;
                }
                let inv = 1.0 / sum;
                s.iter_mut().for_each(|x| *x *= inv);
            }
            for (r, or) in o.chunks_exact_mut(d).enumerate() {
                let value = |jj: usize| self.v.row(self.row, self.kv_head, first + jj, d);
                L::weighted_sum(&scores[r * n..(r + 1) * n], value, or);
            }
        }
        out
    }

    /// `attend` with the fastest lanes this CPU has.
    fn attend_fastest(&self, op: &CpuAttention<'_>, pad: usize) -> Vec<f32> {
        #[cfg(target_arch = "x86_64")]
        if lanes::has_avx2() {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            #[allow(unsafe_code)]
            return unsafe { self.attend_avx2(op, pad) };
        }
        self.attend::<lanes::Portable>(op, pad)
    }

    /// `attend` compiled for AVX2 and FMA.
    ///
    /// # Safety
    /// Only on CPUs with AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[allow(unsafe_code)]
    unsafe fn attend_avx2(&self, op: &CpuAttention<'_>, pad: usize) -> Vec<f32> {
        self.attend::<lanes::Avx2>(op, pad)
    }
}

/// Dot products and `y += a·x` over head-sized rows.
mod lanes {
    pub(super) trait Lanes {
        fn dot(a: &[f32], b: &[f32]) -> f32;
        /// `out += a · x`.
        fn axpy(a: f32, x: &[f32], out: &mut [f32]);

        /// `out[j] = dot(q, key(j)) · scale` for every `j < out.len()`.
        #[inline(always)]
        fn scaled_dots<'a>(
            q: &[f32],
            key: impl Fn(usize) -> &'a [f32],
            scale: f32,
            out: &mut [f32],
        ) {
            scaled_dots_each::<Self>(q, key, scale, out);
        }

        /// `axpy(p[j], value(j), out)` for `j = 0, 1, ..`, in that order.
        #[inline(always)]
        fn weighted_sum<'a>(p: &[f32], value: impl Fn(usize) -> &'a [f32], out: &mut [f32]) {
            weighted_sum_each::<Self>(p, value, out);
        }
    }

    /// `Lanes::scaled_dots` one `dot` at a time.
    #[inline(always)]
    fn scaled_dots_each<'a, L: Lanes + ?Sized>(
        q: &[f32],
        key: impl Fn(usize) -> &'a [f32],
        scale: f32,
        out: &mut [f32],
    ) {
        for (j, o) in out.iter_mut().enumerate() {
            *o = L::dot(q, key(j)) * scale;
        }
    }

    /// `Lanes::weighted_sum` one `axpy` at a time.
    #[inline(always)]
    fn weighted_sum_each<'a, L: Lanes + ?Sized>(
        p: &[f32],
        value: impl Fn(usize) -> &'a [f32],
        out: &mut [f32],
    ) {
        for (j, &pj) in p.iter().enumerate() {
            L::axpy(pj, value(j), out);
        }
    }

    pub(super) struct Portable;

    impl Lanes for Portable {
        /// In eight lanes, so that it vectorizes.
        #[inline(always)]
        fn dot(a: &[f32], b: &[f32]) -> f32 {
            let mut lanes = [0f32; 8];
            let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
            let tail: f32 = ac
                .remainder()
                .iter()
                .zip(bc.remainder())
                .map(|(x, y)| x * y)
                .sum();
            for (x, y) in ac.zip(bc) {
                for l in 0..8 {
                    lanes[l] += x[l] * y[l];
                }
            }
            lanes.iter().sum::<f32>() + tail
        }

        #[inline(always)]
        fn axpy(a: f32, x: &[f32], out: &mut [f32]) {
            for (o, v) in out.iter_mut().zip(x) {
                *o += a * v;
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    pub(super) fn has_avx2() -> bool {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }

    /// Only inlined into `attend_avx2` (which has the features).
    #[cfg(target_arch = "x86_64")]
    pub(super) struct Avx2;

    /// The sum of a register's eight lanes: ((0 + 4) + (2 + 6)) + ((1 + 5) + (3 + 7)).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    #[allow(unsafe_code)]
    fn sum8(acc: std::arch::x86_64::__m256) -> f32 {
        use std::arch::x86_64::*;
        // SAFETY: AVX (only inlined into `attend_avx2`, which has AVX2).
        unsafe {
            let quad = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
            let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
            _mm_cvtss_f32(_mm_add_ss(pair, _mm_movehdup_ps(pair)))
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    impl Lanes for Avx2 {
        #[inline(always)]
        fn dot(a: &[f32], b: &[f32]) -> f32 {
            use std::arch::x86_64::*;
            let n = a.len().min(b.len());
            let whole = n - n % 8;
            // SAFETY: AVX2/FMA (this is only inlined into `attend_avx2`); the loads read
            // `c..c + 8` with `c + 8 <= whole <= n`.
            let mut sum = unsafe {
                let mut acc = _mm256_setzero_ps();
                for c in (0..whole).step_by(8) {
                    acc = _mm256_fmadd_ps(
                        _mm256_loadu_ps(a.as_ptr().add(c)),
                        _mm256_loadu_ps(b.as_ptr().add(c)),
                        acc,
                    );
                }
                sum8(acc)
            };
            for c in whole..n {
                sum += a[c] * b[c];
            }
            sum
        }

        /// Heads of 64 (Qwen, Llama 3.2 1B, ...): the query in eight registers across
        /// the keys, each dot product `dot`'s instructions.
        #[inline(always)]
        fn scaled_dots<'a>(
            q: &[f32],
            key: impl Fn(usize) -> &'a [f32],
            scale: f32,
            out: &mut [f32],
        ) {
            use std::arch::x86_64::*;
            let Ok(q) = <&[f32; 64]>::try_from(q) else {
                return scaled_dots_each::<Self>(q, key, scale, out);
            };
            // SAFETY: AVX2/FMA (only inlined into `attend_avx2`); the loads read `q`'s 64
            // values and the 64 of each key, checked by `try_from`.
            unsafe {
                let qv: [__m256; 8] =
                    std::array::from_fn(|c| _mm256_loadu_ps(q.as_ptr().add(8 * c)));
                for (j, o) in out.iter_mut().enumerate() {
                    let Ok(k) = <&[f32; 64]>::try_from(key(j)) else {
                        *o = Self::dot(q, key(j)) * scale;
                        continue;
                    };
                    let mut acc = _mm256_setzero_ps();
                    for (c, qc) in qv.iter().enumerate() {
                        acc = _mm256_fmadd_ps(*qc, _mm256_loadu_ps(k.as_ptr().add(8 * c)), acc);
                    }
                    *o = sum8(acc) * scale;
                }
            }
        }

        /// Heads of 64: the output row in eight registers across the values, each step
        /// `axpy`'s multiply-add.
        #[inline(always)]
        fn weighted_sum<'a>(p: &[f32], value: impl Fn(usize) -> &'a [f32], out: &mut [f32]) {
            use std::arch::x86_64::*;
            if out.len() != 64 {
                return weighted_sum_each::<Self>(p, value, out);
            }
            // SAFETY: AVX2/FMA as above; loads and stores within `out`'s and each value's
            // 64 values.
            unsafe {
                let mut acc: [__m256; 8] =
                    std::array::from_fn(|c| _mm256_loadu_ps(out.as_ptr().add(8 * c)));
                for (j, &pj) in p.iter().enumerate() {
                    let v = value(j);
                    if v.len() < 64 {
                        // Not a head row (cannot happen); the plain path keeps it exact.
                        for (c, a) in acc.iter().enumerate() {
                            _mm256_storeu_ps(out.as_mut_ptr().add(8 * c), *a);
                        }
                        Self::axpy(pj, v, out);
                        acc = std::array::from_fn(|c| _mm256_loadu_ps(out.as_ptr().add(8 * c)));
                        continue;
                    }
                    let pv = _mm256_set1_ps(pj);
                    for (c, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(pv, _mm256_loadu_ps(v.as_ptr().add(8 * c)), *a);
                    }
                }
                for (c, a) in acc.iter().enumerate() {
                    _mm256_storeu_ps(out.as_mut_ptr().add(8 * c), *a);
                }
            }
        }

        #[inline(always)]
        fn axpy(a: f32, x: &[f32], out: &mut [f32]) {
            use std::arch::x86_64::*;
            let n = x.len().min(out.len());
            let whole = n - n % 8;
            // SAFETY: as in `dot`; the stores write `out[c..c + 8]` within `out`.
            unsafe {
                let av = _mm256_set1_ps(a);
                for c in (0..whole).step_by(8) {
                    let o = out.as_mut_ptr().add(c);
                    _mm256_storeu_ps(
                        o,
                        _mm256_fmadd_ps(av, _mm256_loadu_ps(x.as_ptr().add(c)), _mm256_loadu_ps(o)),
                    );
                }
            }
            for c in whole..n {
                out[c] += a * x[c];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn visible_keys_follow_the_mask() {
        assert_eq!(visible(4, 0, None), 0..5);
        assert_eq!(visible(4, 0, Some(3)), 2..5);
        assert_eq!(visible(4, 2, None), 2..5);
        assert_eq!(visible(1, 2, None), 1..2);
    }

    /// The fused op against softmax(q kᵀ · scale + mask) v written with tensor ops: a few
    /// queries (decoding, verifying drafts) and prompts (blocks of queries through GEMMs,
    /// more than one block, a last one partly filled).
    #[test]
    fn equals_the_tensor_formula() {
        check(3, 5, Some(6), [0, 6]);
        check(3, 5, None, [0, 0]);
        check(77, 0, None, [0, 9]);
        check(70, 4, Some(20), [3, 0]);
    }

    fn check(t: usize, offset: usize, window: Option<usize>, pads: [usize; 2]) {
        let dev = Device::Cpu;
        let (b, heads, kv_heads, d) = (2, 4, 2, 12);
        let total = offset + t;
        let q = Tensor::randn(0f32, 1.0, (b, heads, t, d), &dev).unwrap();
        // k and v as views of larger buffers, as the cache hands them out.
        let kbuf = Tensor::randn(0f32, 1.0, (b, kv_heads, total + 4, d), &dev).unwrap();
        let vbuf = Tensor::randn(0f32, 1.0, (b, kv_heads, total + 4, d), &dev).unwrap();
        let (k, v) = (
            kbuf.narrow(2, 0, total).unwrap(),
            vbuf.narrow(2, 0, total).unwrap(),
        );
        let op = CpuAttention {
            offset,
            scale: 0.3,
            window,
            left_pad: &pads,
        };
        let got: Vec<f32> = q
            .apply_op3_no_bwd(&k, &v, &op)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let n_rep = heads / kv_heads;
        let k = k.repeat_interleave_heads(n_rep);
        let v = v.repeat_interleave_heads(n_rep);
        let scores = (q.matmul(&k.t().unwrap()).unwrap() * 0.3).unwrap();
        let mut mask = vec![0f32; b * t * total];
        for (row, &pad) in pads.iter().enumerate() {
            for i in 0..t {
                let seen = visible(offset + i, pad, window);
                for j in 0..total {
                    if !seen.contains(&j) {
                        mask[(row * t + i) * total + j] = f32::NEG_INFINITY;
                    }
                }
            }
        }
        let mask = Tensor::from_vec(mask, (b, 1, t, total), &dev).unwrap();
        let probs =
            candle_nn::ops::softmax_last_dim(&scores.broadcast_add(&mask).unwrap()).unwrap();
        let want: Vec<f32> = probs
            .matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(got.len(), want.len());
        for (a, w) in got.iter().zip(&want) {
            assert!((a - w).abs() < 1e-5, "t {t}, offset {offset}: {a} vs {w}");
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn simd_lanes_equal_portable_ones() {
        use lanes::{Avx2, Lanes, Portable};
        if !lanes::has_avx2() {
            return;
        }
        for n in [1usize, 7, 8, 13, 64, 70] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            #[allow(unsafe_code)]
            let (dot, axpy) = unsafe { simd_ops(&a, &b) };
            assert!((dot - Portable::dot(&a, &b)).abs() < 1e-5, "dot, n = {n}");
            let mut want = b.clone();
            Portable::axpy(0.5, &a, &mut want);
            for (x, y) in axpy.iter().zip(&want) {
                assert!((x - y).abs() < 1e-6, "axpy, n = {n}");
            }
        }

        #[target_feature(enable = "avx2,fma")]
        #[allow(unsafe_code)]
        unsafe fn simd_ops(a: &[f32], b: &[f32]) -> (f32, Vec<f32>) {
            let mut y = b.to_vec();
            Avx2::axpy(0.5, a, &mut y);
            (Avx2::dot(a, b), y)
        }
    }

    trait RepeatHeads {
        fn repeat_interleave_heads(&self, n: usize) -> Tensor;
    }

    impl RepeatHeads for Tensor {
        /// kv head `g` repeated for query heads `g·n .. (g+1)·n`.
        fn repeat_interleave_heads(&self, n: usize) -> Tensor {
            let (b, h, s, d) = self.dims4().unwrap();
            self.unsqueeze(2)
                .unwrap()
                .expand((b, h, n, s, d))
                .unwrap()
                .reshape((b, h * n, s, d))
                .unwrap()
        }
    }
}
