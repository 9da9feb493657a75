//! Single-label classification scores as scikit-learn 1.9 computes them: `accuracy_score`,
//! `precision_recall_fscore_support` (averages micro, macro, weighted, binary, or per class),
//! `precision_score` / `recall_score` / `f1_score` / `fbeta_score`, `confusion_matrix`.
//!
//! Labels are any ordered type (`i64`, `String`, ...). Without an explicit `labels` list the
//! classes are the sorted union of the labels in `y_true` and `y_pred`, as sklearn's
//! `unique_labels`.

use std::collections::BTreeSet;

use super::{check_beta, check_same_len, MetricError, Result, ZeroDivision};

/// sklearn's `average` for the set-wise scores (its `average=None`, one score per class, is
/// [`precision_recall_fscore_support_per_class`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Average<T> {
    /// `"binary"`: the scores of `pos_label` alone; only for data with at most two labels.
    Binary { pos_label: T },
    /// `"micro"`: from the true positives, predictions and true labels summed over classes.
    Micro,
    /// `"macro"`: the unweighted mean of the per-class scores.
    Macro,
    /// `"weighted"`: the mean of the per-class scores weighted by their support.
    Weighted,
}

/// The other arguments of sklearn's `precision_recall_fscore_support`.
#[derive(Debug, Clone, PartialEq)]
pub struct PrfOptions<T> {
    /// `labels`: the classes to score, in this order (classes absent from the data score as
    /// zero-division cases; classes of the data left out are ignored). Ignored with
    /// [`Average::Binary`], as in sklearn.
    pub labels: Option<Vec<T>>,
    /// F-beta's beta (>= 0; infinity gives the recall). 1 by default.
    pub beta: f64,
    pub zero_division: ZeroDivision,
}

impl<T> Default for PrfOptions<T> {
    fn default() -> Self {
        PrfOptions {
            labels: None,
            beta: 1.0,
            zero_division: ZeroDivision::Zero,
        }
    }
}

/// Precision, recall and F-beta averaged over classes (sklearn returns no support with an
/// average).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Prf {
    pub precision: f64,
    pub recall: f64,
    /// F-beta; F1 with the default beta of 1.
    pub fbeta: f64,
}

/// Per-class scores (sklearn's `average=None`), in the order of `labels`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PerClassPrf<T> {
    pub labels: Vec<T>,
    pub precision: Vec<f64>,
    pub recall: Vec<f64>,
    pub fbeta: Vec<f64>,
    /// The number of true instances of each label.
    pub support: Vec<u64>,
}

/// A confusion matrix with the labels of its rows and columns: `matrix[i][j]` counts samples
/// whose true label is `labels[i]` and whose prediction is `labels[j]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConfusionMatrix<T> {
    pub labels: Vec<T>,
    pub matrix: Vec<Vec<u64>>,
}

/// `accuracy_score(y_true, y_pred)`: the fraction of exact matches.
pub fn accuracy_score<T: PartialEq>(y_true: &[T], y_pred: &[T]) -> Result<f64> {
    check_targets(y_true, y_pred)?;
    let correct = y_true.iter().zip(y_pred).filter(|(t, p)| t == p).count();
    Ok(correct as f64 / y_true.len() as f64)
}

/// `confusion_matrix(y_true, y_pred, labels=labels)`. With `labels`, samples whose true or
/// predicted label is not listed are left out; at least one listed label must occur in
/// `y_true`.
pub fn confusion_matrix<T: Ord + Clone>(
    y_true: &[T],
    y_pred: &[T],
    labels: Option<&[T]>,
) -> Result<ConfusionMatrix<T>> {
    check_targets(y_true, y_pred)?;
    let labels = match labels {
        None => unique_labels(y_true, y_pred),
        Some(labels) => {
            check_labels(labels)?;
            if !labels.iter().any(|l| y_true.contains(l)) {
                return Err(MetricError::invalid(
                    "labels",
                    "at least one label specified must be in y_true",
                ));
            }
            labels.to_vec()
        }
    };
    let index = |x: &T| labels.iter().position(|l| l == x);
    let mut matrix = vec![vec![0u64; labels.len()]; labels.len()];
    for (t, p) in y_true.iter().zip(y_pred) {
        if let (Some(i), Some(j)) = (index(t), index(p)) {
            matrix[i][j] += 1;
        }
    }
    Ok(ConfusionMatrix { labels, matrix })
}

/// `precision_recall_fscore_support(y_true, y_pred, average=..., labels=..., beta=...,
/// zero_division=...)` for an average: precision, recall and F-beta (sklearn returns no support
/// then).
pub fn precision_recall_fscore_support<T: Ord + Clone>(
    y_true: &[T],
    y_pred: &[T],
    average: &Average<T>,
    opts: &PrfOptions<T>,
) -> Result<Prf> {
    check_beta(opts.beta)?;
    check_targets(y_true, y_pred)?;
    let zd = opts.zero_division;
    let labels = match average {
        Average::Binary { pos_label } => {
            let present = unique_labels(y_true, y_pred);
            if present.len() > 2 {
                return Err(MetricError::invalid(
                    "average",
                    format!(
                        "target is multiclass ({} labels) but average is binary; choose micro, \
                         macro or weighted",
                        present.len()
                    ),
                ));
            }
            if present.len() == 2 && !present.contains(pos_label) {
                return Err(MetricError::invalid(
                    "pos_label",
                    "is not a valid label: it should be one of the two labels of the data",
                ));
            }
            vec![pos_label.clone()]
        }
        _ => selected_labels(y_true, y_pred, opts.labels.as_deref())?,
    };
    let mut counts = class_counts(y_true, y_pred, &labels);
    if *average == Average::Micro {
        counts = vec![counts.iter().fold(Counts::default(), |acc, c| Counts {
            tp: acc.tp + c.tp,
            pred: acc.pred + c.pred,
            truth: acc.truth + c.truth,
        })];
    }
    let (p, r, f) = scores(&counts, opts.beta, zd);
    let weights: Option<Vec<f64>> = match average {
        Average::Weighted => Some(counts.iter().map(|c| c.truth as f64).collect()),
        _ => None,
    };
    Ok(Prf {
        precision: nan_average(&p, weights.as_deref()),
        recall: nan_average(&r, weights.as_deref()),
        fbeta: nan_average(&f, weights.as_deref()),
    })
}

/// `precision_recall_fscore_support(y_true, y_pred, average=None, ...)`: one score per class,
/// for `opts.labels` or else the sorted labels of the data.
pub fn precision_recall_fscore_support_per_class<T: Ord + Clone>(
    y_true: &[T],
    y_pred: &[T],
    opts: &PrfOptions<T>,
) -> Result<PerClassPrf<T>> {
    check_beta(opts.beta)?;
    check_targets(y_true, y_pred)?;
    let labels = selected_labels(y_true, y_pred, opts.labels.as_deref())?;
    let counts = class_counts(y_true, y_pred, &labels);
    let (precision, recall, fbeta) = scores(&counts, opts.beta, opts.zero_division);
    let support = counts.iter().map(|c| c.truth).collect();
    Ok(PerClassPrf {
        labels,
        precision,
        recall,
        fbeta,
        support,
    })
}

/// `precision_score(y_true, y_pred, average=..., ...)`.
pub fn precision_score<T: Ord + Clone>(
    y_true: &[T],
    y_pred: &[T],
    average: &Average<T>,
    opts: &PrfOptions<T>,
) -> Result<f64> {
    precision_recall_fscore_support(y_true, y_pred, average, opts).map(|s| s.precision)
}

/// `recall_score(y_true, y_pred, average=..., ...)`.
pub fn recall_score<T: Ord + Clone>(
    y_true: &[T],
    y_pred: &[T],
    average: &Average<T>,
    opts: &PrfOptions<T>,
) -> Result<f64> {
    precision_recall_fscore_support(y_true, y_pred, average, opts).map(|s| s.recall)
}

/// `fbeta_score(y_true, y_pred, beta=opts.beta, average=..., ...)`.
pub fn fbeta_score<T: Ord + Clone>(
    y_true: &[T],
    y_pred: &[T],
    average: &Average<T>,
    opts: &PrfOptions<T>,
) -> Result<f64> {
    precision_recall_fscore_support(y_true, y_pred, average, opts).map(|s| s.fbeta)
}

/// `f1_score(y_true, y_pred, average=..., ...)`: [`fbeta_score`] with beta 1 (whatever
/// `opts.beta` says).
pub fn f1_score<T: Ord + Clone>(
    y_true: &[T],
    y_pred: &[T],
    average: &Average<T>,
    opts: &PrfOptions<T>,
) -> Result<f64> {
    let opts = PrfOptions {
        labels: opts.labels.clone(),
        beta: 1.0,
        zero_division: opts.zero_division,
    };
    fbeta_score(y_true, y_pred, average, &opts)
}

/// sklearn's `_check_targets` as far as it concerns 1-D label arrays: same length, not empty.
fn check_targets<T>(y_true: &[T], y_pred: &[T]) -> Result<()> {
    check_same_len("y_pred", "y_true and y_pred", y_true.len(), y_pred.len())?;
    if y_true.is_empty() {
        return Err(MetricError::invalid(
            "y_true",
            "found an empty input array while a minimum of 1 sample is required",
        ));
    }
    Ok(())
}

fn check_labels<T: Ord>(labels: &[T]) -> Result<()> {
    if labels.is_empty() {
        return Err(MetricError::invalid(
            "labels",
            "should contain at least one label",
        ));
    }
    let distinct: BTreeSet<&T> = labels.iter().collect();
    if distinct.len() != labels.len() {
        return Err(MetricError::invalid("labels", "contains a label twice"));
    }
    Ok(())
}

/// sklearn's `unique_labels`: the sorted union.
fn unique_labels<T: Ord + Clone>(y_true: &[T], y_pred: &[T]) -> Vec<T> {
    let set: BTreeSet<&T> = y_true.iter().chain(y_pred).collect();
    set.into_iter().cloned().collect()
}

fn selected_labels<T: Ord + Clone>(
    y_true: &[T],
    y_pred: &[T],
    labels: Option<&[T]>,
) -> Result<Vec<T>> {
    match labels {
        None => Ok(unique_labels(y_true, y_pred)),
        Some(labels) => {
            check_labels(labels)?;
            Ok(labels.to_vec())
        }
    }
}

/// Per class: true positives, predictions, true instances (sklearn's tp_sum, pred_sum,
/// true_sum).
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    tp: u64,
    pred: u64,
    truth: u64,
}

fn class_counts<T: Ord>(y_true: &[T], y_pred: &[T], labels: &[T]) -> Vec<Counts> {
    labels
        .iter()
        .map(|l| {
            let mut c = Counts::default();
            for (t, p) in y_true.iter().zip(y_pred) {
                let (is_t, is_p) = (t == l, p == l);
                c.tp += u64::from(is_t && is_p);
                c.truth += u64::from(is_t);
                c.pred += u64::from(is_p);
            }
            c
        })
        .collect()
}

/// sklearn's `_prf_divide`: `num / den`, or the zero-division value where `den` is 0.
fn divide(num: f64, den: f64, zero_division: ZeroDivision) -> f64 {
    if den == 0.0 {
        zero_division.value()
    } else {
        num / den
    }
}

/// Precision, recall and F-beta per entry of `counts`, as sklearn computes them:
/// F = (1 + β²)·tp / (β²·true + pred).
fn scores(counts: &[Counts], beta: f64, zd: ZeroDivision) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let beta2 = beta * beta;
    let mut p = Vec::with_capacity(counts.len());
    let mut r = Vec::with_capacity(counts.len());
    let mut f = Vec::with_capacity(counts.len());
    for c in counts {
        let precision = divide(c.tp as f64, c.pred as f64, zd);
        let recall = divide(c.tp as f64, c.truth as f64, zd);
        let fbeta = if beta.is_infinite() {
            recall
        } else if beta == 0.0 {
            precision
        } else {
            divide(
                (1.0 + beta2) * c.tp as f64,
                beta2 * c.truth as f64 + c.pred as f64,
                zd,
            )
        };
        p.push(precision);
        r.push(recall);
        f.push(fbeta);
    }
    (p, r, f)
}

/// sklearn's `_nanaverage`: the (weighted) mean of the non-NaN values; NaN if there are none;
/// the plain mean if the weights of the non-NaN values sum to zero.
fn nan_average(values: &[f64], weights: Option<&[f64]>) -> f64 {
    let kept: Vec<(f64, f64)> = values
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_nan())
        .map(|(i, &v)| (v, weights.map_or(1.0, |w| w[i])))
        .collect();
    if kept.is_empty() {
        return f64::NAN;
    }
    let weight_sum: f64 = kept.iter().map(|(_, w)| w).sum();
    if weight_sum == 0.0 {
        return kept.iter().map(|(v, _)| v).sum::<f64>() / kept.len() as f64;
    }
    kept.iter().map(|(v, w)| v * w).sum::<f64>() / weight_sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_input_is_an_error() {
        let opts = PrfOptions::default();
        assert!(accuracy_score(&[1, 2], &[1]).is_err());
        assert!(accuracy_score::<i32>(&[], &[]).is_err());
        assert!(precision_recall_fscore_support(
            &[0, 1, 2],
            &[0, 1, 1],
            &Average::Binary { pos_label: 1 },
            &opts
        )
        .is_err());
        assert!(precision_recall_fscore_support(
            &[0, 2],
            &[0, 2],
            &Average::Binary { pos_label: 1 },
            &opts
        )
        .is_err());
        let bad_beta = PrfOptions {
            beta: -1.0,
            ..PrfOptions::default()
        };
        assert!(
            precision_recall_fscore_support(&[0, 1], &[0, 1], &Average::Macro, &bad_beta).is_err()
        );
        assert!(confusion_matrix(&[0, 1], &[0, 1], Some(&[])).is_err());
        assert!(confusion_matrix(&[0, 1], &[0, 1], Some(&[5])).is_err());
    }

    #[test]
    fn binary_with_one_label_present_scores_pos_label() {
        // sklearn: precision_recall_fscore_support([0, 0], [0, 0], average="binary") -> 0, 0, 0.
        let s = precision_recall_fscore_support(
            &[0, 0],
            &[0, 0],
            &Average::Binary { pos_label: 1 },
            &PrfOptions::default(),
        )
        .unwrap();
        assert_eq!((s.precision, s.recall, s.fbeta), (0.0, 0.0, 0.0));
    }
}
