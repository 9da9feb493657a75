//! Learning-rate schedules, as transformers' `get_scheduler`: a multiplier of the base
//! learning rate per optimizer step, warmup first.

use crate::error::{Result, TrainError};

/// transformers' `lr_scheduler_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerType {
    Linear,
    Cosine,
    CosineWithRestarts,
    Polynomial,
    Constant,
    ConstantWithWarmup,
    InverseSqrt,
}

impl SchedulerType {
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "linear" => Self::Linear,
            "cosine" => Self::Cosine,
            "cosine_with_restarts" => Self::CosineWithRestarts,
            "polynomial" => Self::Polynomial,
            "constant" => Self::Constant,
            "constant_with_warmup" => Self::ConstantWithWarmup,
            "inverse_sqrt" => Self::InverseSqrt,
            other => {
                return Err(TrainError::InvalidArgument {
                    param: "lr_scheduler_type",
                    msg: format!(
                        "`{other}` is not one of linear, cosine, cosine_with_restarts, \
                         polynomial, constant, constant_with_warmup, inverse_sqrt"
                    ),
                })
            }
        })
    }
}

/// Warmup steps from transformers' `warmup_steps`, which in 5.x is a ratio of the total
/// when below 1: `ceil(total · ratio)`.
pub fn warmup_steps(warmup: f64, total: usize) -> Result<usize> {
    if !(warmup.is_finite() && warmup >= 0.0) {
        return Err(TrainError::InvalidArgument {
            param: "warmup_steps",
            msg: format!("must be a number >= 0, got {warmup}"),
        });
    }
    Ok(if warmup < 1.0 {
        (total as f64 * warmup).ceil() as usize
    } else {
        warmup as usize
    })
}

/// A schedule over `total` steps with `warmup` warmup steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub kind: SchedulerType,
    pub base_lr: f64,
    pub warmup: usize,
    pub total: usize,
}

impl Schedule {
    /// The learning rate used by step `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        self.base_lr * self.factor(step)
    }

    fn factor(&self, step: usize) -> f64 {
        let (s, w, n) = (step as f64, self.warmup as f64, self.total as f64);
        let warming = step < self.warmup;
        let warm = s / w.max(1.0);
        let progress = (s - w) / (n - w).max(1.0);
        match self.kind {
            SchedulerType::Constant => 1.0,
            _ if warming => warm,
            SchedulerType::ConstantWithWarmup => 1.0,
            SchedulerType::Linear => ((n - s) / (n - w).max(1.0)).max(0.0),
            SchedulerType::Cosine => {
                (0.5 * (1.0 + (std::f64::consts::PI * 0.5 * 2.0 * progress).cos())).max(0.0)
            }
            SchedulerType::CosineWithRestarts => {
                if progress >= 1.0 {
                    0.0
                } else {
                    (0.5 * (1.0 + (std::f64::consts::PI * (progress % 1.0)).cos())).max(0.0)
                }
            }
            SchedulerType::Polynomial => {
                // transformers' defaults: lr_end 1e-7, power 1.
                let lr_end = 1e-7;
                if step > self.total {
                    lr_end / self.base_lr
                } else {
                    let remaining = 1.0 - (s - w) / (n - w);
                    ((self.base_lr - lr_end) * remaining + lr_end) / self.base_lr
                }
            }
            SchedulerType::InverseSqrt => {
                // timescale = warmup (10,000 without warmup), as transformers.
                let timescale = if self.warmup > 0 { w } else { 10_000.0 };
                1.0 / ((s + timescale - w) / timescale).sqrt()
            }
        }
    }
}
