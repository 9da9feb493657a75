//! Dropout as PyTorch's `nn.Dropout` in training mode: each element zeroed with
//! probability `p`, the others scaled by `1 / (1 - p)`; the identity in evaluation mode.
//!
//! The masks are not drawn from a generator's running state but are a pure function of
//! (seed, step, call, element): the trainer names the step before each forward pass
//! (`Parameters::set_dropout_step`) and each dropout call of that pass takes the next call
//! number. A run resumed from a checkpoint therefore draws the same masks as one that was
//! never interrupted, with no generator state to save, and a forward pass that is replayed
//! (gradient checkpointing: `DropoutStream::position` / `rewind`) draws the same masks again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use crate::error::{NnError, Result};
use crate::parameters::Parameters;

/// Where a model's dropout masks come from: its seed, the step being run and how many
/// dropout calls that step has made. Shared by every dropout layer of a model.
#[derive(Debug, Default)]
pub struct DropoutStream {
    seed: AtomicU64,
    step: AtomicU64,
    calls: AtomicU64,
}

impl DropoutStream {
    /// Starts the masks of one step (the trainer's micro-batch number) under `seed`.
    pub fn set_step(&self, seed: u64, step: u64) {
        self.seed.store(seed, Ordering::Relaxed);
        self.step.store(step, Ordering::Relaxed);
        self.calls.store(0, Ordering::Relaxed);
    }

    /// How many dropout calls this step has made (to replay a part of the forward pass).
    pub fn position(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Makes the next call draw what call number `position` drew.
    pub fn rewind(&self, position: u64) {
        self.calls.store(position, Ordering::Relaxed);
    }

    /// The key of the next call's mask.
    fn next_key(&self) -> u64 {
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        let seed = self.seed.load(Ordering::Relaxed);
        let step = self.step.load(Ordering::Relaxed);
        mix(mix(mix(seed) ^ step) ^ call)
    }
}

/// SplitMix64's finaliser: a well-spread 64-bit hash of `x`.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One draw of a dropout mask: element `i`'s value is a pure function of the draw's key
/// and `i`, so a fused op can make any element of it without the whole mask. An element
/// is dropped when 24 bits of its hash fall below `p · 2²⁴`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct DropMask {
    key: u64,
    threshold: u64,
    /// A kept element's value, `1 / (1 - p)`.
    scale: f32,
}

impl DropMask {
    fn new(key: u64, p: f64) -> Self {
        Self {
            key,
            threshold: (p * f64::from(1u32 << 24)).round() as u64,
            scale: (1.0 / (1.0 - p)) as f32,
        }
    }

    /// Element `i`: `scale` where kept, 0 where dropped.
    #[inline]
    pub(crate) fn at(&self, i: u64) -> f32 {
        let h = mix(self.key ^ i.wrapping_mul(0xd6e8_feb8_6659_fd93));
        if h >> 40 >= self.threshold {
            self.scale
        } else {
            0.0
        }
    }

    /// The first `n` elements.
    fn values(&self, n: usize) -> Vec<f32> {
        let mut mask = vec![0f32; n];
        const CHUNK: usize = 1 << 16;
        mask.par_chunks_mut(CHUNK).enumerate().for_each(|(c, out)| {
            let base = (c * CHUNK) as u64;
            for (i, m) in out.iter_mut().enumerate() {
                *m = self.at(base + i as u64);
            }
        });
        mask
    }
}

#[derive(Debug, Clone)]
pub struct Dropout {
    p: f64,
    training: Arc<AtomicBool>,
    stream: Arc<DropoutStream>,
}

impl Dropout {
    /// A layer dropping with probability `p` whenever `parameters` is in training mode.
    /// `name` is the config field `p` came from, for the error when it is not in [0, 1).
    pub fn new(p: f64, name: &'static str, parameters: &Parameters) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            return Err(NnError::InvalidArgument {
                param: name,
                msg: format!("{p} is not a probability in [0, 1)"),
            });
        }
        Ok(Self {
            p,
            training: parameters.training_flag(),
            stream: parameters.dropout_stream(),
        })
    }

    pub fn p(&self) -> f64 {
        self.p
    }

    /// Whether a forward pass now drops anything.
    pub fn is_active(&self) -> bool {
        self.p > 0.0 && self.training.load(Ordering::Relaxed)
    }

    /// The mask `forward` would apply next (it takes the same place in the stream), for
    /// an op that applies it itself; `None` when inactive.
    pub(crate) fn draw(&self) -> Option<DropMask> {
        self.is_active()
            .then(|| DropMask::new(self.stream.next_key(), self.p))
    }

    /// `x` with dropout applied (training mode), or `x` itself.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let Some(drop) = self.draw() else {
            return Ok(x.clone());
        };
        let values = drop.values(x.elem_count());
        let mask = Tensor::from_vec(values, x.shape(), x.device())?;
        let mask = if x.dtype() == DType::F32 {
            mask
        } else {
            mask.to_dtype(x.dtype())?
        };
        Ok((x * mask)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn drops_the_expected_share_and_keeps_the_mean() {
        let params = Parameters::default();
        params.set_training(true);
        params.set_dropout_step(7, 3);
        let drop = Dropout::new(0.1, "p", &params).unwrap();
        let x = Tensor::ones((400, 1000), DType::F32, &Device::Cpu).unwrap();
        let y: Vec<f32> = drop
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let zeros = y.iter().filter(|&&v| v == 0.0).count() as f64 / y.len() as f64;
        assert!((zeros - 0.1).abs() < 0.003, "dropped share {zeros}");
        let mean = y.iter().map(|&v| f64::from(v)).sum::<f64>() / y.len() as f64;
        assert!((mean - 1.0).abs() < 0.005, "mean {mean}");
        assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.9).abs() < 1e-6));
    }

    #[test]
    fn masks_depend_on_seed_step_and_call_only() {
        let params = Parameters::default();
        params.set_training(true);
        let drop = Dropout::new(0.5, "p", &params).unwrap();
        let x = Tensor::ones(4096, DType::F32, &Device::Cpu).unwrap();
        let run = |seed, step| -> (Vec<f32>, Vec<f32>) {
            params.set_dropout_step(seed, step);
            let a = drop.forward(&x).unwrap().to_vec1().unwrap();
            let b = drop.forward(&x).unwrap().to_vec1().unwrap();
            (a, b)
        };
        let (a1, b1) = run(1, 5);
        let (a2, b2) = run(1, 5);
        assert_eq!((&a1, &b1), (&a2, &b2), "same step, same masks");
        assert_ne!(a1, b1, "each call of a step draws its own mask");
        assert_ne!(run(1, 6).0, a1, "another step, other masks");
        assert_ne!(run(2, 5).0, a1, "another seed, other masks");
        // Replaying from a recorded position draws the same mask again.
        params.set_dropout_step(1, 5);
        let stream = params.dropout_stream();
        let at = stream.position();
        let first = drop.forward(&x).unwrap().to_vec1::<f32>().unwrap();
        stream.rewind(at);
        assert_eq!(drop.forward(&x).unwrap().to_vec1::<f32>().unwrap(), first);
    }

    #[test]
    fn evaluation_mode_and_zero_p_are_the_identity() {
        let params = Parameters::default();
        let x = Tensor::arange(0f32, 100., &Device::Cpu).unwrap();
        let drop = Dropout::new(0.3, "p", &params).unwrap();
        assert_eq!(
            drop.forward(&x).unwrap().to_vec1::<f32>().unwrap(),
            x.to_vec1::<f32>().unwrap()
        );
        params.set_training(true);
        let none = Dropout::new(0.0, "p", &params).unwrap();
        assert!(!none.is_active());
        assert!(Dropout::new(1.0, "hidden_dropout_prob", &params)
            .unwrap_err()
            .to_string()
            .contains("hidden_dropout_prob"));
    }
}
