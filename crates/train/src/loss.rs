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
    let (mut rows, mut targets) = (Vec::new(), Vec::new());
    for (i, row) in labels.iter().enumerate() {
        for (j, &label) in row[1..].iter().enumerate() {
            if label == IGNORE_INDEX {
                continue;
            }
            if !(0..vocab as i64).contains(&label) {
                return Err(TrainError::InvalidArgument {
                    param: "labels",
                    msg: format!(
                        "label {label} is outside the model's {vocab} classes (0..{vocab})"
                    ),
                });
            }
            rows.push((i * t + j) as u32);
            targets.push(label as u32);
        }
    }
    if rows.is_empty() {
        return Err(TrainError::InvalidArgument {
            param: "labels",
            msg: "every label is -100: nothing to score".into(),
        });
    }
    Ok((rows, targets))
}
