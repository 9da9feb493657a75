//! RMSNorm for inference as one op, with the arithmetic of the composite form it replaces
//! (`x / sqrt(mean(x²) + eps) · w` as candle's ops compute it, the sum of squares in
//! candle's AVX order), so that its results keep every bit. The composite form was six
//! ops and five allocations per norm: with 16 decoding sequences, ~1 % of a serving step
//! on the forward thread while the other core waited.
//!
//! f32, contiguous, on CPUs with AVX2 (candle's own sum takes another order elsewhere, and
//! `RmsNorm` keeps the composite form there).

use crate::cpu_op::{rows_and_vectors, rows_task_len};
use candle_core::{CpuStorage, CustomOp2, Layout, Shape};

/// Values per task: large enough that scheduling is noise.
const CHUNK: usize = 1 << 15;

/// `(x (..., d), weight (d)) → x / sqrt(mean(x²) + eps) · weight` on every row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RmsNormInference {
    pub(crate) eps: f64,
}

impl RmsNormInference {
    /// Whether this CPU sums as candle does here (its AVX2 order).
    pub(crate) fn available() -> bool {
        #[cfg(target_arch = "x86_64")]
        return crate::quant::has_avx2();
        #[cfg(not(target_arch = "x86_64"))]
        false
    }
}

impl CustomOp2 for RmsNormInference {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, [w], d) = rows_and_vectors(
            "rms-norm",
            (s1, l1),
            [(s2, l2)],
            "the weight must have the input's last dimension",
        )?;
        // As candle's `mean_keepdim` (a sum times 1/d) and `+ eps` (an affine op) round.
        let scale = (1.0 / d as f64) as f32;
        let eps = self.eps as f32;
        let mut out = vec![0f32; x.len()];
        let per = rows_task_len(d, CHUNK);
        crate::quant::for_each_chunk_mut(&mut out, per, &|i, out| {
            let start = i * per;
            for (o, row) in out.chunks_mut(d).zip(x[start..].chunks(d)) {
                let rms = (sum_of_squares(row) * scale + 0.0) * 1.0 + eps;
                let rms = rms.sqrt();
                for ((o, &v), &wv) in o.iter_mut().zip(row).zip(w) {
                    *o = (v / rms) * wv;
                }
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Σ x² as candle's `x.sqr()` then `sum_keepdim` over a contiguous last dimension: each
/// square rounded, then four 8-lane accumulators over runs of 32, reduced pairwise, the
/// 8 lanes halved and added twice horizontally, and the tail added one by one.
fn sum_of_squares(row: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::quant::has_avx2() {
        // SAFETY: AVX2 checked above.
        #[allow(unsafe_code)]
        return unsafe { avx2_sum_of_squares(row) };
    }
    // Unused: `available()` keeps other CPUs on the composite form.
    row.iter().map(|v| v * v).sum()
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[target_feature(enable = "avx2")]
unsafe fn avx2_sum_of_squares(row: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let k = row.len();
    let np = k & !31;
    // SAFETY: the loads read `row[i + 8j .. i + 8j + 8]` with `i + 32 ≤ np ≤ k`; AVX2 per
    // the caller.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); 4];
        for i in (0..np).step_by(32) {
            for (j, a) in acc.iter_mut().enumerate() {
                let v = _mm256_loadu_ps(row.as_ptr().add(i + 8 * j));
                *a = _mm256_add_ps(*a, _mm256_mul_ps(v, v));
            }
        }
        let a01 = _mm256_add_ps(acc[0], acc[1]);
        let a23 = _mm256_add_ps(acc[2], acc[3]);
        let all = _mm256_add_ps(a01, a23);
        let t0 = _mm_add_ps(_mm256_castps256_ps128(all), _mm256_extractf128_ps::<1>(all));
        let t1 = _mm_hadd_ps(t0, t0);
        let mut sum = _mm_cvtss_f32(_mm_hadd_ps(t1, t1));
        for v in &row[np..] {
            sum += v * v;
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor, D};

    /// The op gives the composite form's bits, for widths with and without a tail.
    #[test]
    fn gives_the_composite_forms_bits() {
        if !RmsNormInference::available() {
            return;
        }
        for d in [7, 32, 64, 100, 896, 1000] {
            let x: Vec<f32> = (0..5 * d)
                .map(|i| ((i * 7919) % 1013) as f32 / 97.0 - 5.0 + (i as f32 * 0.37).sin())
                .collect();
            let w: Vec<f32> = (0..d).map(|i| 0.5 + (i as f32 * 0.11).cos()).collect();
            let x = Tensor::from_vec(x, (5, d), &Device::Cpu).unwrap();
            let w = Tensor::from_vec(w, d, &Device::Cpu).unwrap();
            let eps = 1e-6;
            let var = x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
            let want = x
                .broadcast_div(&(var + eps).unwrap().sqrt().unwrap())
                .unwrap()
                .broadcast_mul(&w)
                .unwrap();
            let got = x.apply_op2_no_bwd(&w, &RmsNormInference { eps }).unwrap();
            let bits = |t: &Tensor| -> Vec<u32> {
                t.flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .into_iter()
                    .map(f32::to_bits)
                    .collect()
            };
            assert_eq!(bits(&got), bits(&want), "width {d}");
        }
    }
}
