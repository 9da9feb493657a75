//! Initial values for layers a checkpoint does not have (a new classification head), drawn
//! from a seeded generator so that a run can be repeated.

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};

use crate::error::Result;

/// Normal(0, std) values of `shape` from `seed` (Box–Muller over a seeded `StdRng`), as
/// transformers' `_init_weights` draws a Linear's weight.
pub fn normal(shape: &[usize], std: f64, seed: u64, device: &Device) -> Result<Tensor> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let mut values = Vec::with_capacity(n);
    while values.len() < n {
        let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = rng.random();
        let r = (-2.0 * u1.ln()).sqrt();
        let a = std::f64::consts::TAU * u2;
        values.push((r * a.cos() * std) as f32);
        values.push((r * a.sin() * std) as f32);
    }
    values.truncate(n);
    Ok(Tensor::from_vec(values, shape, device)?)
}

/// Zeros of `shape` (a new bias).
pub fn zeros(shape: &[usize], device: &Device) -> Result<Tensor> {
    Ok(Tensor::zeros(shape, DType::F32, device)?)
}
