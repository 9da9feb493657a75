//! Prompts on quantized weights: the matrix expanded to f32 into a buffer reused from one
//! call to the next (a fresh buffer per layer and prompt meant faulting in and zeroing up to
//! 17 MB of new pages each time), then one f32 GEMM over all the prompt's rows: the GEMM
//! candle's CPU matmul runs, with the arguments it passes, so results are the same.

use std::cell::RefCell;

use super::{num_threads, QuantMatrix};

thread_local! {
    /// The expanded weights of the last matrix this thread multiplied.
    static EXPANDED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `x (m, cols)` row-major times the matrix transposed: `(m, rows)` row-major.
pub(crate) fn dense_matmul(q: &QuantMatrix, x: &[f32], m: usize) -> Vec<f32> {
    EXPANDED.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            let size = q.rows() * q.cols();
            if buf.len() < size {
                buf.resize(size, 0.0);
            }
            q.dequantize_into(&mut buf[..size]);
            gemm_xwt(x, &buf[..size], m, q.cols(), q.rows())
        }
        // Called again while the buffer is in use (not the case today): a buffer of its own.
        Err(_) => gemm_xwt(x, &q.dequantize(), m, q.cols(), q.rows()),
    })
}

/// `x (m, k) · w (n, k)ᵀ`, all row-major.
fn gemm_xwt(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let threads = num_threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // wᵀ: element (i, j) is w[j·k + i].
    matmul_strided([m, k, n], (x, k), (w, 1, k), parallelism)
}

/// `a (m, k) · b (k, n)` as a new row-major `(m, n)`, with `gemm`, the crate candle's CPU
/// matmul calls: `a` row-major with row stride `a.1`; `b`'s element `(i, j)` at
/// `b.0[i · b.1 + j · b.2]` (so a transposed or strided view needs no copy). The extents
/// the strides reach are checked against the slices.
pub(crate) fn matmul_strided(
    [m, k, n]: [usize; 3],
    a: (&[f32], usize),
    b: (&[f32], usize, usize),
    parallelism: gemm::Parallelism,
) -> Vec<f32> {
    if m == 0 || k == 0 || n == 0 {
        return vec![0.0; m * n];
    }
    let ((a, a_rs), (b, b_rs, b_cs)) = (a, b);
    assert!(
        (m - 1) * a_rs + k <= a.len() && (k - 1) * b_rs + (n - 1) * b_cs < b.len(),
        "gemm operands too short"
    );
    let mut y: Vec<f32> = Vec::with_capacity(m * n);
    // SAFETY: every element read is inside `a` and `b` (checked above) and `y` has room
    // for m·n (row stride n). With `read_dst` false and alpha 0 the GEMM writes every
    // element of `y` without reading it, so the length is set afterwards.
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            y.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
        y.set_len(m * n);
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_candles_matmul_exactly() {
        use candle_core::{Device, Tensor};
        let (m, k, n) = (19, 64, 37);
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919) % 113) as f32 / 50.0 - 1.0)
            .collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 104_729) % 97) as f32 / 40.0 - 1.2)
            .collect();
        let ours = gemm_xwt(&x, &w, m, k, n);
        let xt = Tensor::from_vec(x, (m, k), &Device::Cpu).unwrap();
        let wt = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
        let theirs: Vec<f32> = xt
            .matmul(&wt.t().unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(ours, theirs);
    }
}
