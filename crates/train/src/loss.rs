//! The losses transformers' heads compute from `labels`: cross-entropy averaged over the
//! labelled positions (-100 marks a position that is not scored), pooled over the batch.

use candle_core::{Device, Tensor};

use crate::error::{Result, TrainError};

/// transformers' `ignore_index`.
pub const IGNORE_INDEX: i64 = -100;

/// Cross-entropy of `logits (n, classes)` against `labels` (n of them, -100 skipped),
/// averaged over the scored positions.
pub fn cross_entropy(logits: &Tensor, labels: &[i64]) -> Result<Tensor> {
    let (n, classes) = logits.dims2()?;
    if labels.len() != n {
        return Err(TrainError::InvalidArgument {
            param: "labels",
            msg: format!("{} labels for {n} rows of logits", labels.len()),
        });
    }
    if let Some(&bad) = labels
        .iter()
        .find(|&&l| l != IGNORE_INDEX && !(0..classes as i64).contains(&l))
    {
        return Err(TrainError::InvalidArgument {
            param: "labels",
            msg: format!("label {bad} is outside the model's {classes} classes (0..{classes})"),
        });
    }
    let keep: Vec<u32> = (0..n as u32)
        .filter(|&i| labels[i as usize] != IGNORE_INDEX)
        .collect();
    if keep.is_empty() {
        return Err(TrainError::InvalidArgument {
            param: "labels",
            msg: "every label is -100: nothing to score".into(),
        });
    }
    let device: &Device = logits.device();
    let targets: Vec<u32> = keep.iter().map(|&i| labels[i as usize] as u32).collect();
    let rows = if keep.len() == n {
        logits.clone()
    } else {
        logits.index_select(&Tensor::new(keep.as_slice(), device)?, 0)?
    };
    Ok(ferro_nn::cross_entropy_cpu::cross_entropy(&rows, &targets)?)
}

/// A causal LM's loss: the logits at position t score the label at t + 1 (labels are
/// shifted here, as transformers does inside the model), averaged over every scored
/// position of the batch. `logits (b, t, vocab)`, `labels` b rows of t.
pub fn causal_lm_loss(logits: &Tensor, labels: &[Vec<i64>]) -> Result<Tensor> {
    let (b, t, vocab) = logits.dims3()?;
    if labels.len() != b || labels.iter().any(|r| r.len() != t) {
        return Err(TrainError::InvalidArgument {
            param: "labels",
            msg: format!("labels must be {b} rows of {t}, like the input ids"),
        });
    }
    if t < 2 {
        return Err(TrainError::InvalidArgument {
            param: "labels",
            msg: "a causal LM needs at least 2 tokens per row to score one".into(),
        });
    }
    let shifted: Vec<i64> = labels.iter().flat_map(|r| r[1..].iter().copied()).collect();
    let logits = logits.narrow(1, 0, t - 1)?.reshape((b * (t - 1), vocab))?;
    cross_entropy(&logits, &shifted)
}
