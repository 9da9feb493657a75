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
    let (keep, targets) = scored(labels, classes)?;
    let device: &Device = logits.device();
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
    let (rows, targets) = causal_lm_targets(labels, b, t, vocab)?;
    let rows = Tensor::new(rows.as_slice(), logits.device())?;
    let scored = logits.reshape((b * t, vocab))?.index_select(&rows, 0)?;
    Ok(ferro_nn::cross_entropy_cpu::cross_entropy(
        &scored, &targets,
    )?)
}

/// The positions a causal LM's loss scores, as indices into the flattened `(b · t)`
/// positions, and the label each predicts: position j of row i scores label j + 1 of that
/// row, unless it is -100. The same checks as `cross_entropy` (labels in range, at least
/// one scored), before any logits exist.
pub fn causal_lm_targets(
    labels: &[Vec<i64>],
    b: usize,
    t: usize,
    vocab: usize,
) -> Result<(Vec<u32>, Vec<u32>)> {
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
    // Row i's position j scores its label j + 1; each row's last position scores nothing.
    let shifted: Vec<i64> = labels
        .iter()
        .flat_map(|r| r[1..].iter().copied().chain([IGNORE_INDEX]))
        .collect();
    scored(&shifted, vocab)
}

/// The positions of `labels` that are scored (not -100) and their labels, after checking
/// every label is one of `classes` and at least one is scored.
fn scored(labels: &[i64], classes: usize) -> Result<(Vec<u32>, Vec<u32>)> {
    if let Some(&bad) = labels
        .iter()
        .find(|&&l| l != IGNORE_INDEX && !(0..classes as i64).contains(&l))
    {
        return Err(TrainError::InvalidArgument {
            param: "labels",
            msg: format!("label {bad} is outside the model's {classes} classes (0..{classes})"),
        });
    }
    let (keep, targets): (Vec<u32>, Vec<u32>) = labels
        .iter()
        .enumerate()
        .filter(|&(_, &l)| l != IGNORE_INDEX)
        .map(|(i, &l)| (i as u32, l as u32))
        .unzip();
    if keep.is_empty() {
        return Err(TrainError::InvalidArgument {
            param: "labels",
            msg: "every label is -100: nothing to score".into(),
        });
    }
    Ok((keep, targets))
}
