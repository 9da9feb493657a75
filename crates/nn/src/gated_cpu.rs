//! The gated activation `silu(gate) · up` in one pass on the CPU, spread over our pool:
//! through candle it was a single-threaded `silu` (a scalar `exp` and a division per value)
//! and a separate multiply, each writing a new tensor; on a 512-token prompt of the
//! Qwen2.5-0.5B that is 60 million values.
//!
//! f32 only: `GatedMlp::forward` uses it for f32 CPU tensors and candle's ops otherwise.
//! In training it is one graph node with its own backward pass, where candle's were two
//! (and the silu's output kept until the backward pass).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};

/// Values per task: large enough that scheduling is noise.
const CHUNK: usize = 1 << 15;

#[derive(Debug, Clone, Copy)]
pub(crate) struct SiluMul;

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "silu-mul"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(g), CpuStorage::F32(u)) = (gs, us) else {
            return Err(candle_core::Error::Msg(
                "silu-mul: gate and up must be f32".into(),
            ));
        };
        let (Some((g0, g1)), Some((u0, u1))) = (gl.contiguous_offsets(), ul.contiguous_offsets())
        else {
            return Err(candle_core::Error::Msg(
                "silu-mul: gate and up must be contiguous".into(),
            ));
        };
        if gl.shape() != ul.shape() {
            return Err(candle_core::Error::Msg(format!(
                "silu-mul: gate {:?} and up {:?} differ in shape",
                gl.shape(),
                ul.shape()
            )));
        }
        Ok((
            CpuStorage::F32(gated(&g[g0..g1], &u[u0..u1])),
            gl.shape().clone(),
        ))
    }

    /// `d up = dy · silu(g)` (this op again) and `d gate = dy · u · silu'(g)`.
    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        gating_grads(gate, up, &grad.contiguous()?)
    }
}

/// The gradients of `gate` and `up` (those tracked) from that of `silu(gate) · up`,
/// `dy` (contiguous).
fn gating_grads(
    gate: &Tensor,
    up: &Tensor,
    dy: &Tensor,
) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
    let (g, u) = (gate.contiguous()?, up.contiguous()?);
    let d_gate = if gate.track_op() {
        Some(g.apply_op3_no_bwd(&u, dy, &SiluMulGateGrad)?)
    } else {
        None
    };
    let d_up = if up.track_op() {
        Some(g.apply_op2_no_bwd(dy, &SiluMul)?)
    } else {
        None
    };
    Ok((d_gate, d_up))
}

/// `silu(gate) · up` times `wᵀ` (a gated MLP's down projection, dense f32 without bias)
/// as one op for training: the `(rows, intermediate)` product of the gate is made, used and
/// dropped inside it, where as a graph node it was kept until the backward pass (10 MB a
/// layer on a 512-token Qwen 0.5B batch). The backward pass makes it again when `w`
/// itself needs a gradient.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SiluMulDown;

impl CustomOp3 for SiluMulDown {
    fn name(&self) -> &'static str {
        "silu-mul-down"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (g, u, w) = (
            crate::cpu_op::f32_slice(name, gs, gl)?,
            crate::cpu_op::f32_slice(name, us, ul)?,
            crate::cpu_op::f32_slice(name, ws, wl)?,
        );
        let (n, k) = wl.shape().dims2()?;
        let mut dims = gl.dims().to_vec();
        if gl.shape() != ul.shape() || dims.last() != Some(&k) || k == 0 {
            return Err(crate::cpu_op::op_error(
                name,
                &format!(
                    "gate {:?}, up {:?} and weight {:?} do not fit",
                    gl.shape(),
                    ul.shape(),
                    wl.shape()
                ),
            ));
        }
        let m = g.len() / k;
        let h = gated(g, u);
        let y = crate::matmul_cpu::rows_times_transposed(&h, w, [m, k, n], None);
        if let Some(last) = dims.last_mut() {
            *last = n;
        }
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, k) = w.dims2()?;
        let dy = grad.contiguous()?.reshape(((), n))?;
        let dw = if w.track_op() {
            let h = gate
                .contiguous()?
                .apply_op2_no_bwd(&up.contiguous()?, &SiluMul)?
                .reshape(((), k))?;
            Some(crate::matmul(&dy.t()?, &h)?)
        } else {
            None
        };
        // The gradient of silu(gate) · up, then through the gating as `SiluMul` does.
        let dh = crate::matmul(&dy, w)?.reshape(gate.shape())?;
        let (d_gate, d_up) = gating_grads(gate, up, &dh)?;
        Ok((d_gate, d_up, dw))
    }
}

/// `(g, u, dy) → dy · u · silu'(g)`, with `silu'(g) = σ(g) · (1 + g · (1 − σ(g)))`.
#[derive(Debug, Clone, Copy)]
struct SiluMulGateGrad;

impl CustomOp3 for SiluMulGateGrad {
    fn name(&self) -> &'static str {
        "silu-mul-grad"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (g, u, dy) = (
            crate::cpu_op::f32_slice(name, gs, gl)?,
            crate::cpu_op::f32_slice(name, us, ul)?,
            crate::cpu_op::f32_slice(name, ds, dl)?,
        );
        if gl.shape() != ul.shape() || gl.shape() != dl.shape() {
            return Err(crate::cpu_op::op_error(
                name,
                "gate, up and the gradient differ in shape",
            ));
        }
        let mut out = vec![0f32; g.len()];
        crate::quant::for_each_chunk_mut(&mut out, CHUNK, &|i, out| {
            let r = i * CHUNK..i * CHUNK + out.len();
            gate_grad(&g[r.clone()], &u[r.clone()], &dy[r], out);
        });
        Ok((CpuStorage::F32(out), gl.shape().clone()))
    }
}

fn gate_grad(g: &[f32], u: &[f32], dy: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::quant::has_avx2() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        #[allow(unsafe_code)]
        unsafe {
            avx2::gate_grad(g, u, dy, out)
        };
        return;
    }
    gate_grad_portable(g, u, dy, out);
}

fn gate_grad_portable(g: &[f32], u: &[f32], dy: &[f32], out: &mut [f32]) {
    for (((o, &x), &y), &d) in out.iter_mut().zip(g).zip(u).zip(dy) {
        let s = 1.0 / (1.0 + (-x).exp());
        *o = d * y * s * (1.0 + x * (1.0 - s));
    }
}

/// `silu(g) · u`, split over the pool when large.
fn gated(g: &[f32], u: &[f32]) -> Vec<f32> {
    let mut y = vec![0f32; g.len()];
    if g.len() <= CHUNK {
        silu_mul(g, u, &mut y);
    } else {
        crate::quant::for_each_chunk_mut(&mut y, CHUNK, &|i, out| {
            let at = i * CHUNK;
            silu_mul(&g[at..at + out.len()], &u[at..at + out.len()], out);
        });
    }
    y
}

/// `out = g / (1 + e^-g) · u`.
fn silu_mul(g: &[f32], u: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::quant::has_avx2() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        #[allow(unsafe_code)]
        unsafe {
            avx2::silu_mul(g, u, out)
        };
        return;
    }
    silu_mul_portable(g, u, out);
}

fn silu_mul_portable(g: &[f32], u: &[f32], out: &mut [f32]) {
    for ((o, &x), &y) in out.iter_mut().zip(g).zip(u) {
        *o = x / (1.0 + (-x).exp()) * y;
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
    pub(super) unsafe fn silu_mul(g: &[f32], u: &[f32], out: &mut [f32]) {
        let n = out.len().min(g.len()).min(u.len());
        let whole = n - n % 8;
        // SAFETY: every load and store is of 8 values below `whole`.
        unsafe {
            let one = _mm256_set1_ps(1.0);
            for i in (0..whole).step_by(8) {
                let x = _mm256_loadu_ps(g.as_ptr().add(i));
                let y = _mm256_loadu_ps(u.as_ptr().add(i));
                let e = exp(_mm256_sub_ps(_mm256_setzero_ps(), x));
                let s = _mm256_div_ps(x, _mm256_add_ps(one, e));
                _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_mul_ps(s, y));
            }
        }
        super::silu_mul_portable(&g[whole..n], &u[whole..n], &mut out[whole..n]);
    }

    /// # Safety
    /// Only on CPUs with AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gate_grad(g: &[f32], u: &[f32], dy: &[f32], out: &mut [f32]) {
        let n = out.len().min(g.len()).min(u.len()).min(dy.len());
        let whole = n - n % 8;
        // SAFETY: every load and store is of 8 values below `whole`.
        unsafe {
            let one = _mm256_set1_ps(1.0);
            for i in (0..whole).step_by(8) {
                let x = _mm256_loadu_ps(g.as_ptr().add(i));
                let y = _mm256_loadu_ps(u.as_ptr().add(i));
                let d = _mm256_loadu_ps(dy.as_ptr().add(i));
                let e = exp(_mm256_sub_ps(_mm256_setzero_ps(), x));
                let s = _mm256_div_ps(one, _mm256_add_ps(one, e));
                // σ · (1 + x · (1 − σ))
                let ds = _mm256_mul_ps(s, _mm256_fmadd_ps(x, _mm256_sub_ps(one, s), one));
                _mm256_storeu_ps(
                    out.as_mut_ptr().add(i),
                    _mm256_mul_ps(_mm256_mul_ps(d, y), ds),
                );
            }
        }
        super::gate_grad_portable(
            &g[whole..n],
            &u[whole..n],
            &dy[whole..n],
            &mut out[whole..n],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn equals_candles_silu_times_up() {
        // Odd length (a scalar tail), values across the range where silu bends and beyond
        // both clamps of the exponential.
        let n = 3 * CHUNK + 13;
        let g: Vec<f32> = (0..n)
            .map(|i| ((i as f32 * 0.618).sin() * 12.0) + if i % 997 == 0 { 150.0 } else { 0.0 })
            .collect();
        let u: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).cos() * 3.0).collect();
        let gt = Tensor::from_vec(g, (n,), &Device::Cpu).unwrap();
        let ut = Tensor::from_vec(u, (n,), &Device::Cpu).unwrap();
        let ours: Vec<f32> = gt
            .apply_op2_no_bwd(&ut, &SiluMul)
            .unwrap()
            .to_vec1()
            .unwrap();
        let want: Vec<f32> = (candle_nn::ops::silu(&gt).unwrap() * &ut)
            .unwrap()
            .to_vec1()
            .unwrap();
        for (i, (a, b)) in ours.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "value {i}: {a} vs {b}"
            );
        }
        let neg = Tensor::from_vec(vec![-150f32, -90.0, 90.0], (3,), &Device::Cpu).unwrap();
        let y: Vec<f32> = neg
            .apply_op2_no_bwd(
                &Tensor::ones(3, candle_core::DType::F32, &Device::Cpu).unwrap(),
                &SiluMul,
            )
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(
            y[0].abs() < 1e-30 && y[1].abs() < 1e-30 && (y[2] - 90.0).abs() < 1e-4,
            "{y:?}"
        );
    }

    /// In training: the gradients of gate and up equal those through candle's ops.
    #[test]
    fn gradients_equal_candles() {
        let dev = Device::Cpu;
        let n = 2 * CHUNK + 13;
        let vals =
            |k: f32, a: f32| -> Vec<f32> { (0..n).map(|i| (i as f32 * k).sin() * a).collect() };
        let g = candle_core::Var::from_vec(vals(0.618, 9.0), (n,), &dev).unwrap();
        let u = candle_core::Var::from_vec(vals(0.37, 3.0), (n,), &dev).unwrap();
        let dy = Tensor::from_vec(vals(0.11, 1.0), (n,), &dev).unwrap();
        let ours = g.as_tensor().apply_op2(u.as_tensor(), SiluMul).unwrap();
        let want = (candle_nn::ops::silu(g.as_tensor()).unwrap() * u.as_tensor()).unwrap();
        let grads = |y: &Tensor| (y * &dy).unwrap().sum_all().unwrap().backward().unwrap();
        let (go, gw) = (grads(&ours), grads(&want));
        for x in [&g, &u] {
            let a: Vec<f32> = go.get(x.as_tensor()).unwrap().to_vec1().unwrap();
            let b: Vec<f32> = gw.get(x.as_tensor()).unwrap().to_vec1().unwrap();
            for (i, (a, b)) in a.iter().zip(&b).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                    "value {i}: {a} vs {b}"
                );
            }
        }
    }

    /// With the down projection: output and the gradients of gate, up and the weight equal
    /// those through candle's ops.
    #[test]
    fn with_the_down_projection_equals_candles() {
        let dev = Device::Cpu;
        let (rows, k, n) = (37, 150, 40);
        let vals = |len: usize, f: f32, a: f32| -> Vec<f32> {
            (0..len).map(|i| (i as f32 * f).sin() * a).collect()
        };
        let g = candle_core::Var::from_vec(vals(rows * k, 0.618, 6.0), (1, rows, k), &dev).unwrap();
        let u = candle_core::Var::from_vec(vals(rows * k, 0.37, 2.0), (1, rows, k), &dev).unwrap();
        let w = candle_core::Var::from_vec(vals(n * k, 0.23, 0.3), (n, k), &dev).unwrap();
        let dy = Tensor::from_vec(vals(rows * n, 0.11, 1.0), (1, rows, n), &dev).unwrap();
        let ours = g
            .as_tensor()
            .apply_op3(u.as_tensor(), w.as_tensor(), SiluMulDown)
            .unwrap();
        let h = (candle_nn::ops::silu(g.as_tensor()).unwrap() * u.as_tensor()).unwrap();
        let want = h.broadcast_matmul(&w.as_tensor().t().unwrap()).unwrap();
        assert!(crate::test_util::max_diff(&ours, &want) < 1e-4);
        let grads = |y: &Tensor| (y * &dy).unwrap().sum_all().unwrap().backward().unwrap();
        let (go, gw) = (grads(&ours), grads(&want));
        for x in [&g, &u, &w] {
            let d = crate::test_util::max_diff(
                go.get(x.as_tensor()).unwrap(),
                gw.get(x.as_tensor()).unwrap(),
            );
            assert!(d < 1e-4, "{:?}: {d}", x.dims());
        }
    }

    #[test]
    fn shapes_must_match() {
        let a = Tensor::zeros((2, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::zeros((3, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(a.apply_op2_no_bwd(&b, &SiluMul).is_err());
    }
}
