//! GELU with the exact erf (BERT's `gelu`) in one parallel pass on the CPU: candle's
//! `gelu_erf` calls a scalar libm `erf` per value on one thread, which took 13 % of a
//! MiniLM embedding run. erf here is Abramowitz & Stegun 7.1.26 (absolute error below
//! 1.5e-7) with the AVX2 exponential.
//!
//! f32 only. Its backward pass is one parallel pass too (`GeluErfGrad`), where candle's
//! goes through a dozen single-threaded element-wise ops. `Activation::apply` uses it for
//! f32 CPU tensors and candle's op otherwise.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};

use crate::cpu_op::{f32_slice, op_error};

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
        let x = f32_slice("gelu-erf", s, l)?;
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

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let g = grad_res.contiguous()?;
        Ok(Some(arg.contiguous()?.apply_op2_no_bwd(&g, &GeluErfGrad)?))
    }
}

/// The backward pass of `GeluErf`: `(x, g) → g · gelu'(x)`, with
/// `gelu'(x) = (1 + erf(x/√2))/2 + x · e^(−x²/2)/√(2π)`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GeluErfGrad;

impl CustomOp2 for GeluErfGrad {
    fn name(&self) -> &'static str {
        "gelu-erf-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, g) = (
            f32_slice("gelu-erf-grad", s1, l1)?,
            f32_slice("gelu-erf-grad", s2, l2)?,
        );
        if x.len() != g.len() {
            return Err(op_error(
                "gelu-erf-grad",
                "x and its gradient differ in size",
            ));
        }
        let mut out = vec![0f32; x.len()];
        crate::quant::for_each_chunk_mut(&mut out, CHUNK, &|i, out| {
            let at = i * CHUNK;
            let n = out.len();
            gelu_grad(&x[at..at + n], &g[at..at + n], out);
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `out = g · gelu'(x)`.
fn gelu_grad(x: &[f32], g: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::quant::has_avx2() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        #[allow(unsafe_code)]
        unsafe {
            avx2::gelu_grad(x, g, out)
        };
        return;
    }
    gelu_grad_portable(x, g, out);
}

/// 1/√(2π).
const INV_SQRT_TAU: f32 = 0.398_942_3;

fn gelu_grad_portable(x: &[f32], g: &[f32], out: &mut [f32]) {
    for ((o, &v), &gv) in out.iter_mut().zip(x).zip(g) {
        let z = v.abs() * std::f32::consts::FRAC_1_SQRT_2;
        let t = 1.0 / (1.0 + P * z);
        let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
        let e = (-z * z).exp(); // e^(−x²/2)
        let erf = (1.0 - poly * e).copysign(v);
        *o = gv * (0.5 * (1.0 + erf) + v * e * INV_SQRT_TAU);
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

    /// `erf(v/√2)` (Abramowitz & Stegun 7.1.26) and `e^(−v²/2)`, eight values at a time.
    ///
    /// # Safety
    /// Only on CPUs with AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn erf_and_gauss(v: __m256) -> (__m256, __m256) {
        let one = _mm256_set1_ps(1.0);
        let sign = _mm256_set1_ps(-0.0);
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
        // SAFETY: the caller has AVX2 and FMA.
        let e = unsafe { exp(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(z, z))) };
        let erf_abs = _mm256_fnmadd_ps(poly, e, one);
        (_mm256_or_ps(erf_abs, _mm256_and_ps(sign, v)), e)
    }

    /// # Safety
    /// Only on CPUs with AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gelu(x: &[f32], out: &mut [f32]) {
        let n = out.len().min(x.len());
        let whole = n - n % 8;
        // SAFETY: every load and store is of 8 values below `whole`.
        unsafe {
            let one = _mm256_set1_ps(1.0);
            for i in (0..whole).step_by(8) {
                let v = _mm256_loadu_ps(x.as_ptr().add(i));
                let (erf, _) = erf_and_gauss(v);
                let y = _mm256_mul_ps(
                    _mm256_mul_ps(_mm256_set1_ps(0.5), v),
                    _mm256_add_ps(one, erf),
                );
                _mm256_storeu_ps(out.as_mut_ptr().add(i), y);
            }
        }
        super::gelu_portable(&x[whole..n], &mut out[whole..n]);
    }

    /// # Safety
    /// Only on CPUs with AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gelu_grad(x: &[f32], g: &[f32], out: &mut [f32]) {
        let n = out.len().min(x.len()).min(g.len());
        let whole = n - n % 8;
        // SAFETY: every load and store is of 8 values below `whole`.
        unsafe {
            let one = _mm256_set1_ps(1.0);
            let half = _mm256_set1_ps(0.5);
            for i in (0..whole).step_by(8) {
                let v = _mm256_loadu_ps(x.as_ptr().add(i));
                let (erf, e) = erf_and_gauss(v);
                let cdf = _mm256_mul_ps(half, _mm256_add_ps(one, erf));
                let pdf = _mm256_mul_ps(_mm256_mul_ps(v, e), _mm256_set1_ps(super::INV_SQRT_TAU));
                let d = _mm256_add_ps(cdf, pdf);
                let gv = _mm256_loadu_ps(g.as_ptr().add(i));
                _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_mul_ps(gv, d));
            }
        }
        super::gelu_grad_portable(&x[whole..n], &g[whole..n], &mut out[whole..n]);
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

    #[test]
    fn backward_equals_candles() {
        let n = 2 * CHUNK + 13;
        let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.377).sin() * 7.0).collect();
        let g: Vec<f32> = (0..n).map(|i| (i as f32 * 0.123).cos()).collect();
        let dev = Device::Cpu;
        let grads = |ours: bool| -> Vec<f32> {
            let v = candle_core::Var::from_vec(x.clone(), (n,), &dev).unwrap();
            let y = if ours {
                v.as_tensor().apply_op1(GeluErf).unwrap()
            } else {
                v.as_tensor().gelu_erf().unwrap()
            };
            let gt = Tensor::from_vec(g.clone(), (n,), &dev).unwrap();
            let grads = (y * gt).unwrap().sum_all().unwrap().backward().unwrap();
            grads.get(v.as_tensor()).unwrap().to_vec1().unwrap()
        };
        let (ours, want) = (grads(true), grads(false));
        for (i, (a, b)) in ours.iter().zip(&want).enumerate() {
            assert!((a - b).abs() <= 2e-6, "x = {}: {a} vs {b}", x[i]);
        }
    }
}
