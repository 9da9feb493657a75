//! Evaluation metrics, each equal to the Python library everyone reports with:
//!
//! - [`bleu`]: sacrebleu's `corpus_bleu` / `sentence_bleu` (tokenizer 13a, `exp` smoothing,
//!   reference streams with missing entries),
//! - [`rouge`]: rouge-score's `RougeScorer` (rouge1..9, rougeL, rougeLsum, its tokenizer and
//!   nltk's Porter stemmer, [`porter`]),
//! - [`classification`]: scikit-learn's `accuracy_score`, `precision_recall_fscore_support`
//!   (micro, macro, weighted, binary, per class; `zero_division`) and `confusion_matrix`,
//! - [`seqeval`]: seqeval's entity-level scores over IOB tag sequences, in its default
//!   (conlleval-like) mode and its strict mode with a scheme.
//!
//! Names follow the Python libraries'. Bad input (different lengths, empty input where the
//! library raises, unknown names) gives a [`MetricError`], never a panic.

pub mod bleu;
pub mod classification;
pub mod porter;
pub mod rouge;
pub mod seqeval;

pub use bleu::{corpus_bleu, sentence_bleu, BleuOptions, BleuScore, BleuTokenizer, SmoothMethod};
pub use porter::{PorterMode, PorterStemmer};
pub use rouge::{RougeScore, RougeScorer, RougeScores, RougeType};

/// What a metric refuses, with the argument at fault named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricError {
    #[error("invalid `{param}`: {msg}")]
    InvalidArgument { param: &'static str, msg: String },
}

impl MetricError {
    pub(crate) fn invalid(param: &'static str, msg: impl Into<String>) -> Self {
        MetricError::InvalidArgument {
            param,
            msg: msg.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, MetricError>;

/// The value a score takes when its denominator is zero (scikit-learn's and seqeval's
/// `zero_division`; their default "warn" behaves as [`ZeroDivision::Zero`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub enum ZeroDivision {
    #[default]
    Zero,
    One,
    /// NaN, which scikit-learn's averages then skip. seqeval does not accept it.
    Nan,
}

impl ZeroDivision {
    pub fn value(self) -> f64 {
        match self {
            ZeroDivision::Zero => 0.0,
            ZeroDivision::One => 1.0,
            ZeroDivision::Nan => f64::NAN,
        }
    }
}

/// Errors unless the two lengths are equal.
pub(crate) fn check_same_len(
    param: &'static str,
    what: &str,
    len_a: usize,
    len_b: usize,
) -> Result<()> {
    if len_a != len_b {
        return Err(MetricError::invalid(
            param,
            format!("{what} have different lengths: {len_a} and {len_b}"),
        ));
    }
    Ok(())
}

/// Errors unless beta is a number >= 0 (infinity allowed: F is then the recall).
pub(crate) fn check_beta(beta: f64) -> Result<()> {
    if beta.is_nan() || beta < 0.0 {
        return Err(MetricError::invalid(
            "beta",
            format!("must be >= 0, got {beta}"),
        ));
    }
    Ok(())
}
