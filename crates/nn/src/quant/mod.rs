//! Quantized GGUF matrices on the CPU, multiplied by our own driver: activations quantized
//! once per call, output rows spread over a persistent spinning pool (`pool.rs`), each
//! row's dot products computed by the fastest kernel we have for its block type. Matrices
//! whose rows come in bands of eight are repacked at load with eight rows interleaved
//! (Q4_0, Q5_0, Q8_0: `interleaved.rs`; Q4_K, Q5_K, Q6_K: `interleaved_k.rs`); other row
//! counts use row-by-row kernels (Q5_0, Q8_0: `blocks32.rs`) or candle's (the rest).
//!
//! candle 0.11's own `QMatMul` runs Q5_0 through a scalar loop and spawns work per call;
//! on the Qwen2.5-Coder GGUF (mostly Q5_0) that was ~70 % of the decode time.

mod blocks32;
mod dense;
mod interleaved;
mod interleaved_k;
pub(crate) mod pool;
mod quantize;

use candle_core::quantized::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_1, BlockQ6K, BlockQ8K,
    BlockQ8_1, GgmlType,
};
use candle_core::quantized::GgmlDType;
use std::ops::Range;

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
pub(crate) use blocks32::has_avx2;
pub use blocks32::{BlockQ5_0, BlockQ8, BlockQ8_0};
pub(crate) use dense::{dense_matmul, matmul_strided};
use interleaved::{GroupQ4_0, GroupQ5_0, GroupQ8_0, Interleaved};
use interleaved_k::{GroupQ4K, GroupQ5K, GroupQ6K, InterleavedK};
pub(crate) use pool::{for_each_chunk_mut, for_each_task, map_tasks};
pub use pool::{install, num_threads, set_num_threads};
pub use quantize::{
    dequantize_f32, parse_quant_type, quant_type_name, quantize_f32, storage_type, QUANT_TYPE_NAMES,
};

/// Input rows from which `prefers_dense` says yes.
const DENSE_MIN_ROWS: usize = 16;
/// The largest f32 copy of a matrix made for a dense GEMM.
const DENSE_MAX_BYTES: usize = 64 << 20;

/// Inputs this small are quantized on the calling thread (a parallel loop costs more).
const PARALLEL_QUANTIZE_ROWS: usize = 8;

thread_local! {
    /// Set by `rows_alone` while the calling thread runs a forward pass.
    static ROWS_ALONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` (a forward pass, on this thread) with every quantized matrix product giving
/// each input row the bits it gets alone: no dense GEMM for many rows, only the row-exact
/// kernels (`a_row_gives_the_same_bits_in_any_batch`). A serving engine's decode steps
/// use it so that a sequence's tokens do not depend on what else is in the batch.
pub fn rows_alone<R>(f: impl FnOnce() -> R) -> R {
    let before = ROWS_ALONE.with(|c| c.replace(true));
    let out = f();
    ROWS_ALONE.with(|c| c.set(before));
    out
}

/// An input quantized by `QuantRows::prepare` (its type is the matrix type's business).
type Prepared = Box<dyn std::any::Any + Send + Sync>;

/// The rows of a quantized matrix, with the operations a layer needs.
trait QuantRows: Send + Sync + std::fmt::Debug {
    /// The input `x (m, k)` quantized for this type's dot products.
    fn prepare(&self, x: &[f32], m: usize, k: usize) -> Prepared;
    /// The type `prepare` returns: matrices that agree on it share one quantized input
    /// (the block type does not decide it: Q4_K rows in bands of eight take other
    /// activations than Q4_K rows multiplied by candle).
    fn input_type(&self) -> std::any::TypeId;
    /// The dot products of matrix rows `rows` with every prepared input row, written into
    /// `out` (the columns `rows` of every input row's output).
    fn dots(
        &self,
        rows: Range<usize>,
        k: usize,
        m: usize,
        input: &Prepared,
        out: &mut OutColumns<'_>,
    );
    /// Row `row` (of `k` values) expanded to f32.
    fn row_to_f32(&self, row: usize, k: usize, out: &mut [f32]);
    /// Whether a prompt's many rows are better multiplied by expanding the matrix to f32
    /// and running a dense GEMM than by this type's 8-bit kernel.
    fn dense_for_prompts(&self) -> bool {
        true
    }
}

/// A GGUF matrix of `rows × cols` in its block type.
#[derive(Debug)]
pub struct QuantMatrix {
    rows: usize,
    cols: usize,
    dtype: GgmlDType,
    data: Box<dyn QuantRows>,
}

impl QuantMatrix {
    /// Whether this driver handles the block type (the quantized ones).
    pub fn supports(dtype: GgmlDType) -> bool {
        !matches!(dtype, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)
    }

    /// From the blocks of a GGUF tensor (`rows × cols`, each row `cols / block` blocks).
    /// `None` for an unsupported block type or a size that does not match.
    pub fn from_bytes(dtype: GgmlDType, rows: usize, cols: usize, bytes: &[u8]) -> Option<Self> {
        Self::read(dtype, rows, cols, |buf| {
            if buf.len() == bytes.len() {
                buf.copy_from_slice(bytes);
                Ok(())
            } else {
                Err(std::io::Error::other("size mismatch"))
            }
        })
        .ok()
        .flatten()
    }

    /// Like `from_bytes`, with `fill` writing the tensor's bytes straight into the block
    /// storage (no second copy of large tensors while loading).
    pub fn read(
        dtype: GgmlDType,
        rows: usize,
        cols: usize,
        fill: impl FnOnce(&mut [u8]) -> std::io::Result<()>,
    ) -> std::io::Result<Option<Self>> {
        let block = dtype.block_size();
        if !Self::supports(dtype) || !cols.is_multiple_of(block) {
            return Ok(None);
        }
        let size = rows * (cols / block) * dtype.type_size();
        let blocks = cols / block;
        let data: Box<dyn QuantRows> = match dtype {
            // Whole bands of eight rows: interleaved for the eight-row kernels.
            GgmlDType::Q5_0 if rows.is_multiple_of(8) => Box::new(
                Interleaved::<GroupQ5_0>::repack(read_blocks(size, fill)?, blocks),
            ),
            GgmlDType::Q4_0 if rows.is_multiple_of(8) => Box::new(
                Interleaved::<GroupQ4_0>::repack(read_blocks(size, fill)?, blocks),
            ),
            GgmlDType::Q8_0 if rows.is_multiple_of(8) => Box::new(
                Interleaved::<GroupQ8_0>::repack(read_blocks(size, fill)?, blocks),
            ),
            GgmlDType::Q4K if rows.is_multiple_of(8) => Box::new(InterleavedK::<GroupQ4K>::repack(
                read_blocks(size, fill)?,
                blocks,
            )),
            GgmlDType::Q5K if rows.is_multiple_of(8) => Box::new(InterleavedK::<GroupQ5K>::repack(
                read_blocks(size, fill)?,
                blocks,
            )),
            GgmlDType::Q6K if rows.is_multiple_of(8) => Box::new(InterleavedK::<GroupQ6K>::repack(
                read_blocks(size, fill)?,
                blocks,
            )),
            GgmlDType::Q5_0 => Box::new(blocks32::Rows32::<BlockQ5_0>(read_blocks(size, fill)?)),
            GgmlDType::Q4_0 => Box::new(CandleRows::<BlockQ4_0>(read_blocks(size, fill)?)),
            GgmlDType::Q4_1 => Box::new(CandleRows::<BlockQ4_1>(read_blocks(size, fill)?)),
            GgmlDType::Q5_1 => Box::new(CandleRows::<BlockQ5_1>(read_blocks(size, fill)?)),
            GgmlDType::Q8_0 => Box::new(blocks32::Rows32::<BlockQ8_0>(read_blocks(size, fill)?)),
            GgmlDType::Q8_1 => Box::new(CandleRows::<BlockQ8_1>(read_blocks(size, fill)?)),
            GgmlDType::Q2K => Box::new(CandleRows::<BlockQ2K>(read_blocks(size, fill)?)),
            GgmlDType::Q3K => Box::new(CandleRows::<BlockQ3K>(read_blocks(size, fill)?)),
            GgmlDType::Q4K => Box::new(CandleRows::<BlockQ4K>(read_blocks(size, fill)?)),
            GgmlDType::Q5K => Box::new(CandleRows::<BlockQ5K>(read_blocks(size, fill)?)),
            GgmlDType::Q6K => Box::new(CandleRows::<BlockQ6K>(read_blocks(size, fill)?)),
            GgmlDType::Q8K => Box::new(CandleRows::<BlockQ8K>(read_blocks(size, fill)?)),
            _ => return Ok(None),
        };
        Ok(Some(Self {
            rows,
            cols,
            dtype,
            data,
        }))
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn dtype(&self) -> GgmlDType {
        self.dtype
    }

    /// `x (m, cols)` row-major → `(m, rows)`: each input row times every matrix row, with
    /// the activations quantized to 8 bits (as llama.cpp).
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        Self::matmul_many(&[self], x, m).pop().unwrap_or_default()
    }

    /// `matmul` of several matrices taking the same input (q, k and v; gate and up) in one
    /// parallel loop: one start and one finish of the pool instead of one per matrix.
    pub fn matmul_many(mats: &[&QuantMatrix], x: &[f32], m: usize) -> Vec<Vec<f32>> {
        let Some(first) = mats.first() else {
            return Vec::new();
        };
        let k = first.cols;
        debug_assert!(mats.iter().all(|q| q.cols == k) && x.len() == m * k);
        // One quantized input per activation type.
        let mut inputs: Vec<(std::any::TypeId, Prepared)> = Vec::new();
        let which: Vec<usize> = mats
            .iter()
            .map(|q| {
                let kind = q.data.input_type();
                match inputs.iter().position(|(t, _)| *t == kind) {
                    Some(i) => i,
                    None => {
                        inputs.push((kind, q.data.prepare(x, m, k)));
                        inputs.len() - 1
                    }
                }
            })
            .collect();
        let total: usize = mats.iter().map(|q| q.rows).sum();
        let threads = num_threads();
        // Several chunks per thread balance the load; chunks of at least 16 rows keep the
        // scheduling cost small next to the work, and whole bands of 8 rows suit the
        // interleaved layouts.
        let chunk = total.div_ceil(threads * 4).max(16).next_multiple_of(8);
        let tasks: Vec<(usize, Range<usize>)> = mats
            .iter()
            .enumerate()
            .flat_map(|(a, q)| {
                (0..q.rows.div_ceil(chunk))
                    .map(move |c| (a, c * chunk..((c + 1) * chunk).min(q.rows)))
            })
            .collect();
        // Each task's kernels write its columns of every input row straight into the
        // outputs, in parallel (with 16 rows through a 150k-row output head, a serial copy
        // afterwards was ~5 % of a serving step, zeroing the outputs first ~2 %, and a copy
        // through each task's own vector ~2 %).
        let mut outs: Vec<Vec<f32>> = mats.iter().map(|_| Vec::new()).collect();
        let targets: Vec<Columns> = outs
            .iter_mut()
            .zip(mats)
            .map(|(o, q)| Columns::new(o, m, q.rows))
            .collect();
        pool::for_each_task(tasks.len(), &|t| {
            let (a, rows) = &tasks[t];
            // SAFETY: the tasks' row ranges of one matrix do not overlap.
            #[allow(unsafe_code)]
            let mut out = unsafe { targets[*a].part(rows.clone()) };
            mats[*a]
                .data
                .dots(rows.clone(), k, m, &inputs[which[*a]].1, &mut out);
        });
        for (target, out) in targets.into_iter().zip(&mut outs) {
            target.finish(out);
        }
        outs
    }

    /// The whole matrix in f32, `(rows, cols)` row-major, expanded in parallel.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut w = vec![0f32; self.rows * self.cols];
        self.dequantize_into(&mut w);
        w
    }

    /// `dequantize` into `out` (`rows · cols` values).
    pub fn dequantize_into(&self, out: &mut [f32]) {
        install(|| {
            out.par_chunks_mut(self.cols)
                .enumerate()
                .for_each(|(r, row)| self.data.row_to_f32(r, self.cols, row))
        });
    }

    /// Whether `x (m, cols)` is better multiplied by expanding the matrix to f32 and running
    /// a dense GEMM: with many rows (a prompt) the expansion is paid once for all of them,
    /// and f32 GEMM kernels reuse each weight across rows far better than row-by-row dot
    /// products do (the interleaved types' kernels beat it). Not for matrices whose f32
    /// copy would be large (a 150k-row output head), nor inside `rows_alone`.
    pub fn prefers_dense(&self, m: usize) -> bool {
        m >= DENSE_MIN_ROWS
            && !ROWS_ALONE.with(std::cell::Cell::get)
            && self.rows * self.cols * 4 <= DENSE_MAX_BYTES
            && self.data.dense_for_prompts()
    }

    /// Row `row` expanded to f32 (`cols` values), for embedding lookups.
    pub fn row_to_f32(&self, row: usize, out: &mut [f32]) {
        self.data.row_to_f32(row, self.cols, out);
    }
}

/// `x (m rows)` quantized `block` values at a time by `quantize`: on the calling thread for
/// a few rows, else in parallel on the spinning pool (whose worker is already awake between
/// a step's products; rayon's would have to be woken).
fn quantize_blocks<B: Send + Sync>(
    x: &[f32],
    m: usize,
    block: usize,
    quantize: fn(&[f32]) -> B,
) -> Vec<B> {
    if m < PARALLEL_QUANTIZE_ROWS {
        return x.chunks(block).map(quantize).collect();
    }
    // Each task writes its blocks in place (collecting per-task vectors and joining them
    // was a serial copy, with reallocations, on the forward thread).
    let blocks = x.len().div_ceil(block);
    let per = blocks.div_ceil(2 * num_threads()).max(1);
    let mut out: Vec<B> = Vec::with_capacity(blocks);
    pool::for_each_chunk_mut(&mut out.spare_capacity_mut()[..blocks], per, &|i, chunk| {
        let values = &x[i * per * block..];
        for (slot, v) in chunk.iter_mut().zip(values.chunks(block)) {
            slot.write(quantize(v));
        }
    });
    // SAFETY: every task wrote each slot of its chunk (the chunks cover `..blocks`, and
    // chunk `i` holds blocks `i · per ..`, whose values `x` has); a panic in a task is
    // re-raised by the pool before this point.
    #[allow(unsafe_code)]
    unsafe {
        out.set_len(blocks);
    }
    out
}

/// An `(m, n)` row-major output that parallel tasks fill, each a disjoint range of
/// columns, in a vector's spare capacity: nothing is zeroed first, and the length is set
/// once every value has been written.
struct Columns {
    ptr: *mut f32,
    len: usize,
    n: usize,
    written: std::sync::atomic::AtomicUsize,
}

// SAFETY: tasks write disjoint columns (`QuantMatrix::matmul_many`'s row ranges do not
// overlap), and the buffer outlives them.
#[allow(unsafe_code)]
unsafe impl Sync for Columns {}

impl Columns {
    /// `out` (emptied) made to hold `m · n` values.
    fn new(out: &mut Vec<f32>, m: usize, n: usize) -> Self {
        out.clear();
        out.reserve_exact(m * n);
        Self {
            ptr: out.spare_capacity_mut().as_mut_ptr().cast(),
            len: m * n,
            n,
            written: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The columns `cols` of every row, for one task to write.
    ///
    /// # Safety
    /// No two parts given out at the same time may share a column.
    #[allow(unsafe_code)]
    unsafe fn part(&self, cols: Range<usize>) -> OutColumns<'_> {
        let cols = cols.start.min(self.n)..cols.end.min(self.n);
        OutColumns {
            ptr: self.ptr,
            n: self.n,
            m: self.len / self.n.max(1),
            cols,
            written: 0,
            total: &self.written,
        }
    }

    /// Gives `out` (the vector `new` was given) its values, once every task is done.
    fn finish(self, out: &mut Vec<f32>) {
        let complete = self.written.into_inner() == self.len;
        debug_assert!(complete, "a product's tasks left outputs unwritten");
        // SAFETY: the tasks wrote disjoint values, so `len` of them written means all;
        // otherwise every value is written here (NaN: a result that was never computed),
        // and only then is the length set.
        #[allow(unsafe_code)]
        unsafe {
            if !complete {
                for i in 0..self.len {
                    self.ptr.add(i).write(f32::NAN);
                }
            }
            out.set_len(self.len);
        }
    }
}

/// The columns one task of a product writes, `cols` of each of the `m` input rows' outputs
/// (`n` values a row), with the count of values written, which `Columns::finish` checks.
pub(super) struct OutColumns<'a> {
    ptr: *mut f32,
    n: usize,
    m: usize,
    cols: Range<usize>,
    written: usize,
    total: &'a std::sync::atomic::AtomicUsize,
}

impl OutColumns<'_> {
    /// Input row `i`'s values from column `cols.start + at` on; values outside the part
    /// are not written.
    pub(super) fn set(&mut self, i: usize, at: usize, vals: &[f32]) {
        if i >= self.m || at + vals.len() > self.cols.len() {
            debug_assert!(false, "a write outside the task's columns");
            return;
        }
        // SAFETY: inside row `i` of the `m · n` buffer, in this part's columns, which no
        // other task writes (`Columns::part`); nothing reads the buffer until every task
        // is done.
        #[allow(unsafe_code)]
        unsafe {
            let to = self.ptr.add(i * self.n + self.cols.start + at);
            std::ptr::copy_nonoverlapping(vals.as_ptr(), to, vals.len());
        }
        self.written += vals.len();
    }

    /// A band's values `vals[lanes]` for input row `i` from column `cols.start + at`: a
    /// whole band is one store (a call to memcpy per band and row, as `set` makes, was ~8 %
    /// of a 16-sequence serving step).
    #[inline(always)]
    pub(super) fn set_band(&mut self, i: usize, at: usize, vals: [f32; 8], lanes: Range<usize>) {
        if lanes != (0..8) {
            return self.set(i, at, &vals[lanes]);
        }
        if i >= self.m || at + 8 > self.cols.len() {
            debug_assert!(false, "a write outside the task's columns");
            return;
        }
        // SAFETY: as in `set`.
        #[allow(unsafe_code)]
        unsafe {
            let to = self.ptr.add(i * self.n + self.cols.start + at);
            to.cast::<[f32; 8]>().write_unaligned(vals);
        }
        self.written += 8;
    }

    /// Every value of the part set to `v` (a product that cannot run: NaN).
    pub(super) fn fill(&mut self, v: f32) {
        let row = vec![v; self.cols.len()];
        for i in 0..self.m {
            self.set(i, 0, &row);
        }
    }
}

impl Drop for OutColumns<'_> {
    fn drop(&mut self) {
        self.total
            .fetch_add(self.written, std::sync::atomic::Ordering::Relaxed);
    }
}

/// `size` bytes of blocks, written by `fill` straight into a `Vec<T>` (which keeps the
/// blocks aligned).
pub(crate) fn read_blocks<T>(
    size: usize,
    fill: impl FnOnce(&mut [u8]) -> std::io::Result<()>,
) -> std::io::Result<Vec<T>> {
    let item = std::mem::size_of::<T>();
    if item == 0 || !size.is_multiple_of(item) {
        return Err(std::io::Error::other(format!(
            "{size} bytes are not a whole number of {item}-byte blocks"
        )));
    }
    let n = size / item;
    let mut v: Vec<T> = Vec::with_capacity(n);
    // SAFETY: the allocation holds `n * item` bytes; they are zeroed (a valid value of
    // every block type: `#[repr(C)]` records of integers and halves, for which any bytes
    // are valid) before being viewed as bytes and filled, and only then is the length set.
    #[allow(unsafe_code)]
    unsafe {
        std::ptr::write_bytes(v.as_mut_ptr(), 0, n);
        fill(std::slice::from_raw_parts_mut(
            v.as_mut_ptr().cast::<u8>(),
            size,
        ))?;
        v.set_len(n);
    }
    Ok(v)
}

/// Rows in one of candle's block types, multiplied with candle's `vec_dot` kernel.
struct CandleRows<T>(Vec<T>);

impl<T: GgmlType> std::fmt::Debug for CandleRows<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} rows ({} blocks)", T::DTYPE, self.0.len())
    }
}

impl<T: GgmlType + 'static> QuantRows for CandleRows<T>
where
    T::VecDotType: 'static,
{
    fn prepare(&self, x: &[f32], m: usize, k: usize) -> Prepared {
        let ab = k / T::VecDotType::BLCK_SIZE;
        let mut act = vec![T::VecDotType::zeros(); m * ab];
        if m < PARALLEL_QUANTIZE_ROWS {
            act.chunks_mut(ab)
                .zip(x.chunks(k))
                .for_each(|(a, xr)| T::VecDotType::from_float(xr, a));
        } else {
            install(|| {
                act.par_chunks_mut(ab)
                    .zip(x.par_chunks(k))
                    .for_each(|(a, xr)| T::VecDotType::from_float(xr, a))
            });
        }
        Box::new(act)
    }

    fn input_type(&self) -> std::any::TypeId {
        std::any::TypeId::of::<Vec<T::VecDotType>>()
    }

    fn dots(
        &self,
        rows: Range<usize>,
        k: usize,
        m: usize,
        input: &Prepared,
        out: &mut OutColumns<'_>,
    ) {
        let (wb, ab) = (k / T::BLCK_SIZE, k / T::VecDotType::BLCK_SIZE);
        let Some(act) = input.downcast_ref::<Vec<T::VecDotType>>() else {
            return out.fill(f32::NAN);
        };
        for i in 0..m {
            let row: Vec<f32> = rows
                .clone()
                .map(|j| T::vec_dot(k, &self.0[j * wb..(j + 1) * wb], &act[i * ab..(i + 1) * ab]))
                .collect();
            out.set(i, 0, &row);
        }
    }

    fn row_to_f32(&self, row: usize, k: usize, out: &mut [f32]) {
        let wb = k / T::BLCK_SIZE;
        T::to_float(&self.0[row * wb..(row + 1) * wb], out);
    }
}

/// Uniform in [-1, 1), from a fixed LCG: test data without a test-only dependency.
#[cfg(test)]
pub(crate) fn test_random(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::k_quants::GgmlType;

    /// Random values with a few outliers, as activations and weights have.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|i| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                if i % 37 == 0 {
                    u * 8.0
                } else {
                    u
                }
            })
            .collect()
    }

    /// Quantizes `w (n, k)` with candle into `T` blocks, as raw GGUF bytes.
    fn quantize<T: GgmlType>(w: &[f32]) -> Vec<u8> {
        let mut blocks = vec![T::zeros(); w.len() / T::BLCK_SIZE];
        T::from_float(w, &mut blocks);
        let bytes = std::mem::size_of_val(blocks.as_slice());
        // SAFETY: reading plain-data blocks as their bytes.
        #[allow(unsafe_code)]
        unsafe { std::slice::from_raw_parts(blocks.as_ptr().cast::<u8>(), bytes) }.to_vec()
    }

    /// The straightforward reference: dequantize the weights, multiply in f64.
    fn reference(q: &QuantMatrix, x: &[f32], m: usize) -> Vec<f32> {
        let (n, k) = (q.rows(), q.cols());
        let mut w = vec![0f32; n * k];
        for j in 0..n {
            q.row_to_f32(j, &mut w[j * k..(j + 1) * k]);
        }
        let mut y = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k)
                    .map(|t| f64::from(x[i * k + t]) * f64::from(w[j * k + t]))
                    .sum();
                y[i * n + j] = s as f32;
            }
        }
        y
    }

    /// Our matmul against the reference for a block type, on odd shapes; the only
    /// difference allowed is the 8-bit quantization of the activations.
    fn check(dtype: GgmlDType, bytes_of: fn(&[f32]) -> Vec<u8>, k_unit: usize) {
        // Row counts that are whole bands of 8 (interleaved layouts) and ones that are not;
        // more than 4 input rows (prompts) and fewer.
        let shapes = [
            (1, 1, 1),
            (3, 2, 1),
            (17, 3, 2),
            (33, 5, 3),
            (70, 1, 7),
            (8, 1, 1),
            (16, 3, 5),
            (72, 5, 7),
            (40, 2, 4),
        ];
        check_shapes(dtype, bytes_of, k_unit, &shapes);
    }

    /// `check` on `(rows, blocks per row, input rows)` shapes.
    fn check_shapes(
        dtype: GgmlDType,
        bytes_of: fn(&[f32]) -> Vec<u8>,
        k_unit: usize,
        shapes: &[(usize, usize, usize)],
    ) {
        for &(n, k_blocks, m) in shapes {
            let k = k_blocks * k_unit;
            let w = values(n * k, n as u64 * 31 + k as u64);
            let q = QuantMatrix::from_bytes(dtype, n, k, &bytes_of(&w)).unwrap();
            let x = values(m * k, 7 + m as u64);
            let got = q.matmul(&x, m);
            let want = reference(&q, &x, m);
            let scale: f32 = x.iter().map(|v| v.abs()).fold(0.0, f32::max)
                * (0..n * k)
                    .map(|t| {
                        let mut r = vec![0f32; k];
                        q.row_to_f32(t / k, &mut r);
                        r[t % k].abs()
                    })
                    .fold(0.0, f32::max);
            for (a, b) in got.iter().zip(&want) {
                // Each activation is off by at most half a step of max|x|/127.
                let bound = scale * k as f32 / 127.0 * 0.6 + 1e-4;
                assert!(
                    (a - b).abs() <= bound,
                    "{dtype:?} n={n} k={k} m={m}: {a} vs {b} (bound {bound})"
                );
            }
        }
    }

    #[test]
    fn q5_0_and_q8_0_match_the_reference() {
        check(GgmlDType::Q5_0, blocks32::tests::quantize_q5_0, 32);
        check(
            GgmlDType::Q8_0,
            quantize::<candle_core::quantized::k_quants::BlockQ8_0>,
            32,
        );
    }

    #[test]
    fn candle_block_types_match_the_reference() {
        check(GgmlDType::Q4_0, quantize::<BlockQ4_0>, 32);
        check(GgmlDType::Q4K, quantize::<BlockQ4K>, 256);
        check(GgmlDType::Q5K, quantize::<BlockQ5K>, 256);
        check(GgmlDType::Q6K, quantize::<BlockQ6K>, 256);
    }

    /// Row counts in whole bands of eight: the interleaved k-quant kernels, with every
    /// number of input rows left after groups of four.
    #[test]
    fn interleaved_k_quants_match_the_reference() {
        let shapes = [
            (8, 1, 1),
            (16, 2, 2),
            (8, 3, 3),
            (72, 5, 4),
            (24, 1, 5),
            (16, 4, 6),
            (72, 2, 7),
        ];
        check_shapes(GgmlDType::Q4K, quantize::<BlockQ4K>, 256, &shapes);
        check_shapes(GgmlDType::Q5K, quantize::<BlockQ5K>, 256, &shapes);
        check_shapes(GgmlDType::Q6K, quantize::<BlockQ6K>, 256, &shapes);
    }

    /// A row's output is bit-identical whatever other rows come with it (speculative
    /// decoding verifies draft tokens in batches and must match plain decoding).
    #[test]
    fn a_row_gives_the_same_bits_in_any_batch() {
        let k = 512;
        for (dtype, bytes_of) in [
            (
                GgmlDType::Q4K,
                quantize::<BlockQ4K> as fn(&[f32]) -> Vec<u8>,
            ),
            (GgmlDType::Q5K, quantize::<BlockQ5K>),
            (GgmlDType::Q6K, quantize::<BlockQ6K>),
            (GgmlDType::Q5_0, blocks32::tests::quantize_q5_0),
        ] {
            let q = QuantMatrix::from_bytes(dtype, 40, k, &bytes_of(&values(40 * k, 3))).unwrap();
            let x = values(9 * k, 4);
            let alone: Vec<Vec<f32>> = x.chunks(k).map(|r| q.matmul(r, 1)).collect();
            for m in 2..=9 {
                let y = q.matmul(&x[..m * k], m);
                for (i, row) in y.chunks(40).enumerate() {
                    assert_eq!(row, alone[i].as_slice(), "{dtype:?}: row {i} of {m}");
                }
            }
        }
    }

    #[test]
    fn several_matrices_in_one_loop_equal_each_alone() {
        let k = 256;
        let x = values(3 * k, 5);
        let mats: Vec<QuantMatrix> = [
            (
                GgmlDType::Q5_0,
                40,
                blocks32::tests::quantize_q5_0 as fn(&[f32]) -> Vec<u8>,
            ),
            (GgmlDType::Q4K, 17, quantize::<BlockQ4K>),
            (GgmlDType::Q6K, 24, quantize::<BlockQ6K>),
            (GgmlDType::Q4K, 32, quantize::<BlockQ4K>),
            (GgmlDType::Q5_0, 9, blocks32::tests::quantize_q5_0),
        ]
        .iter()
        .map(|(d, n, q)| QuantMatrix::from_bytes(*d, *n, k, &q(&values(n * k, *n as u64))).unwrap())
        .collect();
        let refs: Vec<&QuantMatrix> = mats.iter().collect();
        let many = QuantMatrix::matmul_many(&refs, &x, 3);
        for (q, y) in mats.iter().zip(&many) {
            assert_eq!(&q.matmul(&x, 3), y);
        }
    }

    #[test]
    fn wrong_sizes_are_refused() {
        assert!(QuantMatrix::from_bytes(GgmlDType::Q8_0, 2, 32, &[0; 34]).is_none());
        assert!(QuantMatrix::from_bytes(GgmlDType::Q8_0, 1, 33, &[0; 34]).is_none());
        assert!(QuantMatrix::from_bytes(GgmlDType::F32, 1, 1, &[0; 4]).is_none());
        // Empty rows are no error (and no panic in the repacking).
        for dtype in [GgmlDType::Q4K, GgmlDType::Q6K, GgmlDType::Q5_0] {
            assert!(QuantMatrix::from_bytes(dtype, 8, 0, &[]).is_some());
        }
    }
}
