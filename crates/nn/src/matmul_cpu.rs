//! f32 matrix products on the CPU, split into tasks on the kernels' spinning pool, each task
//! one single-threaded `gemm` call (the crate candle's CPU matmul calls).
//!
//! candle's own matmul hands `gemm` rayon's global pool, while our fused ops (norms, bias,
//! GELU, attention) run on the spinning pool and candle's elementwise ops on its barrier
//! pool: three sets of threads on two cores, each spinning while another works (`perf` on a
//! MiniLM batch: the spinning worker took 11 % of the CPU while the GEMM threads ran).
//! Running the products on the same pool keeps one thread per core.
//!
//! The op is differentiable, and computes only the gradients that are asked for: candle's
//! matmul always computes both, so a frozen weight (LoRA's base, the output head) cost a
//! second full GEMM per layer in every backward pass.

use candle_core::{
    CpuStorage, CudaStorage, CustomOp2, CustomOp3, DType, Layout, MetalStorage, Shape, Tensor,
};

use crate::cpu_op::{f32_slice, op_error};

/// Products below this many multiply-adds run as one task on the calling thread.
const PARALLEL_MIN_MACS: usize = 1 << 16;
/// The smallest share of rows (or columns) a task gets when one matrix is split.
const MIN_ROWS_PER_TASK: usize = 16;
const MIN_COLS_PER_TASK: usize = 48;

/// `a (..., m, k) · b (..., k, n)` with candle's `matmul` semantics (the same batch
/// dimensions on both sides). f32 CPU tensors run on the spinning pool; anything else on
/// candle's matmul.
pub fn matmul(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let fits = a.device().is_cpu()
        && b.device().is_cpu()
        && a.dtype() == DType::F32
        && b.dtype() == DType::F32
        && a.rank() >= 2
        && a.rank() == b.rank()
        && a.dims()[..a.rank() - 2] == b.dims()[..b.rank() - 2]
        && a.dims()[a.rank() - 1] == b.dims()[b.rank() - 2];
    if !fits {
        // candle's matmul runs it, or names what does not match.
        return a.matmul(b);
    }
    // A layout `gemm` cannot read through strides is copied first.
    let readable = |t: &Tensor| match operand(t.layout()) {
        Some(_) => Ok(t.clone()),
        None => t.contiguous(),
    };
    readable(a)?.apply_op2(&readable(b)?, MatMul)
}

/// How `gemm` reads one side: element `(batch, i, j)` at
/// `start + batch · batch_stride + i · row_stride + j · col_stride`.
#[derive(Clone, Copy)]
struct Operand {
    start: usize,
    batch_stride: usize,
    row_stride: usize,
    col_stride: usize,
}

/// `layout` as an `Operand`, when its batch dimensions collapse into one stride.
fn operand(layout: &Layout) -> Option<Operand> {
    let dims = layout.dims();
    let strides = layout.stride();
    let r = dims.len();
    if r < 2 {
        return None;
    }
    // The batch dimensions that are not 1, outermost first: each must step over the
    // next whole.
    let batch: Vec<(usize, usize)> = (0..r - 2)
        .filter(|&i| dims[i] > 1)
        .map(|i| (dims[i], strides[i]))
        .collect();
    for w in batch.windows(2) {
        if w[0].1 != w[1].0 * w[1].1 {
            return None;
        }
    }
    Some(Operand {
        start: layout.start_offset(),
        batch_stride: batch.last().map_or(0, |&(_, s)| s),
        row_stride: strides[r - 2],
        col_stride: strides[r - 1],
    })
}

/// One task: a block of the output of one batch item.
#[derive(Clone, Copy)]
struct Task {
    batch: usize,
    rows: (usize, usize),
    cols: (usize, usize),
}

/// The tasks `(batch, m, n)` splits into for `threads` threads: whole batch items when
/// there are enough of them, else each item's rows or columns (whichever are more) in
/// parts, so that each thread gets a few tasks (a preempted thread's work is taken over by
/// the others).
fn plan(batch: usize, m: usize, n: usize, k: usize, threads: usize) -> Vec<Task> {
    let whole = |b| Task {
        batch: b,
        rows: (0, m),
        cols: (0, n),
    };
    let split_rows = m >= n;
    // Each part packs the whole of the other operand again: cheap when that is the rows'
    // side (a few hundred activation rows against a wide weight), not when it is the
    // weight. MiniLM's embeddings (rows split) ran 9 % faster with two parts per thread
    // than with four; Qwen's LoRA products (columns split) 107 → 141 GFLOP/s with four.
    let target = if split_rows { 2 * threads } else { 4 * threads };
    if threads <= 1 || batch * m * n * k < PARALLEL_MIN_MACS || batch >= target {
        return (0..batch).map(whole).collect();
    }
    let want = target.div_ceil(batch);
    let (len, min) = if split_rows {
        (m, MIN_ROWS_PER_TASK)
    } else {
        (n, MIN_COLS_PER_TASK)
    };
    let parts = want.min(len / min).max(1);
    // Part boundaries on multiples of the kernels' tile (16 rows, 48 columns).
    let step = len.div_ceil(parts).div_ceil(min) * min;
    let mut tasks = Vec::new();
    for b in 0..batch {
        let mut at = 0;
        while at < len {
            let end = (at + step).min(len);
            let mut t = whole(b);
            if split_rows {
                t.rows = (at, end);
            } else {
                t.cols = (at, end);
            }
            tasks.push(t);
            at = end;
        }
    }
    tasks
}

/// `a · b` for `batch` items of `(m, k) · (k, n)`, read through the operands' strides
/// (checked by the caller to stay inside the slices), with `bias (n)` added to every row
/// when given (each task adds it to its block while the block is in cache).
fn product(
    (a, oa): (&[f32], Operand),
    (b, ob): (&[f32], Operand),
    [batch, m, k, n]: [usize; 4],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let tasks = plan(batch, m, n, k, crate::quant::num_threads());
    let mut y: Vec<f32> = Vec::with_capacity(batch * m * n);
    // Raw addresses, so the tasks can share them across threads.
    let (pa, pb, py) = (
        a.as_ptr() as usize,
        b.as_ptr() as usize,
        y.as_mut_ptr() as usize,
    );
    crate::quant::for_each_task(tasks.len(), &|i| {
        let t = tasks[i];
        let (rows, cols) = (t.rows.1 - t.rows.0, t.cols.1 - t.cols.0);
        // SAFETY: every element read is inside `a` and `b` (the callers check); the tasks
        // write disjoint blocks of `y`, which has room for batch·m·n values. With
        // `read_dst` false and alpha 0, `gemm` writes each element of its block without
        // reading it.
        #[allow(unsafe_code)]
        unsafe {
            let a0 = (pa as *const f32)
                .add(oa.start + t.batch * oa.batch_stride + t.rows.0 * oa.row_stride);
            let b0 = (pb as *const f32)
                .add(ob.start + t.batch * ob.batch_stride + t.cols.0 * ob.col_stride);
            let y0 = (py as *mut f32).add(t.batch * m * n + t.rows.0 * n + t.cols.0);
            gemm::gemm(
                rows,
                cols,
                k,
                y0,
                1,
                n as isize,
                false,
                a0,
                oa.col_stride as isize,
                oa.row_stride as isize,
                b0,
                ob.col_stride as isize,
                ob.row_stride as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
            if let Some(bias) = bias {
                let bias = &bias[t.cols.0..t.cols.1];
                for r in 0..rows {
                    let row = std::slice::from_raw_parts_mut(y0.add(r * n), cols);
                    row.iter_mut().zip(bias).for_each(|(y, b)| *y += b);
                }
            }
        }
    });
    // SAFETY: the tasks wrote all batch·m·n values (the blocks tile the output).
    #[allow(unsafe_code)]
    unsafe {
        y.set_len(batch * m * n);
    }
    y
}

struct MatMul;

impl CustomOp2 for MatMul {
    fn name(&self) -> &'static str {
        "matmul-cpu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(a), CpuStorage::F32(b)) = (s1, s2) else {
            return Err(op_error(self.name(), "the inputs must be f32"));
        };
        let (Some(oa), Some(ob)) = (operand(l1), operand(l2)) else {
            return Err(op_error(
                self.name(),
                "a batch layout that does not collapse",
            ));
        };
        let dims = l1.dims();
        let r = dims.len();
        let (m, k, n) = (dims[r - 2], dims[r - 1], l2.dims()[r - 1]);
        let batch: usize = dims[..r - 2].iter().product();
        let mut out_dims = dims.to_vec();
        out_dims[r - 1] = n;
        // The last element each side reads must be inside its storage.
        let reach = |o: &Operand, rows: usize, cols: usize| {
            o.start
                + (batch.max(1) - 1) * o.batch_stride
                + rows.saturating_sub(1) * o.row_stride
                + cols.saturating_sub(1) * o.col_stride
        };
        if batch * m * n == 0 || k == 0 {
            return Ok((
                CpuStorage::F32(vec![0.0; batch * m * n]),
                Shape::from(out_dims),
            ));
        }
        if reach(&oa, m, k) >= a.len() || reach(&ob, k, n) >= b.len() {
            return Err(op_error(
                self.name(),
                "an operand's strides reach past its storage",
            ));
        }
        let y = product((a, oa), (b, ob), [batch, m, k, n], None);
        Ok((CpuStorage::F32(y), Shape::from(out_dims)))
    }

    fn cuda_fwd(
        &self,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        Err(op_error(
            self.name(),
            "CPU only (`matmul` sends other devices to candle's)",
        ))
    }

    fn metal_fwd(
        &self,
        _: &MetalStorage,
        _: &Layout,
        _: &MetalStorage,
        _: &Layout,
    ) -> candle_core::Result<(MetalStorage, Shape)> {
        Err(op_error(
            self.name(),
            "CPU only (`matmul` sends other devices to candle's)",
        ))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // Only the sides that carry gradients: a frozen weight gets none.
        let da = if a.track_op() {
            Some(matmul(grad, &b.t()?)?)
        } else {
            None
        };
        let db = if b.track_op() {
            Some(matmul(&a.t()?, grad)?)
        } else {
            None
        };
        Ok((da, db))
    }
}

/// `x (..., k) · wᵀ (+ bias)` for a dense f32 weight `w (n, k)` on the CPU, as one graph
/// node. candle's way was four (a reshape, the product, a reshape back, the bias), and its
/// backward pass adds each one's gradient into a fresh zero tensor: on MiniLM, a tenth of
/// a training step.
pub(crate) fn linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> candle_core::Result<Tensor> {
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    match bias {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, DenseLinear),
        None => x.apply_op2(&w, DenseLinear),
    }
}

/// `x (m, k) · wᵀ (+ bias)` for `w (n, k)`, both row-major slices of exactly that size.
pub(crate) fn rows_times_transposed(
    x: &[f32],
    w: &[f32],
    [m, k, n]: [usize; 3],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    assert!(
        x.len() == m * k && w.len() == n * k,
        "linear operands of the wrong size"
    );
    // x by rows; wᵀ read through w's rows.
    let oa = Operand {
        start: 0,
        batch_stride: 0,
        row_stride: k,
        col_stride: 1,
    };
    let ob = Operand {
        start: 0,
        batch_stride: 0,
        row_stride: 1,
        col_stride: k,
    };
    product((x, oa), (w, ob), [1, m, k, n], bias)
}

const LINEAR: &str = "linear-cpu";

struct DenseLinear;

impl DenseLinear {
    fn run(
        (xs, xl): (&CpuStorage, &Layout),
        (ws, wl): (&CpuStorage, &Layout),
        bias: Option<(&CpuStorage, &Layout)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w) = (f32_slice(LINEAR, xs, xl)?, f32_slice(LINEAR, ws, wl)?);
        let (n, k) = wl.shape().dims2()?;
        let mut dims = xl.dims().to_vec();
        if dims.last() != Some(&k) {
            return Err(op_error(
                LINEAR,
                &format!("input {dims:?} for a weight of {k} columns"),
            ));
        }
        let bias = match bias {
            Some((bs, bl)) => Some(f32_slice(LINEAR, bs, bl)?),
            None => None,
        };
        if bias.is_some_and(|b| b.len() != n) {
            return Err(op_error(
                LINEAR,
                &format!("a bias that is not of {n} values"),
            ));
        }
        let m = x.len().checked_div(k).unwrap_or(0);
        if let Some(last) = dims.last_mut() {
            *last = n;
        }
        let y = if k == 0 {
            // No products: each row is the bias.
            let row = bias.map_or_else(|| vec![0.0; n], <[f32]>::to_vec);
            let rows: usize = dims[..dims.len() - 1].iter().product();
            row.repeat(rows)
        } else if m * n == 0 {
            Vec::new()
        } else {
            rows_times_transposed(x, w, [m, k, n], bias)
        };
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }

    /// The gradients of `x` and `w` (those tracked) and `grad` as `(rows, n)`.
    fn grads(
        x: &Tensor,
        w: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Tensor)> {
        let (n, k) = w.dims2()?;
        let g = grad.contiguous()?.reshape(((), n))?;
        let dx = if x.track_op() {
            Some(matmul(&g, w)?.reshape(x.shape())?)
        } else {
            None
        };
        let dw = if w.track_op() {
            Some(matmul(&g.t()?, &x.reshape(((), k))?)?)
        } else {
            None
        };
        Ok((dx, dw, g))
    }
}

impl CustomOp2 for DenseLinear {
    fn name(&self) -> &'static str {
        LINEAR
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        Self::run((s1, l1), (s2, l2), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = Self::grads(x, w, grad)?;
        Ok((dx, dw))
    }
}

impl CustomOp3 for DenseLinear {
    fn name(&self) -> &'static str {
        LINEAR
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
        Self::run((s1, l1), (s2, l2), Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, g) = Self::grads(x, w, grad)?;
        let db = if bias.track_op() {
            Some(crate::bias_cpu::column_sums(&g)?.reshape(bias.shape())?)
        } else {
            None
        };
        Ok((dx, dw, db))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::max_diff;
    use candle_core::{Device, Var};

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i + seed) * 7919) % 113) as f32 / 50.0 - 1.0)
            .collect()
    }

    #[test]
    fn plans_tile_the_output_once() {
        for &(batch, m, n, k, threads) in &[
            (1, 512, 1536, 384, 2),
            (1, 512, 384, 1536, 2),
            (1, 37, 1000, 64, 4),
            (3, 100, 20, 64, 2),
            (24, 40, 40, 32, 2),
            (1, 1, 151_936, 896, 2),
            (2, 5, 5, 5, 2),
        ] {
            let mut seen = vec![0u8; batch * m * n];
            for t in plan(batch, m, n, k, threads) {
                for i in t.rows.0..t.rows.1 {
                    for j in t.cols.0..t.cols.1 {
                        seen[t.batch * m * n + i * n + j] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&c| c == 1), "{batch}x{m}x{n}");
        }
    }

    #[test]
    fn equals_candles_matmul_on_strided_and_batched_operands() {
        let d = Device::Cpu;
        // Big enough to be split into tasks; b read through a transposed view.
        let a = Tensor::from_vec(values(3 * 70 * 96, 1), (3, 70, 96), &d).unwrap();
        let bt = Tensor::from_vec(values(3 * 130 * 96, 2), (3, 130, 96), &d).unwrap();
        let b = bt.t().unwrap();
        let ours = matmul(&a, &b).unwrap();
        let theirs = a.matmul(&b.contiguous().unwrap()).unwrap();
        assert!(max_diff(&ours, &theirs) < 1e-4);
        // Four dimensions (attention's batch and heads), a narrowed (offset) lhs.
        let q = Tensor::from_vec(values(2 * 4 * 9 * 16, 3), (2, 4, 9, 16), &d).unwrap();
        let q = q.narrow(2, 1, 7).unwrap();
        let k = Tensor::from_vec(values(2 * 4 * 7 * 16, 4), (2, 4, 7, 16), &d).unwrap();
        let ours = matmul(&q, &k.t().unwrap()).unwrap();
        let theirs = q
            .contiguous()
            .unwrap()
            .matmul(&k.t().unwrap().contiguous().unwrap())
            .unwrap();
        assert_eq!(ours.dims(), &[2, 4, 7, 7]);
        assert!(max_diff(&ours, &theirs) < 1e-5);
        // Mismatched shapes are candle's error, not a panic.
        assert!(matmul(&a, &a).is_err());
    }

    #[test]
    fn gradients_equal_candles_and_skip_frozen_sides() {
        let d = Device::Cpu;
        let x =
            Var::from_tensor(&Tensor::from_vec(values(40 * 64, 5), (40, 64), &d).unwrap()).unwrap();
        let w =
            Var::from_tensor(&Tensor::from_vec(values(80 * 64, 6), (80, 64), &d).unwrap()).unwrap();
        let up = Tensor::from_vec(values(40 * 80, 7), (40, 80), &d).unwrap();
        let loss = |y: Tensor| (y * &up).unwrap().sum_all().unwrap();
        let ours = loss(matmul(x.as_tensor(), &w.as_tensor().t().unwrap()).unwrap())
            .backward()
            .unwrap();
        let theirs = loss(x.as_tensor().matmul(&w.as_tensor().t().unwrap()).unwrap())
            .backward()
            .unwrap();
        for v in [&x, &w] {
            let (g1, g2) = (ours.get(v).unwrap(), theirs.get(v).unwrap());
            assert!(max_diff(g1, g2) < 1e-4);
        }
        // A plain (frozen) weight: only the input's gradient.
        let frozen = w.as_tensor().detach();
        let grads = loss(matmul(x.as_tensor(), &frozen.t().unwrap()).unwrap())
            .backward()
            .unwrap();
        assert!(grads.get(x.as_tensor()).is_some());
        assert!(grads.get(&frozen).is_none());
    }

    /// The one-node linear against candle's broadcast ops: output and every gradient, with
    /// and without a bias, and with a frozen weight (no weight gradient asked for).
    #[test]
    fn linear_equals_candles_ops() {
        let d = Device::Cpu;
        let (b, t, k, n) = (3, 41, 96, 130);
        for (with_bias, frozen) in [(true, false), (false, false), (true, true)] {
            let x = Var::from_vec(values(b * t * k, 1), (b, t, k), &d).unwrap();
            let w = Tensor::from_vec(values(n * k, 2), (n, k), &d).unwrap();
            let w = if frozen {
                w
            } else {
                Var::from_tensor(&w).unwrap().as_tensor().clone()
            };
            let bias = Var::from_vec(values(n, 3), n, &d).unwrap();
            let bias = with_bias.then(|| bias.as_tensor().clone());
            let g = Tensor::from_vec(values(b * t * n, 4), (b, t, n), &d).unwrap();
            let ours = linear(x.as_tensor(), &w, bias.as_ref()).unwrap();
            let mut theirs = x.as_tensor().broadcast_matmul(&w.t().unwrap()).unwrap();
            if let Some(bias) = &bias {
                theirs = theirs.broadcast_add(bias).unwrap();
            }
            assert_eq!(ours.dims(), &[b, t, n]);
            assert!(max_diff(&ours, &theirs) < 1e-4);
            let grads = |y: &Tensor| (y * &g).unwrap().sum_all().unwrap().backward().unwrap();
            let (go, gt) = (grads(&ours), grads(&theirs));
            let mut checked = vec![x.as_tensor().clone()];
            if !frozen {
                checked.push(w.clone());
            } else {
                assert!(go.get(&w).is_none(), "a frozen weight gets no gradient");
            }
            checked.extend(bias.clone());
            for p in &checked {
                let diff = max_diff(go.get(p).unwrap(), gt.get(p).unwrap());
                assert!(diff < 1e-3, "{:?}: {diff}", p.dims());
            }
        }
    }
}
