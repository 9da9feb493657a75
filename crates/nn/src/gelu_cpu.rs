//! GELU with the exact erf (BERT's `gelu`) in one parallel pass on the CPU: candle's
//! `gelu_erf` calls a scalar libm `erf` per value on one thread, which took 13 % of a
//! MiniLM embedding run. erf here is Abramowitz & Stegun 7.1.26 (absolute error below
//! 1.5e-7) with the AVX2 exponential.
//!
//! f32 only, inference only (no backward): `Activation::apply` uses it for f32 CPU tensors
//! that are not being trained and candle's op otherwise.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};

/// Values per task: large enough that scheduling is noise.
const CHUNK: usize = 1 << 15;

const P: f32 = 0.327_591_1;
const A: [f32; 5] = [
    0.254_829_6,
    -0.284_496_74,
    1.421_413_7,
    -1.453_152_1,
    1.061_405_4,
];

#[derive(Debug, Clone, Copy)]
pub(crate) struct GeluErf;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "gelu-erf"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(x) = s else {
            return Err(candle_core::Error::Msg(
                "gelu-erf: the input must be f32".into(),
            ));
        };
        let Some((a, b)) = l.contiguous_offsets() else {
            return Err(candle_core::Error::Msg(
                "gelu-erf: the input must be contiguous".into(),
            ));
        };
        let x = &x[a..b];
        let mut y = vec![0f32; x.len()];
        if x.len() <= CHUNK {
            gelu(x, &mut y);
        } else {
            crate::quant::for_each_chunk_mut(&mut y, CHUNK, &|i, out| {
                let at = i * CHUNK;
                gelu(&x[at..at + out.len()], out);
            });
        }
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
}

/// `out = x/2 · (1 + erf(x/√2))`.
fn gelu(x: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::quant::has_avx2() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        #[allow(unsafe_code)]
        unsafe {
            avx2::gelu(x, out)
        };
        return;
    }
    gelu_portable(x, out);
}

fn gelu_portable(x: &[f32], out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        let z = v.abs() * std::f32::consts::FRAC_1_SQRT_2;
        let t = 1.0 / (1.0 + P * z);
        let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
        let erf = (1.0 - poly * (-z * z).exp()).copysign(v);
        *o = 0.5 * v * (1.0 + erf);
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use crate::vec_math::avx2::exp;
    use std::arch::x86_64::*;

    /// # Safety
    /// Only on CPUs with AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gelu(x: &[f32], out: &mut [f32]) {
        let n = out.len().min(x.len());
        let whole = n - n % 8;
        // SAFETY: every load and store is of 8 values below `whole`.
        unsafe {
            let one = _mm256_set1_ps(1.0);
            let sign = _mm256_set1_ps(-0.0);
            for i in (0..whole).step_by(8) {
                let v = _mm256_loadu_ps(x.as_ptr().add(i));
                let z = _mm256_mul_ps(
                    _mm256_andnot_ps(sign, v),
                    _mm256_set1_ps(std::f32::consts::FRAC_1_SQRT_2),
                );
                let t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(super::P), z, one));
                let mut poly = _mm256_set1_ps(super::A[4]);
                for c in [super::A[3], super::A[2], super::A[1], super::A[0]] {
                    poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(c));
                }
                poly = _mm256_mul_ps(poly, t);
                let e = exp(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(z, z)));
                let erf_abs = _mm256_fnmadd_ps(poly, e, one);
                let erf = _mm256_or_ps(erf_abs, _mm256_and_ps(sign, v));
                let y = _mm256_mul_ps(
                    _mm256_mul_ps(_mm256_set1_ps(0.5), v),
                    _mm256_add_ps(one, erf),
                );
                _mm256_storeu_ps(out.as_mut_ptr().add(i), y);
            }
        }
        super::gelu_portable(&x[whole..n], &mut out[whole..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn equals_candles_exact_gelu() {
        let n = 2 * CHUNK + 11;
        let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.618).sin() * 9.0).collect();
        let t = Tensor::from_vec(x.clone(), (n,), &Device::Cpu).unwrap();
        let ours: Vec<f32> = t.apply_op1_no_bwd(&GeluErf).unwrap().to_vec1().unwrap();
        let want: Vec<f32> = t.gelu_erf().unwrap().to_vec1().unwrap();
        for (i, (a, b)) in ours.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * x[i].abs().max(1.0),
                "x = {}: {a} vs {b}",
                x[i]
            );
        }
        let mut tail = [0f32; 3];
        gelu_portable(&[-30.0, 0.0, 30.0], &mut tail);
        assert_eq!(tail, [-0.0, 0.0, 30.0]);
    }
}
