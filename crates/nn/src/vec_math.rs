//! Elementwise math over f32 slices with AVX2 where the CPU has it: the exponential (for
//! softmax and SiLU) to about 1e-7 relative, eight values at a time.

/// `x ← e^(scale · (x − max x))` over the slice, normalized to sum 1 (a softmax of
/// `scale · x`; `scale > 0`).
pub(crate) fn softmax_scaled(x: &mut [f32], scale: f32) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    #[cfg(target_arch = "x86_64")]
    if crate::quant::has_avx2() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        #[allow(unsafe_code)]
        unsafe {
            avx2::softmax_tail(x, scale, max)
        };
        return;
    }
    let mut sum = 0f32;
    for v in x.iter_mut() {
        *v = (scale * (*v - max)).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    x.iter_mut().for_each(|v| *v *= inv);
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    /// The exponentiate-and-normalize part of `softmax_scaled`.
    ///
    /// # Safety
    /// Only on CPUs with AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn softmax_tail(x: &mut [f32], scale: f32, max: f32) {
        let whole = x.len() - x.len() % 8;
        // SAFETY: every load and store is of 8 values below `whole`.
        let mut sum = unsafe {
            let (s, m) = (_mm256_set1_ps(scale), _mm256_set1_ps(max));
            let mut acc = _mm256_setzero_ps();
            for i in (0..whole).step_by(8) {
                let p = x.as_mut_ptr().add(i);
                let e = exp(_mm256_mul_ps(s, _mm256_sub_ps(_mm256_loadu_ps(p), m)));
                _mm256_storeu_ps(p, e);
                acc = _mm256_add_ps(acc, e);
            }
            let quad = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
            let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
            _mm_cvtss_f32(_mm_add_ss(pair, _mm_movehdup_ps(pair)))
        };
        for v in &mut x[whole..] {
            *v = (scale * (*v - max)).exp();
            sum += *v;
        }
        let inv = 1.0 / sum;
        x.iter_mut().for_each(|v| *v *= inv);
    }

    /// e^x to about 1e-7 relative (Cephes' expf polynomial): x = n ln 2 + r with
    /// |r| ≤ ln 2 / 2, e^r by a polynomial, 2^n put in the exponent bits. Clamped to
    /// [-87.3, 88.37], where 2^n stays a normal float (so e^-inf gives about 1e-38, which
    /// a softmax sum or a SiLU treats as 0).
    ///
    /// # Safety
    /// Only on CPUs with AVX2 and FMA (inlined into functions that have them).
    #[inline(always)]
    pub(crate) unsafe fn exp(x: __m256) -> __m256 {
        // SAFETY: AVX2 and FMA per the caller.
        unsafe {
            let x = _mm256_min_ps(
                _mm256_max_ps(x, _mm256_set1_ps(-87.3)),
                _mm256_set1_ps(88.37),
            );
            let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
            );
            // ln 2 in two parts, so that n · ln 2 is subtracted without rounding error.
            let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
            let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
            let mut p = _mm256_set1_ps(1.987_569_1e-4);
            for c in [1.398_2e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
                p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
            }
            let r2 = _mm256_mul_ps(r, r);
            let e = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0));
            let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
                _mm256_cvtps_epi32(n),
                _mm256_set1_epi32(127),
            ));
            _mm256_mul_ps(e, _mm256_castsi256_ps(bits))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_matches_the_scalar_formula() {
        for n in [1usize, 7, 8, 29, 300] {
            let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.7).sin() * 20.0).collect();
            let mut got = x.clone();
            softmax_scaled(&mut got, 0.125);
            let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let e: Vec<f64> = x
                .iter()
                .map(|v| (0.125 * f64::from(v - max)).exp())
                .collect();
            let sum: f64 = e.iter().sum();
            for (a, b) in got.iter().zip(&e) {
                assert!(
                    (f64::from(*a) - b / sum).abs() < 1e-6,
                    "n = {n}: {a} vs {}",
                    b / sum
                );
            }
        }
    }
}
